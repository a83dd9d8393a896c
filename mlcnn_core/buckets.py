"""Shape buckets: images of many sizes through the test form in a few shapes, with the same maps.

A CPU convolution library builds and caches kernels per input shape, so a folder where every image
has its own size pays that cost on every image, never shares a batch, and fills the cache with
shapes it will not see again. Here each view (an image resized to a pass's short side, which it
keeps) is padded at its bottom or right to its *bucket*: its long side rounded up to a multiple of
``step`` (twice the network's stride by default), so a folder's views fall into a few dozen shapes
and views of one bucket can share a batch. On images whose sides are drawn independently in
256–1200 px, at the starter's two passes, a step of 64 px gives 60 buckets per 1,000 images for
8 % more pixels (32 px: 110 buckets, 5 %; 128 px: 32 buckets, 16 %).

Padding must not change the result. Before every convolution the positions outside each image's
own extent at that depth are set to zero, which is exactly what that convolution's zero padding
gives the image on its own; max pooling (no padding, floor mode) never reaches past an image's
extent for the outputs that image has. So the top-left ``h × w`` of each padded map is the map of
the image alone, up to the rounding of a differently blocked kernel.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


def bucket_shape(height: int, width: int, step: int) -> tuple[int, int]:
    """The padded (height, width) of a view: the shorter side kept, the longer rounded up to a
    multiple of ``step`` (a square keeps both)."""
    if height < width:
        return height, -(-width // step) * step
    if width < height:
        return -(-height // step) * step, width
    return height, width


def _out_size(n: int, kernel: int, stride: int, padding: int) -> int:
    return (n + 2 * padding - kernel) // stride + 1


def check_trunk(trunk: nn.Sequential) -> None:
    """Raise ``ValueError`` for a trunk whose layers :func:`masked_trunk` cannot run exactly."""
    for m in trunk:
        if isinstance(m, nn.Conv2d):
            if m.dilation != (1, 1) or m.groups != 1 or m.padding_mode != "zeros":
                raise ValueError(f"shape buckets do not support {m}")
        elif isinstance(m, nn.MaxPool2d):
            if m.padding not in (0, (0, 0)) or m.dilation not in (1, (1, 1)) or m.ceil_mode:
                raise ValueError(f"shape buckets do not support {m}")
        elif not isinstance(m, nn.ReLU):
            raise ValueError(f"shape buckets do not support {type(m).__name__} layers")


def _pair(v) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else tuple(v)


def _zero_outside(x: torch.Tensor, sizes: list[tuple[int, int]]) -> torch.Tensor:
    height, width = x.shape[-2:]
    for n, (h, w) in enumerate(sizes):
        if h < height:
            x[n, :, h:, :] = 0
        if w < width:
            x[n, :, :h, w:] = 0
    return x


def masked_trunk(trunk: nn.Sequential, x: torch.Tensor, sizes: list[tuple[int, int]]
                 ) -> tuple[torch.Tensor, list[tuple[int, int]]]:
    """Run ``trunk`` (convolutions, ReLUs, max pooling; see :func:`check_trunk`) on a padded batch
    ``x`` [N, C, H, W] whose image n occupies ``x[n, :, :h_n, :w_n]`` (``sizes``). Returns the
    feature map and each image's extent in it."""
    for m in trunk:
        if isinstance(m, nn.Conv2d):
            x = _zero_outside(x, sizes)
            (kh, kw), (sh, sw), (ph, pw) = _pair(m.kernel_size), _pair(m.stride), _pair(m.padding)
            sizes = [(_out_size(h, kh, sh, ph), _out_size(w, kw, sw, pw)) for h, w in sizes]
        elif isinstance(m, nn.MaxPool2d):
            (kh, kw), (sh, sw) = _pair(m.kernel_size), _pair(m.stride or m.kernel_size)
            sizes = [(_out_size(h, kh, sh, 0), _out_size(w, kw, sw, 0)) for h, w in sizes]
        x = m(x)
    return x, sizes


class BucketQueues:
    """Views waiting for a batch, one queue per (pass, bucket shape), oldest image first."""

    def __init__(self, step: int):
        self.step = step
        self._queues: dict[tuple, list[tuple[int, np.ndarray]]] = {}
        self.bytes = 0

    def __bool__(self) -> bool:
        return bool(self._queues)

    def add(self, pass_index: int, seq: int, view: np.ndarray) -> tuple:
        """Queue image ``seq``'s view for pass ``pass_index``; returns the key of its queue."""
        key = (pass_index, *bucket_shape(view.shape[0], view.shape[1], self.step))
        self._queues.setdefault(key, []).append((seq, view))
        self.bytes += view.nbytes
        return key

    def members(self, key: tuple) -> list[tuple[int, np.ndarray]]:
        return self._queues.get(key, [])

    def oldest(self) -> tuple:
        """The key of the queue whose first view belongs to the oldest image."""
        return min(self._queues, key=lambda k: self._queues[k][0][0])

    def take(self, key: tuple, count: int) -> list[tuple[int, np.ndarray]]:
        """Remove and return up to ``count`` views from the front of a queue."""
        queue = self._queues[key]
        taken, rest = queue[:count], queue[count:]
        if rest:
            self._queues[key] = rest
        else:
            del self._queues[key]
        self.bytes -= sum(view.nbytes for _, view in taken)
        return taken
