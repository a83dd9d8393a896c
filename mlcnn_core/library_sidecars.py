"""Writing an image's tags from its library to its sidecars, the one way the GUI and `mlcnn tag` do it.

The files written are recorded in the library (:meth:`Library.mark_sidecar_written` with ``files``),
so the next import does not read the program's own output back as tags a person wrote: human and
machine tags stay told apart across runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from . import sidecars
from .library import Library

CONTENTS = ("human", "machine")


def write_library_sidecars(library: Library, image_id: int, *, content: str, formats: Sequence[str],
                           txt_path: Path | None, policy: sidecars.WritePolicy) -> list[Path]:
    """Write image ``image_id``'s tags to its sidecars in ``formats``; return the files written.

    ``content="human"``: the tags a person stands behind (a confirmed image: every tag except rejected
    and machine ones); ``"machine"``: the model's proposals as they stand, recorded as such.
    ``txt_path`` comes from :func:`sidecars.plan_txt_paths`. A failure is recorded in the library
    (the image's sidecar stays pending) and raised as :class:`sidecars.SidecarError`."""
    if content not in CONTENTS:
        raise ValueError(f"unknown sidecar content {content!r} (expected one of {CONTENTS})")
    tags = library.positive_tags(image_id) if content == "machine" else library.sidecar_tags(image_id)
    image = library.abspath(library.image(image_id).path)
    try:
        written = sidecars.write_image_sidecars(image, tags, formats=formats, txt_path=txt_path, policy=policy)
    except sidecars.SidecarError as exc:
        library.mark_sidecar_failed(image_id, str(exc))
        raise
    library.mark_sidecar_written(image_id, content, written)
    return written
