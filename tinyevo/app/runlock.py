"""One owner per run directory: ``fit`` holds ``mdir/.lock`` while it runs.

Only the process that owns a run directory writes checkpoints into it and recovers an
interrupted checkpoint swap; two ``fit`` calls on one directory would overwrite each other's
generations. The lock is a file created exclusively (``O_CREAT | O_EXCL``, atomic on local file
systems) holding the owner's host name, pid and process start time. A lock whose owner is gone
(killed with ``kill -9``, say) is stale, and the next ``fit`` takes it over; a live owner's lock
is an error that names the process. Readers (``tinyevo show``, :func:`load_checkpoint`) never
take or touch it.

    >>> with run_lock("runs/a"):        # doctest: +SKIP
    ...     ...                         # write checkpoints
"""

from __future__ import annotations

import json
import logging
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["run_lock", "LOCK_NAME", "RunLocked"]

LOCK_NAME = ".lock"
log = logging.getLogger("tinyevo")


class RunLocked(RuntimeError):
    """Another live process owns the run directory."""


@contextmanager
def run_lock(mdir: str | os.PathLike) -> Iterator[Path]:
    """Hold ``mdir/.lock`` for the ``with`` block; raise :class:`RunLocked` where another live
    process holds it. A stale lock (its process is gone) is taken over, with a log message."""
    path = Path(mdir) / LOCK_NAME
    mine = {"host": socket.gethostname(), "pid": os.getpid(), "started": _start_time(os.getpid())}
    for _ in range(3):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            owner = _read(path)
            if owner is not None and _alive(owner):
                raise RunLocked(
                    f"fit: {Path(mdir)} is in use by another run (pid {owner.get('pid')} on "
                    f"{owner.get('host')}, per {path}); wait for it to end or stop it, or use "
                    "another run directory. If that process is surely gone, delete the lock "
                    "file") from None
            log.warning("%s: taking over the lock of a run that is gone (%s)", mdir,
                        "unreadable" if owner is None else f"pid {owner.get('pid')}")
            try:
                path.unlink()
            except FileNotFoundError:
                pass
            continue
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(mine, f)
        break
    else:
        raise RunLocked(f"fit: could not take the lock {path}: other processes keep taking it")
    try:
        yield path
    finally:
        if _read(path) == mine:             # never remove a lock someone else took over
            path.unlink(missing_ok=True)


def _read(path: Path) -> dict | None:
    try:
        owner = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return None
    return owner if isinstance(owner, dict) else None


def _alive(owner: dict) -> bool:
    """Whether the lock's process still runs. A lock from another host counts as alive (it
    cannot be checked from here)."""
    if owner.get("host") != socket.gethostname():
        return True
    pid = owner.get("pid")
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass                                 # alive, another user's
    except OSError:
        return False
    started = owner.get("started")
    # The pid may have been reused by an unrelated process since: compare start times.
    return started is None or _start_time(pid) in (None, started)


def _start_time(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (Linux), or None elsewhere."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    try:
        return int(stat.rsplit(")", 1)[1].split()[19])
    except (IndexError, ValueError):
        return None
