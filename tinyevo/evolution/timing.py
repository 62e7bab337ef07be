"""Where a run's time goes: wall seconds per named phase, kept per thread, read and reset.

Code that does a whole piece of work (one candidate's training pass, one validation, one
checkpoint) wraps it in ``with phase(name):``; counts (training samples) go in with
:func:`count`. :func:`take` reads the totals and starts them again at zero; :func:`merge`
adds totals taken elsewhere (a worker process's, sent back with its result). Each thread has
its own totals, so the threads of a worker pool and the thread that runs the search do not
mix their figures. The cost is a clock read and a dict update per phase: time whole passes
with it, never single array operations.

    >>> with phase("train"):
    ...     count("train_samples", 64)
    >>> sorted(take())
    ['train', 'train_samples']
    >>> take()
    {}

``tinyevo.fit`` reports the totals of each generation in its progress events (docs/fit.md).
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator, Mapping

__all__ = ["phase", "count", "merge", "take"]

_LOCAL = threading.local()


@contextlib.contextmanager
def phase(name: str) -> Iterator[None]:
    """Add the wall seconds the block takes to the phase ``name`` (also when it raises)."""
    t0 = time.perf_counter()
    try:
        yield
    finally:
        count(name, time.perf_counter() - t0)


def count(name: str, amount: float) -> None:
    """Add ``amount`` to the total ``name``."""
    totals = _totals()
    totals[name] = totals.get(name, 0) + amount


def merge(totals: Mapping[str, float]) -> None:
    """Add ``totals`` (what :func:`take` gave, here or in another process) to this thread's."""
    for name, amount in totals.items():
        count(name, amount)


def take() -> dict[str, float]:
    """This thread's totals since the last take, which start again at zero."""
    totals = _totals()
    _LOCAL.totals = {}
    return totals


def _totals() -> dict[str, float]:
    totals = getattr(_LOCAL, "totals", None)
    if totals is None:
        totals = _LOCAL.totals = {}
    return totals
