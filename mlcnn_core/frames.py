"""Frames on a byte stream: a JSON header and raw numpy buffers, nothing that runs code when read.

One frame is a 4-byte little-endian header length, the header (UTF-8 JSON object), then the bytes of
each array the header lists under ``"arrays"`` (``[{"dtype": "float32", "shape": [5, 7, 9]}, ...]``),
C-ordered, one after the other. Only plain numeric dtypes are accepted, so reading a frame never
unpickles anything: the prediction process (``predict_server.py``) and the app exchange bytes only.
"""

from __future__ import annotations

import json
import math
import struct
from typing import BinaryIO

import numpy as np

MAX_HEADER_BYTES = 16 * 1024 * 1024
MAX_ARRAY_BYTES = 2 * 1024 * 1024 * 1024  # all the arrays of one frame together
DTYPES = frozenset({"bool", "uint8", "int16", "int32", "int64", "float16", "float32", "float64"})
_LENGTH = struct.Struct("<I")


class FrameError(ValueError):
    """The stream ended or held something that is not a frame."""


def write_frame(stream: BinaryIO, header: dict, arrays: list[np.ndarray] = ()) -> None:
    arrays = [np.ascontiguousarray(a) for a in arrays]
    for array in arrays:
        if array.dtype.name not in DTYPES:
            raise FrameError(f"cannot send an array of {array.dtype}")
    body = dict(header, arrays=[{"dtype": a.dtype.name, "shape": list(a.shape)} for a in arrays])
    encoded = json.dumps(body, separators=(",", ":")).encode("utf-8")
    stream.write(_LENGTH.pack(len(encoded)) + encoded)
    for array in arrays:
        stream.write(array.reshape(-1).view(np.uint8))  # memoryview.cast refuses an empty array
    stream.flush()


def read_frame(stream: BinaryIO) -> tuple[dict, list[np.ndarray]] | None:
    """The next frame, or None where the stream ends cleanly between frames."""
    prefix = _read_exactly(stream, _LENGTH.size, allow_eof=True)
    if prefix is None:
        return None
    (length,) = _LENGTH.unpack(prefix)
    if length > MAX_HEADER_BYTES:
        raise FrameError(f"frame header of {length} bytes (at most {MAX_HEADER_BYTES})")
    try:
        header = json.loads(_read_exactly(stream, length).decode("utf-8"))
        specs = header.pop("arrays", [])
        shapes = [(s["dtype"], s["shape"]) for s in specs]
    except (ValueError, TypeError, KeyError, AttributeError, RecursionError) as exc:
        raise FrameError(f"bad frame header: {exc}") from exc
    if not isinstance(header, dict):
        raise FrameError("bad frame header: not a JSON object")
    sizes = [_array_bytes(dtype, shape) for dtype, shape in shapes]
    if sum(sizes) > MAX_ARRAY_BYTES:
        raise FrameError(f"arrays of {sum(sizes)} bytes in frame (at most {MAX_ARRAY_BYTES})")
    return header, [
        np.frombuffer(_read_into(stream, bytearray(size)), dtype=dtype).reshape(shape)
        for (dtype, shape), size in zip(shapes, sizes, strict=True)
    ]


def _array_bytes(dtype, shape) -> int:
    """The size an array spec declares, checked before anything is allocated for it."""
    if (not isinstance(dtype, str) or dtype not in DTYPES or not isinstance(shape, list)
            or not all(type(n) is int and n >= 0 for n in shape)):
        raise FrameError(f"bad array in frame: {dtype} {shape}")
    return math.prod(shape) * np.dtype(dtype).itemsize  # Python ints: a huge shape cannot wrap around


def _read_into(stream: BinaryIO, buffer: bytearray) -> bytearray:
    view, done = memoryview(buffer), 0
    while done < len(buffer):
        n = stream.readinto(view[done:])
        if not n:
            raise FrameError(f"stream ended {len(buffer) - done} bytes into a {len(buffer)}-byte array")
        done += n
    return buffer


def _read_exactly(stream: BinaryIO, size: int, allow_eof: bool = False) -> bytes | None:
    chunks, left = [], size
    while left:
        chunk = stream.read(left)
        if not chunk:
            if allow_eof and left == size:
                return None
            raise FrameError(f"stream ended {left} bytes into a {size}-byte read")
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)
