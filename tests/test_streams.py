"""Forward streams (streams.py): batches run side by side, each with its share of torch's threads,
with the predictions one stream gives."""

import threading

import numpy as np
import pytest
import torch
from shapes import noise_images

from mlcnn_core.modelfile import new_model
from mlcnn_core.predict import PredictConfig, Predictor
from mlcnn_core.streams import ForwardStreams, default_streams

LABELS = ["a", "b", "c", "d"]


@pytest.fixture
def four_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(4)
    yield
    torch.set_num_threads(before)


def _in_new_thread(fn):
    out = []
    thread = threading.Thread(target=lambda: out.append(fn()))
    thread.start()
    thread.join()
    return out[0]


def test_each_stream_gets_its_share_of_threads_and_the_caller_keeps_its_own(four_threads):
    streams = ForwardStreams(2)
    seen = {streams.submit(lambda: (threading.current_thread().name, torch.get_num_threads())).result()
            for _ in range(8)}
    assert {threads for _, threads in seen} == {2}
    assert all(name.startswith("forward") for name, _ in seen)
    assert torch.get_num_threads() == 4
    assert _in_new_thread(torch.get_num_threads) == 4  # threads started later are not cut to a stream's share


def test_one_stream_runs_in_the_callers_thread_and_hands_errors_back():
    streams = ForwardStreams(1)
    assert streams.submit(threading.get_ident).result() == threading.get_ident()
    with pytest.raises(ZeroDivisionError):
        streams.submit(lambda: 1 / 0).result()
    assert default_streams(torch.device("cuda")) == 1


def test_two_streams_predict_a_folder_as_one_does(tmp_path, four_threads):
    torch.manual_seed(0)
    model = new_model("tiny", labels=LABELS)
    model.card["prediction"] = PredictConfig(short_side=96).to_dict()
    paths = noise_images(tmp_path, 30, seed=3, sides=(60, 260))
    one = Predictor(model, device="cpu", bf16=False, streams=1)
    two = Predictor(model, device="cpu", bf16=False, streams=2)
    ran_in: set[str] = set()
    two.trunk[0].register_forward_pre_hook(lambda *_: ran_in.add(threading.current_thread().name))

    want = list(one.predict_files(paths, batch_size=3))
    got = list(two.predict_files(paths, batch_size=3))

    assert [p for p, _ in got] == paths
    assert ran_in and all(name.startswith("forward") for name in ran_in)
    for (_, a), (_, b) in zip(want, got, strict=True):
        assert a.labels == b.labels and a.peaks == b.peaks
        np.testing.assert_allclose(a.scores, b.scores, atol=1e-5)
        np.testing.assert_allclose(a.maps, b.maps, atol=1e-5)
