"""``mlcnn tag`` and the app's Tag all store the same confidences in a folder's library, so the tag
panel's bars and ``--min-confidence`` mean the same whoever tagged."""

import pytest
from conftest import load_model, make_images, open_folder

from mlcnn_core.cli import EXIT_OK, main
from mlcnn_core.library import Library
from mlcnn_core.modelfile import read_card


def _stored(library: Library) -> dict[str, dict[str, float]]:
    return {r.path: library.prediction(r.id).scores for r in library.images()}


def test_the_cli_and_the_app_store_the_same_confidences(qtbot, window, tmp_path, tiny_model_path):
    assert read_card(tiny_model_path)["prediction"]["rescore"] is None  # scores are summed maps, not probabilities
    by_app, by_cli = tmp_path / "app", tmp_path / "cli"
    make_images(by_app, 6)
    make_images(by_cli, 6)

    open_folder(qtbot, window, by_app)
    load_model(qtbot, window, tiny_model_path)
    with qtbot.waitSignal(window.batchFinished, timeout=120_000):
        assert window.tag_all() == 6
    app_scores = _stored(window.library)

    assert main(["tag", str(by_cli), "--model", str(tiny_model_path)]) == EXIT_OK
    library = Library.open(by_cli)
    try:
        cli_scores = _stored(library)
    finally:
        library.close()

    assert cli_scores.keys() == app_scores.keys() and len(cli_scores) == 6
    for path, scores in cli_scores.items():
        assert scores.keys() == app_scores[path].keys(), path
        assert all(0.0 <= v <= 1.0 for v in scores.values()), (path, scores)
        assert sum(scores.values()) == pytest.approx(1.0, abs=1e-4)  # each label's share of the evidence
        for label, value in scores.items():
            assert value == pytest.approx(app_scores[path][label], abs=1e-4), (path, label)


def test_a_library_filled_with_raw_scores_shows_confidences_from_0_to_1(qtbot, window, tmp_path):
    """Before it stored the app's confidences, ``mlcnn tag`` stored the core's summed maps: the tag
    panel read "43.90" beside a full bar until the image was tagged again."""
    from tagger_app.models.tag_models import ConfidenceRole

    folder = tmp_path / "old"
    make_images(folder, 1)
    library = Library.open(folder)
    library.scan()
    (record,) = library.images()
    library.store_prediction(record.id, ["cat", "sky"], {"cat": 43.9, "sky": 14.6, "dog": 2.5})
    library.set_tag(record.id, "cat", "confirmed")
    library.conn.execute("DELETE FROM meta WHERE key = 'confidences'")   # as the old CLI left it
    library.close()

    open_folder(qtbot, window, folder)
    window.gallery.select_row(0)
    qtbot.waitUntil(lambda: window.tag_panel.model.rowCount() == 2, timeout=10_000)
    model = window.tag_panel.model
    shown = {model.index(row, 0).data(): model.index(row, 1).data(ConfidenceRole) for row in range(2)}
    assert shown == pytest.approx({"cat": 43.9 / 61, "sky": 14.6 / 61})   # shares of the evidence
