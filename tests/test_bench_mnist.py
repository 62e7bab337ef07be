"""benchmarks/bench_mnist.py on a few synthetic 28x28 images: the baselines train, test and
report; fit's final lines and result.json are read back."""

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_mnist.py"
_spec = importlib.util.spec_from_file_location("bench_mnist", _PATH)
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)

FIT_OUTPUT = """\
generation   36: best 0.9985  mean 0.9871  (8.1 s)  0 s left

generation 36, 290 s this session
best model: test accuracy 99.33 % on 451 held-out samples (validation fitness 0.9985); \
80,039 parameters, 17 vertices
checkpoint: runs/x/checkpoint   best model: runs/x/best
"""


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    x = rng.random((100, 1, 28, 28), dtype=np.float32)
    y = rng.integers(0, 10, 100)
    return (x[:70], y[:70]), (x[70:], y[70:])


def _check_cnn_row(row, steps):
    assert row["steps"] == steps and row["epochs"] == pytest.approx(steps * bench.BATCH / 70)
    assert 0.0 <= row["test_accuracy"] <= 1.0
    assert row["nparams"] == 421_834          # 320+64 + 18,496+128 + 401,536 + 1,290
    assert np.isfinite(row["train_loss_last100"])


def test_tinyevo_cnn_trains_and_tests(data):
    _check_cnn_row(bench.run_tinyevo_cnn(data, seconds=0.0, seed=0), steps=1)


def test_torch_cnn_trains_and_tests(data):
    pytest.importorskip("torch")
    _check_cnn_row(bench.run_torch_cnn(data, seconds=0.0, seed=0), steps=1)


def test_train_for_walks_shuffled_epochs(monkeypatch):
    seen = []
    x, y = np.arange(10, dtype=np.float32), np.arange(10)
    clock = iter(range(100))                                # 10 ms a batch
    monkeypatch.setattr(bench.time, "perf_counter", lambda: next(clock) * 0.01)
    row = bench.train_for(lambda xb, yb: seen.append(yb) or 0.0, x, y, 0.045, seed=0)
    assert row["steps"] == 5 and len(seen) == 5
    assert sorted(seen[0].tolist()) == list(range(10))     # batch 64 > 10: one epoch a batch
    assert row["epochs"] == 5.0


def test_reads_fit_stdout(tmp_path):
    r = bench.read_fit_result(tmp_path, FIT_OUTPUT)
    assert r == {"source": "stdout", "generation": 36, "seconds": 290.0,
                 "test_accuracy": pytest.approx(0.9933), "test_samples": 451,
                 "validation_fitness": 0.9985, "nparams": 80039, "nvertices": 17}


def test_result_json_wins_over_stdout(tmp_path):
    result = {"generation": 4, "test_accuracy": 0.98, "validation_fitness": 0.97,
              "nparams": 1234, "nvertices": 5, "seconds": 20.5}
    (tmp_path / "result.json").write_text(json.dumps(result))
    assert bench.read_fit_result(tmp_path, FIT_OUTPUT) == {"source": "result.json", **result}


def test_unreadable_output_gives_nones(tmp_path):
    r = bench.read_fit_result(tmp_path, "Traceback (most recent call last):\n")
    assert r["source"] == "stdout" and r["test_accuracy"] is None and r["generation"] is None


def test_overrun_allowance():
    assert bench.allowed_overrun(20) == 10 and bench.allowed_overrun(3600) == pytest.approx(108)


def test_summary_skips_skipped_arms():
    runs = [{"arm": "tinyevo-cnn", "seed": s, "test_accuracy": a, "epochs": 1.0}
            for s, a in enumerate((0.9, 0.8, 0.95))]
    runs.append({"arm": "torch-cnn", "seed": 0, "skipped": "PyTorch is not installed"})
    s = bench.summarise(runs)
    assert list(s) == ["tinyevo-cnn"]
    assert s["tinyevo-cnn"]["test_accuracy"] == {"median": 0.9, "min": 0.8, "max": 0.95}


def test_the_warm_arms_net_is_a_graph_under_fits_mnist_ceiling(data):
    from tinyevo.app.config import LARGE_DATA_MACS_PER_VALUE

    (x, _), _ = data
    graph = bench.graph_cnn()
    assert graph(x[:4]).shape == (4, 10)
    assert graph.macs((28, 28)) <= LARGE_DATA_MACS_PER_VALUE * 28 * 28
    row = bench.run_tinyevo_cnn(data, 0.3, 0, bench.graph_cnn)
    assert row["nparams"] == graph.nparams() and 0.0 <= row["test_accuracy"] <= 1.0
    assert "warm" in bench.ARMS and "warm" not in bench.DEFAULT_ARMS
