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

import numpy as np

__all__ = [
    "use", "name", "current", "get_array_module", "to_device", "to_numpy", "is_gpu",
    "floatx", "set_floatx", "seed", "rng", "gpu_available", "tune_allocator",
    "set_num_threads", "num_threads", "parallel_chunks",
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


def set_num_threads(n: int | None) -> None:
    """Threads tinyevo's own NumPy loops (im2col, col2im) may use; None = the CPU count, at most 4.

    BLAS keeps its own setting (threadpoolctl or OPENBLAS_NUM_THREADS). Process-pool workers
    set 1 so that workers do not fight over cores. ``TINYEVO_NUM_THREADS`` sets it at import.
    """
    if n is None:
        n = min(os.cpu_count() or 1, 4)
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"set_num_threads expects a positive int or None, got {n!r}")
    _state["threads"] = n
    pool = _state.pop("pool", None)
    if pool is not None:
        pool.shutdown(wait=False)


def num_threads() -> int:
    """The thread count set by :func:`set_num_threads`."""
    return _state["threads"]


def parallel_chunks(fn: Any, n: int, min_items: int = 2) -> None:
    """Call ``fn(start, stop)`` on contiguous chunks of ``range(n)``, in threads where it pays.

    For NumPy work that releases the GIL on disjoint output slices (copies, additions); on CuPy
    or with one thread it is a plain call.
    """
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
    futures = [pool.submit(fn, a, b) for a, b in zip(bounds, bounds[1:])]
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
