"""Tag all on 2,000 images under a low open-file limit: every image tagged, descriptors flat."""

import os
import resource

from conftest import load_model, make_images, open_folder

IMAGES = 2000
FD_LIMIT = 256


def open_descriptors() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_tag_all_on_2000_images_under_a_low_fd_limit(qtbot, window, tmp_path, tiny_model_path):
    folder = tmp_path / "two-thousand"
    make_images(folder, IMAGES, size=32)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(FD_LIMIT, hard), hard))
    try:
        open_folder(qtbot, window, folder, timeout=60_000)
        load_model(qtbot, window, tiny_model_path)
        counts: list[int] = []
        window.predictor.worker.progress.connect(lambda done, total, _: counts.append(open_descriptors()))
        with qtbot.waitSignal(window.batchFinished, timeout=300_000) as finished:
            assert window.tag_all() == IMAGES
        assert finished.args == [IMAGES, IMAGES, False]
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    library = window.library
    assert sum(r.status != "untagged" for r in library.images()) == IMAGES
    assert library.connection_count() <= 4  # the GUI thread, the folder worker, the predictor worker
    early, late = max(counts[:100]), max(counts[-100:])
    print(f"\nopen descriptors after 100 images: {early}, after {IMAGES}: {late}")
    assert late <= early + 5
