"""Every example in examples/ runs (with its --smoke settings)."""

import importlib.util
import pickle
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("sklearn")

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def load(name):
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_basic_example_evolves_two_generations():
    population = load("basic").main([])
    assert population.generation == 3 and len(population) == 5


def test_signals_example_learns_something():
    accuracy = load("signals_1d").main(["--smoke"])
    assert 0.0 <= accuracy <= 1.0


def test_regression_example_reports_a_finite_error():
    mse = load("regression").main(["--smoke"])
    assert np.isfinite(mse) and mse >= 0


@pytest.mark.slow
def test_cifar10_example_on_local_files(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {b"data": rng.integers(0, 256, (10, 3072), dtype=np.uint8),
                 b"labels": [int(v) for v in rng.integers(0, 10, 10)]}
        with open(folder / name, "wb") as f:
            pickle.dump(batch, f, protocol=2)
    accuracy = load("cifar10").main([str(folder), "--smoke", "--dir", str(tmp_path / "run")])
    assert 0.0 <= accuracy <= 1.0 and (tmp_path / "run" / "checkpoint").is_dir()
