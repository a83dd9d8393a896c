"""How torch's OpenMP threads wait for work.

By default libgomp (the OpenMP runtime of torch's Linux and Windows CPU builds) has each idle thread
spin for up to 300,000 iterations after every parallel region, so that the next operator starts a
little sooner. Beside other busy threads, that spinning takes the cores they need: the decoding
threads of the prediction pipeline, the app's GUI thread, another process. On a shared machine the
spinning threads are preempted in the middle of a region and every operator waits on them
(BENCHMARKS.md, "Speed on real folders"). Passive waiting puts idle threads to sleep at once.
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping


def wait_passively(environ: MutableMapping[str, str] = os.environ) -> None:
    """Make torch's OpenMP threads sleep when idle: in this process (before torch is first imported
    in it: libgomp reads the setting when it loads), or in ``environ``, the environment of a process
    to start. An ``OMP_WAIT_POLICY`` already set is kept."""
    environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
