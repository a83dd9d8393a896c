"""Forward streams: batches of the network run side by side, each with its share of the CPU threads.

One batch at a time with every core on it spends much of each operator in synchronisation: the
convolutions of a batch split into as many parts as there are threads, and each operator ends when
the slowest part does (a thread that loses its core to the decoding threads, or to another program,
holds up all the others). Two batches at once, each on half the threads, synchronise half as much,
and whatever runs between two batches (padding, post-processing, a wait for the decoder) no longer
leaves the cores idle. On a 2-core CPU that is one thread per batch, which needs no synchronisation
at all.

CUDA runs one stream: the device is shared anyway, and its kernels are queued without the CPU's
threads.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager

import torch

MAX_STREAMS = 2


def default_streams(device: torch.device) -> int:
    """Two streams on a CPU with at least two threads for torch, else one."""
    return min(MAX_STREAMS, torch.get_num_threads()) if device.type == "cpu" else 1


class ForwardStreams:
    """Runs callables in ``streams`` threads, each calling torch with ``threads // streams`` CPU
    threads of its own; with one stream a callable runs at once in the caller's thread. The threads
    end when the object is collected."""

    def __init__(self, streams: int, threads: int | None = None):
        self.streams = max(1, streams)
        total = threads or torch.get_num_threads()
        self.threads_each = max(1, total // self.streams)
        self._pool: ThreadPoolExecutor | None = None

    def submit(self, fn: Callable, *args) -> Future:
        if self.streams == 1:
            future: Future = Future()
            try:
                future.set_result(fn(*args))
            except BaseException as e:  # noqa: BLE001 - handed to the caller, as a pool's future would
                future.set_exception(e)
            return future
        if self._pool is None:
            self._pool = self._start_pool()
        return self._pool.submit(fn, *args)

    def _start_pool(self) -> ThreadPoolExecutor:
        """The stream threads, each set to its thread count before its first batch. Under OpenMP the
        count is each thread's own, but a thread starts from the count last set anywhere in the
        process: once every stream thread has its own, the caller's is set again for later threads."""
        caller = torch.get_num_threads()
        ready = threading.Barrier(self.streams + 1)

        def set_threads() -> None:
            torch.get_num_threads()  # torch's own first-use setup of the thread, which would undo the next line
            torch.set_num_threads(self.threads_each)
            ready.wait()

        pool = ThreadPoolExecutor(self.streams, thread_name_prefix="forward")
        for _ in range(self.streams):
            pool.submit(set_threads)
        ready.wait()
        torch.set_num_threads(caller)
        return pool

    @contextmanager
    def caller_share(self):
        """The caller's own torch work (post-processing) on a stream's share of the threads while the
        streams run, so that the streams and the caller together ask for no more threads than torch has."""
        if self.streams == 1:
            yield
            return
        caller = torch.get_num_threads()
        torch.set_num_threads(self.threads_each)
        try:
            yield
        finally:
            torch.set_num_threads(caller)
