"""Launching with a folder: the folder is listed and its first thumbnails shown before the model loads."""

from conftest import make_images

from tagger_app.app import parse_args, start


def test_launch_with_a_folder_loads_the_model_after_the_first_screen(qtbot, tmp_path, tiny_model_path):
    folder = tmp_path / "images"
    make_images(folder, 12, size=300)
    events: list[str] = []
    window = start(parse_args([str(folder), "--model", str(tiny_model_path), "--settings", str(tmp_path / "s.ini")]))
    qtbot.addWidget(window)
    window.error_dialogs = False
    try:
        window.predictor.loadRequested.connect(lambda _path: events.append("load requested"))
        window.folderOpened.connect(lambda _root: events.append("listed"))
        window.thumbnails.ready.connect(lambda _key: events.append("thumbnail"))
        with qtbot.waitSignal(window.modelReady, timeout=60_000):
            pass
        assert events.index("listed") < events.index("thumbnail") < events.index("load requested")
        assert window.model.path == str(tiny_model_path)
    finally:
        window.shutdown()


def test_launch_without_a_folder_loads_the_model_at_once(qtbot, tmp_path, tiny_model_path):
    window = start(parse_args(["--model", str(tiny_model_path), "--settings", str(tmp_path / "s.ini")]))
    qtbot.addWidget(window)
    try:
        with qtbot.waitSignal(window.modelReady, timeout=60_000):
            pass
    finally:
        window.shutdown()


def test_a_folder_that_cannot_be_opened_still_gets_the_model(qtbot, tmp_path, tiny_model_path):
    missing = tmp_path / "missing"
    window = start(parse_args([str(missing), "--model", str(tiny_model_path), "--settings", str(tmp_path / "s.ini")]))
    qtbot.addWidget(window)
    window.error_dialogs = False
    try:
        with qtbot.waitSignal(window.modelReady, timeout=60_000):
            pass
    finally:
        window.shutdown()
