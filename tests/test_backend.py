"""The backend switch: array module, device moves, dtype and the library generator."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys

import numpy as np
import pytest

import tinyevo
from tinyevo import backend as B

HAS_CUPY = importlib.util.find_spec("cupy") is not None


def test_use_numpy():
    assert B.use("numpy") is np
    assert B.name() == "numpy"
    assert B.current() is np


def test_use_unknown_backend_raises_value_error():
    with pytest.raises(ValueError, match="nope"):
        B.use("nope")
    assert B.name() == "numpy", "a failed switch leaves the backend unchanged"


@pytest.mark.skipif(HAS_CUPY, reason="CuPy is importable here; the missing-CuPy error can't show")
def test_use_cupy_without_cupy_says_how_to_fix():
    with pytest.raises(RuntimeError) as info:
        B.use("cupy")
    msg = str(info.value)
    assert "pip install" in msg and "numpy" in msg
    assert B.name() == "numpy" and B.current() is np
    assert B.gpu_available() is False


def test_import_does_not_touch_cupy():
    code = "import sys, tinyevo; print('cupy' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**os.environ, "TINYEVO_BACKEND": ""}, check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize("value,expected", [("numpy", "numpy"), (" NumPy ", "numpy"),
                                            ("", "numpy")])
def test_environment_variable_selects_backend(value, expected):
    code = "import tinyevo.backend as B; print(B.name())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**os.environ, "TINYEVO_BACKEND": value}, check=True)
    assert out.stdout.strip() == expected


@pytest.mark.parametrize("first,env,expected", [
    ("tinyevo", {}, "4 True many"),                       # set before NumPy loads OpenBLAS
    ("numpy", {}, "4 False 1"),                           # too late: own threads would lose
    ("numpy", {"OPENBLAS_THREAD_TIMEOUT": "6"}, "6 True many"),     # the user's choice
    ("tinyevo", {"TINYEVO_BLAS_TUNING": "0"}, "unset False 1"),     # opted out
])
def test_openblas_thread_wait_and_own_threads(first, env, expected):
    code = (f"import {first}, os, tinyevo.backend as B; "
            "n = B.num_threads(); "
            "print(os.environ.get('OPENBLAS_THREAD_TIMEOUT', 'unset'), B.blas_wait_tuned(), "
            "'many' if n == min(os.cpu_count() or 1, 4) else n)")
    base = {k: v for k, v in os.environ.items()
            if k not in ("OPENBLAS_THREAD_TIMEOUT", "TINYEVO_NUM_THREADS", "TINYEVO_BLAS_TUNING")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**base, **env}, check=True)
    got = out.stdout.strip()
    if (os.cpu_count() or 1) == 1:
        got = got.replace(" 1", " many")
        expected = expected.replace(" 1", " many")
    assert got == expected


def test_environment_variable_bad_value_fails_loudly():
    code = "import tinyevo"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**os.environ, "TINYEVO_BACKEND": "tensorflow"})
    assert out.returncode != 0
    assert "tensorflow" in out.stderr


@pytest.mark.skipif(HAS_CUPY, reason="CuPy is importable here")
def test_environment_variable_cupy_without_cupy_explains():
    code = "import tinyevo"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**os.environ, "TINYEVO_BACKEND": "cupy"})
    assert out.returncode != 0
    assert "RuntimeError" in out.stderr and "pip install" in out.stderr


def test_to_numpy_to_device_round_trip(xp):
    host = np.arange(6, dtype=np.float32).reshape(2, 3)
    dev = B.to_device(host)
    assert B.get_array_module(dev) is xp
    assert B.is_gpu(dev) == (xp is not np)
    back = B.to_numpy(dev)
    assert isinstance(back, np.ndarray)
    np.testing.assert_array_equal(back, host)
    assert B.to_device(host, dtype=np.float64).dtype == np.float64
    assert B.to_numpy([1, 2]).tolist() == [1, 2]
    assert B.to_device(dev) is not None


def test_get_array_module_defaults_to_numpy():
    assert B.get_array_module(np.zeros(2)) is np
    assert B.get_array_module([1.0], 3) is np
    assert B.get_array_module() is np
    assert not B.is_gpu(np.zeros(2))


def test_floatx_default_and_switch():
    assert B.floatx() is np.float32
    B.set_floatx(np.float64)
    assert B.floatx() is np.float64
    assert tinyevo.layers.Dense(2, 2).params["weight"].dtype == np.float64
    B.set_floatx("float32")
    assert B.floatx() is np.float32
    with pytest.raises(ValueError, match="float32 or float64"):
        B.set_floatx(np.float16)
    assert B.floatx() is np.float32


def test_rng_none_is_the_seeded_library_generator():
    tinyevo.seed(42)
    g = B.rng()
    assert isinstance(g, np.random.Generator)
    assert B.rng(None) is g
    first = g.random(3)
    tinyevo.seed(42)
    np.testing.assert_array_equal(B.rng().random(3), first)
    tinyevo.seed(43)
    assert not np.array_equal(B.rng().random(3), first)


def test_rng_passes_generators_through_and_rejects_others():
    gen = np.random.default_rng(0)
    assert B.rng(gen) is gen
    for bad in (0, np.random.RandomState(0), "seed"):
        with pytest.raises(TypeError, match="default_rng"):
            B.rng(bad)


def test_seed_is_exported_at_top_level():
    assert tinyevo.seed is B.seed
    tinyevo.seed(None)                      # an unseeded run is allowed
    assert isinstance(B.rng(), np.random.Generator)


def test_parallel_chunks_threads_keep_the_callers_numpy_error_state(monkeypatch):
    import warnings

    monkeypatch.setitem(B._state, "threads", 2)
    big = np.full(8, 1000.0)

    def overflow(a, b):
        np.exp(big[a:b])

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with np.errstate(over="ignore"):
            B.parallel_chunks(overflow, 8, min_items=1)      # silent, as in the caller
        with np.errstate(over="raise"), pytest.raises(FloatingPointError):
            B.parallel_chunks(overflow, 8, min_items=1)
