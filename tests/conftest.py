"""Shared fixtures: the suite runs per backend (CuPy cases skip where CuPy or a GPU is absent);
``digits``, a small labelled set for short ``fit`` runs."""

import os

import numpy as np
import pytest
from hypothesis import settings

import tinyevo
from tinyevo import backend as B

# Property tests draw the same examples on every run (CI stays deterministic); run
# HYPOTHESIS_PROFILE=explore pytest to search new random examples locally.
settings.register_profile("deterministic", derandomize=True)
settings.register_profile("explore", derandomize=False)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "deterministic"))


def _backend_params():
    return ["numpy", pytest.param("cupy", marks=pytest.mark.gpu)]


@pytest.fixture(params=_backend_params())
def xp(request):
    """The array module under test; selects that backend for the test and restores numpy."""
    name = request.param
    if name == "cupy" and not B.gpu_available():
        pytest.skip("cupy backend: CuPy is not installed or no GPU is visible")
    module = B.use(name)
    yield module
    B.use("numpy")


@pytest.fixture(autouse=True)
def _seeded():
    """Every test starts from the same library seed and float32 default."""
    tinyevo.seed(1234)
    B.set_floatx(np.float32)
    yield
    B.set_floatx(np.float32)
    B.use("numpy")


@pytest.fixture(scope="module")
def digits():
    """The first 240 training digits, ``(x, y)``: enough for a short ``fit``. A test file may
    define its own ``digits`` instead."""
    pytest.importorskip("sklearn")
    x, y = tinyevo.load_digits("train")
    return x[:240], y[:240]
