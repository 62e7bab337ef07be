"""Regression in ``fit``: the task inferred or given, R² fitness, raw-unit predictions, and the
errors that say what to pass instead."""

from __future__ import annotations

import numpy as np
import pytest

import tinyevo as te
from tinyevo.app.tasks import R2_FLOOR, infer_task, r2_standard_error
from tinyevo.metrics import r2_score

TINY = dict(population_size=4, batches_per_generation=20, batch_size=32, seed=0)


def linear(n: int, seed: int, outputs: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """y = a linear map of 5 features, in units far from 1 (offset 300, scale 50), + noise."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 5)).astype(np.float32) * [1, 10, 0.1, 1, 1] + [0, 5, 0, 0, 100]
    w = np.random.default_rng(99).normal(size=(5, outputs)) / np.array([[1], [10], [0.1], [1],
                                                                        [1]])
    y = 300 + 50 * (x - [0, 5, 0, 0, 100]) @ (w / np.abs(w).sum(axis=0))
    y = y + rng.normal(scale=2.0, size=y.shape)
    return x, (y[:, 0] if outputs == 1 else y).astype(np.float32)


def test_regression_end_to_end_gives_r2_well_above_zero_on_raw_data():
    x, y = linear(600, 0)
    population = te.fit(x[:400], y[:400], generations=3, **TINY)
    assert population.task == "regression"
    best = population.hall_of_fame.best()
    assert -1.0 <= best.fitness <= 1.0
    pred = best.graph()(x[400:])                    # raw features in, y's units out
    assert pred.shape == (200, 1)
    assert r2_score(y[400:], pred) > 0.8
    # the model standardises its own inputs and gives y's units: a fixed layer at each end
    kinds = [type(v.layer).__name__ for v in best.graph().vertices if v.layer is not None]
    assert kinds[0] == "Rescale" and kinds[-1] == "Rescale"
    head = best.graph().vertices[-2]              # the dense output: fully shielded, identity
    assert head.shielded and te.search.is_shielded(head, te.ActivationFunctionMutation())


def test_multi_output_targets_and_the_task_given_explicitly():
    x, y = linear(500, 1, outputs=3)
    population = te.fit(x, y, generations=2, task="regression", **TINY)
    out = population.best().graph()(x[:7])
    assert out.shape == (7, 3)
    assert population.best().fitness > 0.3


def test_whole_number_targets_are_regression_when_told():
    x, y = linear(400, 2)
    y = np.round(y)                         # like scikit-learn's diabetes targets
    with pytest.raises(ValueError, match="task='regression'"):
        te.fit(x, y, generations=1, **TINY)
    population = te.fit(x, y, generations=1, task="regression", **TINY)
    assert population.task == "regression"


@pytest.mark.parametrize("y, task", [
    (np.array([0, 1, 2, 1]), "classification"),
    (np.array([0.0, 1.0, 2.0, 1.0]), "classification"),       # whole-number floats: labels
    (np.array([0.5, 1.0, 2.0, 1.0]), "regression"),
    (np.eye(3)[[0, 1, 2, 1]], "classification"),               # one-hot rows
    (np.array([[0.2, 3.0], [1.0, -1.0]]), "regression"),
    (np.array([True, False]), "classification"),
    (np.arange(200, dtype=np.uint8)[:, None] % 100, "classification"),     # (N, 1), 100 classes
])
def test_infer_task(y, task):
    assert infer_task(y) == task


def test_r2_score_matches_scikit_learn():
    metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(0)
    y, p = rng.normal(size=(50, 3)), rng.normal(size=(50, 3))
    assert r2_score(y, y + 0.1 * p) == pytest.approx(metrics.r2_score(y, y + 0.1 * p))
    assert r2_score(y[:, 0], p[:, 0]) == pytest.approx(metrics.r2_score(y[:, 0], p[:, 0]))


def test_a_diverged_regressor_gets_the_floor_not_nan():
    from tinyevo.app.data import GenerationBatches
    from tinyevo.app.scoring import RegressorFitness
    from tinyevo.evolution.candidate import CandidateModel

    x, y = linear(100, 3)
    y2 = y[:, None]
    scorer = RegressorFitness(GenerationBatches(x, y2, te.app.FitConfig(seed=0)),
                              (x[:50], y2[:50]), scale=np.array([50.0]))
    inp = te.input_vertex("in", 5)
    graph = te.CompGraph(inp, te.vertex(te.layers.Dense(5, 1), inp, name="out"))
    graph.vertices[-1].layer.arrays()["weight"][...] = np.nan
    assert scorer._score(CandidateModel(graph)) == R2_FLOOR


def test_regression_objectives_and_their_errors():
    x, y = linear(300, 4)
    population = te.fit(x, y, generations=2, objectives="r2,params", **TINY)
    assert population.pareto_front is not None and len(population.pareto_front) >= 1
    assert set(population.pareto_front[0].fitness.names) == {"r2", "params"}
    with pytest.raises(ValueError, match="objective accuracy is for classification"):
        te.fit(x, y, generations=1, objectives="accuracy,params", **TINY)
    labels = (y > y.mean()).astype(np.int64)
    with pytest.raises(ValueError, match="objective r2 is for regression"):
        te.fit(x, labels, generations=1, objectives="r2,params", **TINY)


def test_bad_regression_targets_say_what_to_fix():
    x, y = linear(50, 5)
    bad = y.copy()
    bad[3] = np.nan
    with pytest.raises(ValueError, match="NaN or Inf"):
        te.fit(x, bad, generations=1, task="regression", **TINY)
    with pytest.raises(ValueError, match="every target is the same"):
        te.fit(x, np.full(50, 3.5), generations=1, task="regression", **TINY)
    with pytest.raises(ValueError, match="expected 50 regression targets"):
        te.fit(x, y[:40], generations=1, task="regression", **TINY)
    with pytest.raises(ValueError, match="validation targets have 2 columns"):
        te.fit(x, y, valid=(x[:10], np.arange(20, dtype=np.float32).reshape(10, 2)),
               generations=1,
               task="regression", **{k: v for k, v in TINY.items()})


def test_standardize_is_on_for_tables_and_off_for_images(digits):
    x, y = digits
    labels = np.arange(len(y)) % 2
    flat = x.reshape(len(x), -1)
    table = te.fit(flat, labels, generations=1, **TINY)
    first = table.best().graph().vertices[1].layer
    assert type(first).__name__ == "Rescale"
    raw = te.fit(flat, labels, generations=1, standardize=False, **TINY)
    assert type(raw.best().graph().vertices[1].layer).__name__ != "Rescale"
    images = te.fit(x, y, generations=1, **{**TINY, "batches_per_generation": 2})
    assert all(type(v.layer).__name__ != "Rescale" for v in images.best().graph().vertices)


def test_resume_keeps_the_task_without_being_told(tmp_path):
    x, y = linear(300, 6)
    y = np.round(y)                              # inference alone would ask for the task
    te.fit(x, y, generations=1, task="regression", mdir=tmp_path, **TINY)
    resumed = te.fit(x, y, generations=2, mdir=tmp_path, **TINY)
    assert resumed.generation == 2 and resumed.task == "regression"
    with pytest.raises(ValueError, match="task"):
        te.fit(x, y, generations=3, mdir=tmp_path, task="classification", **TINY)


def test_members_of_a_regression_predict_numbers_and_evaluate_r2():
    x, y = linear(300, 7)
    population = te.fit(x, y, generations=1, **TINY)
    for c in (population.best(), population.hall_of_fame.best()):
        pred = c.predict(x[:9])
        assert pred.shape == (9, 1) and pred.dtype.kind == "f"
        np.testing.assert_allclose(pred, c.graph()(x[:9]), rtol=1e-6)
        assert c.evaluate(x, y) == pytest.approx(r2_score(y, c.graph()(x)), abs=1e-7)
        assert np.isnan(c.evaluate(x[:0], y[:0]))
    assert te.app.fitting.result_model(population) is population.hall_of_fame.best()


def test_the_fitness_is_the_validation_r2_of_the_model():
    from tinyevo.app.data import GenerationBatches
    from tinyevo.app.scoring import RegressorFitness
    from tinyevo.evolution.candidate import CandidateModel

    x, y = linear(300, 8)
    population = te.fit(x, y, generations=1, **TINY)
    model = population.best().graph()
    y2 = y[:, None]
    scorer = RegressorFitness(GenerationBatches(x, y2, te.app.FitConfig(seed=0)),
                              (x[:100], y2[:100]), scale=np.array([50.0]), batch_size=32)
    assert scorer._score(CandidateModel(model)) == pytest.approx(
        r2_score(y[:100], model(x[:100])), abs=1e-5)


def test_final_training_of_a_regressor():
    x, y = linear(2000, 9)
    events = []
    population = te.fit(x, y, time_limit=8, final_training=0.4, progress=events.append,
                        **{**TINY, "batches_per_generation": 10})
    finals = [e for e in events if e["event"] == "final" and "fitness" in e]
    assert len(finals) == 1 and np.isfinite(finals[0]["fitness"])
    after, before = finals[0]["fitness"], finals[0]["before"]
    # kept unless R² fell by more than two standard errors (600 validation samples: 30 %)
    kept = after >= before - 2 * r2_standard_error(before, 600)
    assert (population.final is not None) == kept
    if kept:
        assert population.final.predict(x[:3]).shape == (3, 1)


@pytest.mark.parametrize("y, message", [
    (np.array([[1, 0, 1], [0, 1, 1]] * 30), "must be one-hot"),
    (np.array([[3, 1], [2, 5]] * 30), "integer columns"),
])
def test_label_matrices_that_are_not_one_hot_are_refused(y, message):
    x = np.random.default_rng(0).standard_normal((60, 4)).astype(np.float32)
    with pytest.raises(ValueError, match=message):
        te.fit(x, y, generations=1, **TINY)


def test_tiebreak_is_refused_for_regression():
    x, y = linear(100, 10)
    with pytest.raises(ValueError, match="tiebreak"):
        te.fit(x, y, generations=1, tiebreak="size", **TINY)
