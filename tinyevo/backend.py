"""The one place that knows about CuPy: array-module switch, dtype and the library's generator.

Generic code asks for the module of its data (``xp = get_array_module(x)``) or the current one
(``xp = current()``) and never names numpy or cupy itself.

    >>> import tinyevo.backend as B
    >>> B.use("numpy"); B.current().__name__
    'numpy'
"""

from __future__ import annotations

import os
import sys
from types import ModuleType
from typing import Any

# OpenBLAS's idle worker threads busy-wait for ~2**28 cycles (~0.1 s) after every BLAS call before
# they sleep. On a few cores they then hold the cores that tinyevo's own NumPy threads (im2col,
# BatchNorm, pooling) need: the reference training step measured 52.7 ms with the default wait
# and 44.1 ms with the shortest (2**4 cycles) on 2 cores. OpenBLAS reads the setting once, when
# NumPy loads it, so this only takes effect where tinyevo is imported before NumPy (the
# ``tinyevo`` command, scripts that import tinyevo first); a value the user set is kept.
_NUMPY_FIRST = "numpy" in sys.modules
_USER_BLAS_WAIT = "OPENBLAS_THREAD_TIMEOUT" in os.environ
if os.environ.get("TINYEVO_BLAS_TUNING", "1").strip() not in ("0", "false", "no"):
    os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")

import numpy as np  # noqa: E402  (after the OpenBLAS setting above)

__all__ = [
    "use", "name", "current", "get_array_module", "to_device", "to_numpy", "is_gpu",
    "floatx", "set_floatx", "seed", "rng", "gpu_available", "tune_allocator",
    "set_num_threads", "num_threads", "parallel_chunks", "blas_wait_tuned",
]

_BACKENDS = ("numpy", "cupy")
_state: dict[str, Any] = {"name": "numpy", "xp": np, "floatx": np.float32}
_rng = np.random.default_rng()


def use(backend: str) -> ModuleType:
    """Select the array module for everything tinyevo creates from now on: "numpy" or "cupy"."""
    if backend not in _BACKENDS:
        raise ValueError(f"unknown backend {backend!r}: expected one of {_BACKENDS}")
    xp = np if backend == "numpy" else _import_cupy()
    _state["name"], _state["xp"] = backend, xp
    return xp


def name() -> str:
    """Name of the current backend ("numpy" or "cupy")."""
    return _state["name"]


def current() -> ModuleType:
    """The current array module (numpy or cupy)."""
    return _state["xp"]


def get_array_module(*arrays: Any) -> ModuleType:
    """numpy or cupy, whichever the given arrays live in (numpy for anything that is not cupy)."""
    for a in arrays:
        if _is_cupy_array(a):
            return _state["cupy"]
    return np


def is_gpu(x: Any) -> bool:
    """True when ``x`` is a CuPy array."""
    return _is_cupy_array(x)


def to_device(x: Any, dtype: Any = None) -> Any:
    """Move ``x`` to the current backend's device (a no-op where it already lives there)."""
    xp = current()
    if xp is np:
        return np.asarray(to_numpy(x), dtype=dtype)
    return xp.asarray(x, dtype=dtype)


def to_numpy(x: Any) -> np.ndarray:
    """Bring ``x`` back to host memory as a NumPy array."""
    if _is_cupy_array(x):
        return x.get()
    return np.asarray(x)


def floatx() -> Any:
    """The default floating dtype (float32 unless changed with :func:`set_floatx`)."""
    return _state["floatx"]


def set_floatx(dtype: Any) -> None:
    """Set the default floating dtype: float32 (default) or float64 (for gradient checks)."""
    dt = np.dtype(dtype)
    if dt not in (np.float32, np.float64):
        raise ValueError(f"floatx must be float32 or float64, got {dt}")
    _state["floatx"] = dt.type


def seed(n: int | None) -> None:
    """Reset the library's random generator; same seed, same run."""
    global _rng
    _rng = np.random.default_rng(n)


def rng(generator: np.random.Generator | None = None) -> np.random.Generator:
    """``generator`` if given, else the library generator that :func:`seed` resets.

    Random draws are made on the host with NumPy and moved to the device, so a seeded run draws
    the same numbers on both backends.
    """
    if generator is None:
        return _rng
    if not isinstance(generator, np.random.Generator):
        raise TypeError(f"rng must be a numpy.random.Generator, got {type(generator).__name__}; "
                        "make one with numpy.random.default_rng(seed)")
    return generator


def gpu_available() -> bool:
    """True when CuPy imports and sees at least one GPU; probes lazily, never at import."""
    try:
        _import_cupy()
    except RuntimeError:
        return False
    return True


def _import_cupy() -> ModuleType:
    if "cupy" in _state:
        return _state["cupy"]
    try:
        import cupy
    except ImportError as e:
        raise RuntimeError("the cupy backend needs CuPy: install it with `pip install "
                           "'tinyevo[gpu]'` (or the cupy-cudaXXx wheel matching your CUDA), "
                           "or use backend 'numpy'") from e
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as e:  # noqa: BLE001 - CUDA raises driver-specific errors
        raise RuntimeError(f"CuPy is installed but no usable GPU was found ({e}); "
                           "use backend 'numpy'") from e
    if count < 1:
        raise RuntimeError("CuPy is installed but no GPU is visible; use backend 'numpy'")
    _state["cupy"] = cupy
    return cupy


def _is_cupy_array(x: Any) -> bool:
    return type(x).__module__.startswith("cupy") and "cupy" in _state


def blas_wait_tuned() -> bool:
    """True when OpenBLAS's worker threads sleep soon after each call (tinyevo was imported
    before NumPy, or ``OPENBLAS_THREAD_TIMEOUT`` was set by the user), so that tinyevo's own
    threads get the cores between BLAS calls."""
    return _USER_BLAS_WAIT or (not _NUMPY_FIRST and "OPENBLAS_THREAD_TIMEOUT" in os.environ)


def set_num_threads(n: int | None) -> None:
    """Threads tinyevo's own NumPy passes (im2col/col2im, BatchNorm, pooling, bias and
    activation) may use; None = the CPU count, at most 4 — or 1 where OpenBLAS's busy-waiting
    workers would take those cores (:func:`blas_wait_tuned` is False: measured slower than one).

    BLAS keeps its own setting (threadpoolctl or OPENBLAS_NUM_THREADS). Process-pool workers
    set 1 so that workers do not fight over cores. ``TINYEVO_NUM_THREADS`` sets it at import.
    """
    if n is None:
        n = min(os.cpu_count() or 1, 4) if blas_wait_tuned() else 1
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"set_num_threads expects a positive int or None, got {n!r}")
    _state["threads"] = n
    pool = _state.pop("pool", None)
    if pool is not None:
        pool.shutdown(wait=False)


def num_threads() -> int:
    """The thread count set by :func:`set_num_threads`."""
    return _state["threads"]


# Least work per thread for which splitting pays (a thread hand-off costs ~20-50 us).
_MIN_THREAD_BYTES = 1 << 20


def parallel_chunks(fn: Any, n: int, min_items: int = 2, item_bytes: int | None = None) -> None:
    """Call ``fn(start, stop)`` on contiguous chunks of ``range(n)``, in threads where it pays:
    each thread gets at least ``min_items`` items and, where ``item_bytes`` (the memory one
    item touches) is given, at least ~1 MiB of work.

    For NumPy work that releases the GIL on disjoint output slices (copies, additions); on CuPy
    or with one thread it is a plain call.
    """
    if item_bytes:
        min_items = max(min_items, -(-_MIN_THREAD_BYTES // int(item_bytes)))
    threads = min(_state["threads"], n // max(min_items, 1))
    if threads <= 1 or _state["name"] != "numpy":
        fn(0, n)
        return
    pool = _state.get("pool")
    if pool is None:
        from concurrent.futures import ThreadPoolExecutor

        pool = _state["pool"] = ThreadPoolExecutor(_state["threads"],
                                                   thread_name_prefix="tinyevo")
    bounds = [n * i // threads for i in range(threads + 1)]
    # NumPy's error state is per context: threads start with the default, not the caller's
    # (a caller's ``np.errstate(over="ignore")`` must hold for the work it hands out).
    errstate = np.geterr()

    def run(a: int, b: int) -> None:
        with np.errstate(**errstate):
            fn(a, b)

    futures = [pool.submit(run, a, b) for a, b in zip(bounds, bounds[1:])]
    for f in futures:
        f.result()


def tune_allocator() -> bool:
    """Keep freed memory in the process instead of returning it to the OS after every array.

    A training step allocates and frees the same large temporaries every time; with glibc's
    defaults each one is a fresh ``mmap`` whose pages fault in again, which measured ~25 % of a
    NumPy training step here. This raises glibc's mmap and trim thresholds (as PyTorch's caching
    allocator does in effect). Called once at import on Linux/glibc; set
    ``TINYEVO_MALLOC_TUNING=0`` to opt out. Returns True when the settings were applied.
    """
    if _state.get("malloc_tuned") is not None:
        return _state["malloc_tuned"]
    ok = False
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            libc = ctypes.CDLL("libc.so.6")
            m_trim_threshold, m_top_pad, m_mmap_threshold = -1, -2, -3
            ok = bool(libc.mallopt(m_mmap_threshold, 32 * 2**20))
            ok = bool(libc.mallopt(m_trim_threshold, 1024 * 2**20)) and ok
            ok = bool(libc.mallopt(m_top_pad, 64 * 2**20)) and ok
        except (OSError, AttributeError):
            ok = False
    _state["malloc_tuned"] = ok
    return ok


def _from_environment() -> None:
    wanted = os.environ.get("TINYEVO_BACKEND", "").strip().lower()
    if wanted:
        use(wanted)
    threads = os.environ.get("TINYEVO_NUM_THREADS", "").strip()
    set_num_threads(int(threads) if threads.isdigit() and int(threads) > 0 else None)
    if os.environ.get("TINYEVO_MALLOC_TUNING", "1").strip() not in ("0", "false", "no"):
        tune_allocator()


_from_environment()
