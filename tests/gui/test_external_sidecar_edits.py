"""Sidecars another program changes while the folder is open are read again and shown (issue 29.2)."""

import os
import time

from conftest import open_folder

from mlcnn_core import sidecars


def test_a_sidecar_changed_by_another_program_is_shown(qtbot, window, image_folder):
    first = sorted(p for p in image_folder.iterdir() if p.suffix != ".txt")[0]
    txt = sidecars.stem_txt_path(first)
    txt.write_text("office\n")
    open_folder(qtbot, window, image_folder)
    image_id = window.library.image_id(first.name)
    assert [t.tag for t in window.library.tags(image_id)] == ["office"]
    changes = []
    window.library_thread.worker.externalChanges.connect(changes.append)

    txt.write_text("EXTERNAL-EDIT, office\n")
    later = time.time() + 2  # a new mtime even on a file system with coarse timestamps
    os.utime(txt, (later, later))
    qtbot.waitUntil(lambda: "changed by another program" in window.statusBar().currentMessage(), timeout=10_000)

    assert [r.id for r in changes[-1].records] == [image_id]
    assert {t.tag for t in window.library.tags(image_id)} == {"office", "EXTERNAL-EDIT"}
    assert window.gallery.proxy._tags[image_id] == {"office", "EXTERNAL-EDIT"}
