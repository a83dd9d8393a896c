"""Decoding images ahead of the network in background threads, bounded by bytes, not by count.

A count of images ahead is a poor bound: a folder of large images holds many times the memory of a
folder of small ones. Here the number of images in flight follows the mean size of what the
decoder returned so far, so about ``ahead_bytes`` of decoded views wait at most.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from .data import ImageError

DECODE_AHEAD_BYTES = 32 << 20

Decoded = tuple[list[np.ndarray], tuple[int, int]]


def decode_ahead(paths: Sequence[Path], read: Callable[[Path], Decoded], workers: int = 2,
                 ahead_bytes: int = DECODE_AHEAD_BYTES
                 ) -> Iterator[tuple[Path, list[np.ndarray] | ImageError, tuple[int, int] | None]]:
    """(path, views, image size) for each path in order, ``read`` running in ``workers`` threads;
    an image that cannot be read gives (path, its ImageError, None)."""
    workers = max(1, workers)
    todo = iter(paths)
    in_flight: deque = deque()
    decoded_bytes, decoded_count = 0, 0

    def submit(pool: ThreadPoolExecutor) -> None:
        mean = decoded_bytes / decoded_count if decoded_count else 0
        while len(in_flight) < workers or (mean and len(in_flight) * mean < ahead_bytes):
            path = next(todo, None)
            if path is None:
                return
            in_flight.append((path, pool.submit(_read_one, read, path)))

    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="decode")
    try:
        submit(pool)
        while in_flight:
            path, future = in_flight.popleft()
            views, size = future.result()
            if not isinstance(views, ImageError):
                decoded_bytes += sum(v.nbytes for v in views)
                decoded_count += 1
            submit(pool)
            yield path, views, size
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _read_one(read: Callable[[Path], Decoded], path: Path):
    try:
        return read(path)
    except ImageError as e:
        return e, None
    except MemoryError:
        return ImageError(f"{path}: not enough memory to decode it"), None
