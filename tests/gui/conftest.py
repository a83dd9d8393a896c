import os
import tempfile

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
# the main window keeps thumbnails in the user's cache folder: not the real one in tests
os.environ["XDG_CACHE_HOME"] = tempfile.mkdtemp(prefix="tagger-tests-cache-")

from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from PIL import Image  # noqa: E402

LABELS = ["red", "green", "blue", "stripes", "dots"]
FORMATS = [".png", ".jpg", ".webp", ".bmp", ".gif", ".tif"]


def make_images(folder: Path, count: int, size: int = 64, seed: int = 0) -> list[Path]:
    """Small synthetic images: coloured backgrounds with stripes or dots, in every supported format."""
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(count):
        rgb = np.zeros((size, size, 3), np.uint8)
        rgb[...] = rng.integers(0, 256, 3, dtype=np.uint8)
        if i % 2:
            rgb[:, ::8] = 255 - rgb[:, ::8]
        else:
            rgb[::8, ::8] = 0
        ext = FORMATS[i % len(FORMATS)]
        sub = folder / "sub" if i % 5 == 4 else folder
        sub.mkdir(parents=True, exist_ok=True)
        path = sub / f"img{i:04d}{ext}"
        Image.fromarray(rgb).save(path)
        paths.append(path)
    return paths


@pytest.fixture(scope="session")
def tiny_model_path(tmp_path_factory) -> Path:
    from mlcnn_core.modelfile import new_model, save_model

    path = tmp_path_factory.mktemp("model") / "tiny.safetensors"
    import torch

    torch.manual_seed(0)
    save_model(new_model("tiny", labels=LABELS, name="tiny test model"), path)
    return path


@pytest.fixture
def image_folder(tmp_path) -> Path:
    folder = tmp_path / "images"
    make_images(folder, 10)
    return folder


@pytest.fixture
def window(qtbot, tmp_path):
    from tagger_app.main_window import MainWindow
    from tagger_app.settings import AppSettings

    win = MainWindow(AppSettings(tmp_path / "settings.ini"), load_default_model=False)
    win.error_dialogs = False
    qtbot.addWidget(win)
    win.show()
    yield win
    win.shutdown()


def open_folder(qtbot, window, folder, timeout=20_000):
    with qtbot.waitSignal(window.folderOpened, timeout=timeout):
        window.open_folder(folder)


def load_model(qtbot, window, path, timeout=60_000):
    """Load a model and wait for it; a refused model fails at once with the worker's message."""
    failures: list[str] = []
    window.modelFailed.connect(failures.append)
    window.load_model(path)
    qtbot.waitUntil(
        lambda: bool(failures) or (window.model is not None and window.model.path == str(path)), timeout=timeout
    )
    window.modelFailed.disconnect(failures.append)
    assert not failures, failures[0]


def model_summary(path, labels: list[str] | None = None):
    """What the predictor worker reports once it has loaded ``path`` (its card's labels unless given)."""
    from mlcnn_core.modelfile import read_card
    from tagger_app.workers.predictor_worker import ModelSummary

    card = read_card(path) if labels is None else {"labels": labels}
    return ModelSummary(name=Path(path).stem, path=str(path), labels=list(card["labels"]), card=card, device="cpu",
                        hash="")


def record_calls(monkeypatch, cls) -> list[tuple[str, int]]:
    """Wrap every public method of ``cls`` (classmethods too) to note its name and the calling thread."""
    import inspect
    import threading

    calls: list[tuple[str, int]] = []
    for name, attr in list(vars(cls).items()):
        if name.startswith("_"):
            continue
        if isinstance(attr, classmethod):
            def wrapped(klass, *args, _f=attr.__func__, _name=name, **kwargs):
                calls.append((_name, threading.get_ident()))
                return _f(klass, *args, **kwargs)

            monkeypatch.setattr(cls, name, classmethod(wrapped))
        elif inspect.isfunction(attr):
            def wrapped(self, *args, _f=attr, _name=name, **kwargs):
                calls.append((_name, threading.get_ident()))
                return _f(self, *args, **kwargs)

            monkeypatch.setattr(cls, name, wrapped)
    return calls


def on_this_thread(calls: list[tuple[str, int]]) -> list[str]:
    """The names of the recorded calls made on the calling (GUI) thread, but ``abspath`` (no disk)."""
    import threading

    return [name for name, thread in calls if thread == threading.get_ident() and name != "abspath"]


def tags_read(qtbot, window, timeout=10_000) -> None:
    """Wait until the tag panel shows the current image's tags, read by the library worker."""
    qtbot.waitUntil(lambda: not window.tag_read_pending, timeout=timeout)


def stored(qtbot, window, timeout=10_000) -> None:
    """Wait until the library worker has stored every edit (and undo) the window sent it."""
    qtbot.waitUntil(lambda: window.edits_pending == 0, timeout=timeout)
