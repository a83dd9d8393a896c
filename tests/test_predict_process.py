"""The prediction process: frames, the server's answers, and the client against a real child."""

import io
import json
import os
import signal
import struct
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mlcnn_core.frames import FrameError, read_frame, write_frame
from mlcnn_core.modelfile import load_model, new_model, save_model
from mlcnn_core.predict import Predictor
from mlcnn_core.predict_client import ImageFailure, PredictionProcess, ProcessCrashed, RequestFailed
from mlcnn_core.predict_server import PredictionServer

LABELS = ["red", "green", "blue"]


@pytest.fixture(scope="module")
def model_path(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("model") / "tiny.safetensors"
    save_model(new_model("tiny", labels=LABELS, name="tiny"), path)
    return path


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> list[Path]:
    folder = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    paths = []
    for i, (w, h) in enumerate([(64, 48), (40, 90), (120, 64)]):
        path = folder / f"img{i}.png"
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    return paths


def frames_of(data: bytes) -> list[tuple[dict, list[np.ndarray]]]:
    stream, frames = io.BytesIO(data), []
    while (frame := read_frame(stream)) is not None:
        frames.append(frame)
    return frames


def test_frames_round_trip_arrays_exactly():
    maps = np.random.default_rng(0).random((3, 5, 7), dtype=np.float32)
    winner = np.arange(35, dtype=np.int32).reshape(5, 7)
    stream = io.BytesIO()
    write_frame(stream, {"event": "x", "n": 1}, [maps, winner[:, ::2]])
    write_frame(stream, {"event": "y"})
    (first, arrays), (second, none) = frames_of(stream.getvalue())
    assert first == {"event": "x", "n": 1} and second == {"event": "y"} and none == []
    assert np.array_equal(arrays[0], maps) and arrays[0].dtype == np.float32
    assert np.array_equal(arrays[1], winner[:, ::2])
    arrays[0][0, 0, 0] = 2.0  # the maps are the reader's own, not a view of a shared buffer


def test_frames_carry_empty_arrays_without_losing_their_place_in_the_stream():
    stream = io.BytesIO()
    write_frame(stream, {"event": "x"}, [np.zeros((0, 5), np.float32), np.ones((2, 3), bool)])
    write_frame(stream, {"event": "y"})
    (first, arrays), (second, _) = frames_of(stream.getvalue())
    assert [a.shape for a in arrays] == [(0, 5), (2, 3)] and arrays[1].all() and second == {"event": "y"}


def test_frames_refuse_what_is_not_plain_numbers():
    with pytest.raises(FrameError):
        write_frame(io.BytesIO(), {}, [np.array([object()])])
    header = json.dumps({"arrays": [{"dtype": "object", "shape": [1]}]}).encode()
    with pytest.raises(FrameError, match="bad array"):
        read_frame(io.BytesIO(struct.pack("<I", len(header)) + header + b"\0" * 8))
    with pytest.raises(FrameError, match="stream ended"):
        read_frame(io.BytesIO(struct.pack("<I", 100) + b"{}"))


def _frame(header: bytes, body: bytes = b"") -> io.BytesIO:
    return io.BytesIO(struct.pack("<I", len(header)) + header + body)


@pytest.mark.parametrize("specs", [
    [{"dtype": "float32", "shape": [2**31, 2**31, 4]}],  # 2**64 bytes: wraps to 0 in int64
    [{"dtype": "uint8", "shape": [2**30]}] * 3,  # each under the limit, together over it
    [{"dtype": "uint8", "shape": "12"}],  # a string is not a shape
    [{"dtype": "uint8", "shape": [1.5]}],
    [{"dtype": ["uint8"], "shape": [1]}],
])
def test_frames_refuse_array_specs_that_lie_before_allocating(specs):
    with pytest.raises(FrameError):
        read_frame(_frame(json.dumps({"arrays": specs}).encode(), b"\0" * 64))


def test_frames_refuse_a_header_nested_too_deep_to_decode():
    with pytest.raises(FrameError, match="bad frame header"):
        read_frame(_frame(b"[" * 100_000 + b"]" * 100_000))


def test_server_reports_a_failing_batch_after_the_results_it_has(model_path, images):
    out = io.BytesIO()
    server = PredictionServer(out)
    server.handle({"op": "predict", "jobs": [{"key": 0, "path": str(images[0])}]})
    server.handle({"op": "load", "path": str(model_path)})
    real = server.predictor.predict_files

    def fails_on_second(paths, **kwargs):
        for i, item in enumerate(real(paths, **kwargs)):
            if i == 1:
                raise RuntimeError("CUDA out of memory")
            yield item

    server.predictor.predict_files = fails_on_second
    server.handle({"op": "predict", "jobs": [{"key": 7, "path": str(p)} for p in images]})
    server.handle({"op": "frobnicate"})
    events = [(h["event"], h.get("message")) for h, _ in frames_of(out.getvalue())]
    assert events[0] == ("error", "no model is loaded")
    assert events[1][0] == "loaded"
    assert events[2][0] == "prediction"
    assert events[3] == ("error", "RuntimeError: CUDA out of memory")
    assert events[4] == ("error", "unknown request 'frobnicate'")


def test_child_predicts_what_the_model_predicts_in_process(model_path, images, tmp_path, monkeypatch):
    monkeypatch.chdir(model_path.parent)
    process = PredictionProcess()
    try:
        loaded = process.load(model_path.name)  # relative to the app's working folder
        assert loaded.labels == LABELS and loaded.hash
        missing = tmp_path / "missing.png"
        results = list(process.predict([(0, str(images[0])), (1, str(missing)), (2, str(images[2]))]))
    finally:
        process.close()
    assert [r.key for r in results] == [0, 1, 2]
    assert isinstance(results[1], ImageFailure) and "no such file" in results[1].message
    predictor = Predictor(load_model(model_path))
    for result, path in ((results[0], images[0]), (results[2], images[2])):
        (_, expected), = predictor.predict_files([path], batch_size=1, workers=1)
        assert result.labels == expected.labels
        assert result.label_names == expected.label_names
        # the child batches differently and leaves a core to the app: float sums may differ in the last bits
        assert np.allclose(result.maps, expected.maps, atol=1e-5)
        assert np.array_equal(result.winner, expected.winner)
        assert result.confidences == pytest.approx(expected.confidences, rel=1e-4)
        assert result.image_size == tuple(expected.image_size)


def test_a_killed_child_is_reported_and_the_next_request_starts_another(model_path, images):
    process = PredictionProcess()
    try:
        process.load(str(model_path))
        first = process.pid
        os.kill(first, signal.SIGKILL)
        with pytest.raises(ProcessCrashed, match="SIGKILL"):
            list(process.predict([(0, str(images[0]))]))
        results = list(process.predict([(0, str(images[0]))]))
        assert results[0].labels and process.pid not in (None, first)
        process.unload()
        assert process.pid is None
        with pytest.raises(RequestFailed, match="no model"):
            list(process.predict([(0, str(images[0]))]))
    finally:
        process.close()


def test_a_process_that_cannot_start_is_an_error_not_an_exception_of_the_os(model_path, monkeypatch, tmp_path):
    import mlcnn_core.predict_client as client

    monkeypatch.setattr(client, "server_command", lambda: [str(tmp_path / "no-such-python")])
    with pytest.raises(ProcessCrashed, match="cannot start the prediction process"):
        PredictionProcess().load(str(model_path))


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="reads the child's environment from /proc")
def test_the_prediction_process_makes_torch_threads_wait_passively(model_path, monkeypatch):
    """Spinning OpenMP threads would take the cores the app's GUI thread and the decoding threads need."""
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    process = PredictionProcess()
    try:
        process.load(str(model_path))
        environ = Path(f"/proc/{process.pid}/environ").read_bytes().split(b"\0")
        assert b"OMP_WAIT_POLICY=PASSIVE" in environ
    finally:
        process.close()


def test_a_model_file_changed_since_it_was_loaded_is_not_loaded_again_silently(model_path, images, tmp_path):
    path = tmp_path / "model.safetensors"
    path.write_bytes(model_path.read_bytes())
    process = PredictionProcess()
    try:
        process.load(str(path))
        save_model(new_model("tiny", labels=["sky", "sea"], name="another"), path)  # e.g. a training run's --out
        os.kill(process.pid, signal.SIGKILL)
        with pytest.raises(ProcessCrashed):
            list(process.predict([(0, str(images[0]))]))
        for _ in range(2):  # refused, and no process is started for it again
            with pytest.raises(RequestFailed, match="changed since it was loaded"):
                list(process.predict([(0, str(images[0]))]))
            assert process.pid is None
        assert process.load(str(path)).labels == ["sky", "sea"]  # opened again by the person: used
    finally:
        process.close()


class _CountingPopen:
    def __init__(self, real):
        self.real, self.started = real, []

    def __call__(self, *args, **kwargs):
        self.started.append(self.real(*args, **kwargs))
        return self.started[-1]


CRASHES_ON_PREDICT = ("import os, signal, mlcnn_core.predict_server as s; "
                      "s.PredictionServer._predict = lambda self, jobs: os.kill(os.getpid(), signal.SIGKILL); s.main()")


def test_a_process_that_keeps_crashing_is_not_started_again_and_again(model_path, images, monkeypatch):
    import mlcnn_core.predict_client as client

    monkeypatch.setattr(client, "server_command", lambda: [sys.executable, "-c", CRASHES_ON_PREDICT])
    popen = _CountingPopen(subprocess.Popen)
    monkeypatch.setattr(client.subprocess, "Popen", popen)
    process = PredictionProcess()
    try:
        process.load(str(model_path))
        for _ in range(client.MAX_CRASHES_IN_A_ROW):
            with pytest.raises(ProcessCrashed, match="SIGKILL"):
                list(process.predict([(0, str(images[0]))]))
        with pytest.raises(RequestFailed, match=f"stopped {client.MAX_CRASHES_IN_A_ROW} times in a row"):
            list(process.predict([(0, str(images[0]))]))
        assert len(popen.started) == client.MAX_CRASHES_IN_A_ROW and not process.restarts
        process.load(str(model_path))  # the person opens it again: it is tried again
        assert process.restarts and len(popen.started) == client.MAX_CRASHES_IN_A_ROW + 1
    finally:
        process.close()


DIES_AT_ONCE = "import sys; sys.stderr.write('noise\\n' * 50_000 + 'ValueError: the reason\\n'); sys.exit(3)"


def test_a_process_that_dies_is_reported_with_the_last_line_it_wrote(model_path, monkeypatch):
    import mlcnn_core.predict_client as client

    monkeypatch.setattr(client, "server_command", lambda: [sys.executable, "-c", DIES_AT_ONCE])
    with pytest.raises(ProcessCrashed, match=r"\(exit code 3\): ValueError: the reason$"):
        PredictionProcess().load(str(model_path))


class _GoneStream:
    def write(self, text):
        raise OSError(5, "Input/output error")

    def flush(self):
        raise OSError(5, "Input/output error")


NOISY_START = "import sys, mlcnn_core.predict_server as s; sys.stderr.write('warning\\n' * 100_000); s.main()"


def test_a_childs_stderr_is_emptied_when_the_apps_own_is_gone(model_path, monkeypatch):
    import mlcnn_core.predict_client as client

    monkeypatch.setattr(client, "server_command", lambda: [sys.executable, "-c", NOISY_START])
    monkeypatch.setattr(sys, "stderr", _GoneStream())  # e.g. the terminal the app started from was closed
    process, loaded = PredictionProcess(), []
    loader = threading.Thread(target=lambda: loaded.append(process.load(str(model_path))), daemon=True)
    loader.start()
    loader.join(120)
    process.close()
    assert loaded, "the child blocked on a full stderr pipe"


def test_a_process_started_while_the_client_closes_is_stopped(model_path, monkeypatch):
    import mlcnn_core.predict_client as client

    process = PredictionProcess()
    popen = _CountingPopen(subprocess.Popen)

    def close_meanwhile(*args, **kwargs):
        child = popen(*args, **kwargs)
        process.close()  # the GUI thread quits the app while the worker thread starts the child
        return child

    monkeypatch.setattr(client.subprocess, "Popen", close_meanwhile)
    with pytest.raises(RequestFailed, match="closed"):
        process.load(str(model_path))
    (child,) = popen.started
    assert child.returncode is not None  # stopped and reaped, not left loading a model


PRINTS_WHILE_LOADING = (
    "import os, mlcnn_core.predict_server as s; load = s.PredictionServer._load\n"
    "def noisy(self, path):\n"
    "    print('a library says hello'); os.write(1, b'a C library too\\n'); load(self, path)\n"
    "s.PredictionServer._load = noisy; s.main()"
)


def test_what_the_child_prints_to_stdout_does_not_corrupt_its_answers(model_path, monkeypatch):
    import mlcnn_core.predict_client as client

    monkeypatch.setattr(client, "server_command", lambda: [sys.executable, "-c", PRINTS_WHILE_LOADING])
    process = PredictionProcess()
    try:
        assert process.load(str(model_path)).labels == LABELS
    finally:
        process.close()


def test_warnings_about_a_model_file_reach_the_app_not_the_crash_report(model_path, images, tmp_path):
    """A card key this version does not know is a warning for the person, in the loaded model; on the
    process's stderr it would become the last line a later crash is reported with."""
    from test_modelfile import rewrite_card

    path = rewrite_card(model_path, tmp_path / "newer.safetensors", lambda card, _: card.update(colour_space="oklab"))
    process = PredictionProcess()
    try:
        loaded = process.load(str(path))
        assert len(loaded.warnings) == 1 and "colour_space" in loaded.warnings[0]
        os.kill(process.pid, signal.SIGKILL)
        with pytest.raises(ProcessCrashed) as crash:
            list(process.predict([(0, str(images[0]))]))
        assert "colour_space" not in str(crash.value)
    finally:
        process.close()
