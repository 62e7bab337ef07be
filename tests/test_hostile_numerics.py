"""Numerical misuse of models and training (issue #22 item 15)"""

import logging
import re
import warnings

import numpy as np
import pytest

import tinyevo as te
from tinyevo.evolution import (
    AccuracyFitness,
    CandidateOptModel,
    TrainAccuracyFitness,
    TrainThenFitness,
)
from tinyevo.graph import CompGraph, input_vertex, vertex
from tinyevo.layers import BatchNorm, Conv, Dense, Dropout, Flatten, GlobalPool, MaxPool, MeanPool
from tinyevo.layers.sequential import Sequential
from tinyevo.losses import logit_cross_entropy
from tinyevo.optimizers import SGD, Adam, model_layers

INVALID = -1.0


def _data():
    x = np.random.default_rng(0).standard_normal((60, 4)).astype(np.float32)
    return x, np.arange(60) % 3


def _batches(repeat=3):
    x, y = _data()
    return [(x[i:i + 20], y[i:i + 20]) for i in range(0, 60, 20)] * repeat


def _mlp():
    return Sequential(Dense(4, 16, "relu", rng=np.random.default_rng(1)),
                      Dense(16, 3, rng=np.random.default_rng(2)))


def _train_then(**kwargs):
    data = _batches()
    return TrainThenFitness(data, logit_cross_entropy, Adam(), AccuracyFitness(data[:3]),
                            invalidfitness=INVALID, **kwargs)


@pytest.fixture(scope="module")
def best():
    x, y = _data()
    return te.fit(x, y, generations=1, population_size=2, batches_per_generation=1,
                  seed=0).best()


# ------------------------------------------------------------------ a. divergence
@pytest.mark.parametrize("check_every", [None, 100])    # every batch (host), or only at the end
def test_adam_at_a_huge_learning_rate_counts_as_diverged(caplog, check_every):
    # The loss stays finite (about 1e16), so a NaN/Inf check alone let this candidate win.
    candidate = CandidateOptModel(Adam(1e8), _mlp())
    with caplog.at_level(logging.WARNING, logger="tinyevo.evolution"):
        assert _train_then(nan_check_every=check_every)(candidate) == INVALID
    assert "loss exploded" in caplog.text


def test_train_accuracy_fitness_catches_the_same_divergence():
    f = TrainAccuracyFitness(_batches(), logit_cross_entropy, Adam(), invalidfitness=INVALID)
    assert f(CandidateOptModel(Adam(1e8), _mlp())) == INVALID


@pytest.mark.parametrize("lr", [1e-3, 1e-1, 1.0])
def test_normal_training_is_not_flagged_as_diverged(caplog, lr):
    with caplog.at_level(logging.WARNING, logger="tinyevo.evolution"):
        value = _train_then()(CandidateOptModel(Adam(lr), _mlp()))
    assert value != INVALID and 0.0 <= value <= 1.0
    assert "invalid fitness" not in caplog.text


class _PoisonLastStep(SGD):
    """SGD whose step after ``steps`` batches leaves an infinite weight: the last step, which
    no training loss sees."""

    def __init__(self, steps):
        super().__init__(1e-2)
        self.steps, self.done = steps, 0

    def update(self, model):
        super().update(model)
        self.done += 1
        if self.done == self.steps:
            model_layers(model)[0].params["weight"][0, 0] = np.inf


def test_a_non_finite_parameter_after_the_last_step_counts_as_diverged(caplog):
    f = _train_then()
    candidate = CandidateOptModel(_PoisonLastStep(len(f.dataiter)), _mlp())
    with caplog.at_level(logging.WARNING, logger="tinyevo.evolution"):
        assert f(candidate) == INVALID
    assert "NaN/Inf" in caplog.text


# ------------------------------------------------------------------ b. non-finite input
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_predict_and_evaluate_refuse_non_finite_input(best, bad):
    x, y = _data()
    x[7, 2] = bad
    with pytest.raises(ValueError, match=r"expected finite input values, got 1 NaN/Inf"):
        best.predict(x)
    with pytest.raises(ValueError, match=r"expected finite input values.*impute"):
        best.evaluate(x, y)


def test_predict_of_finite_input_still_works(best):
    x, y = _data()
    assert best.predict(x).shape == (60,)
    assert 0.0 <= best.evaluate(x, y) <= 1.0


# ------------------------------------------------------------------ c. bad labels
@pytest.mark.parametrize("label, match", [
    (-1, r"labels must be >= 0"),
    (3, r"labels must lie in \[0, 3\) for a model with 3 outputs"),
    (1000, r"labels must lie in \[0, 3\)"),
    (0.5, r"expected integer class labels"),
    (np.nan, r"expected integer class labels"),
])
def test_evaluate_refuses_labels_that_are_no_class_of_the_model(best, label, match):
    x, y = _data()
    y = y.astype(np.float64 if isinstance(label, float) else np.int64)
    y[5] = label
    with pytest.raises(ValueError, match=match):
        best.evaluate(x, y)


def test_evaluate_takes_whole_float_labels(best):
    x, y = _data()
    assert best.evaluate(x, y.astype(np.float32)) == best.evaluate(x, y)


@pytest.mark.parametrize("shape_of", [
    lambda y: np.eye(4)[y],             # one-hot over 4 classes for a 3-class model
    lambda y: y[None, :],               # a row instead of a column
    lambda y: y[:, None, None],         # one axis too many
])
def test_evaluate_refuses_labels_of_the_wrong_shape(best, shape_of):
    x, y = _data()
    with pytest.raises(ValueError, match=r"evaluate: .*(one-hot|shape|labels in y)"):
        best.evaluate(x, shape_of(y))


# ------------------------------------------------------------------ d. complex input
def _complex(shape):
    return (np.ones(shape) + 1j * np.ones(shape)).astype(np.complex64)


@pytest.mark.parametrize("layer, shape", [
    (Dense(4, 2), (3, 4)),
    (Conv(2, 3, (3, 3), padding="same"), (3, 2, 5, 5)),
    (BatchNorm(2), (3, 2, 5, 5)),
    (MaxPool(2), (3, 2, 4, 4)),
    (MeanPool(2), (3, 2, 4, 4)),
    (GlobalPool("mean"), (3, 2, 4, 4)),
    (Flatten(), (3, 2, 4, 4)),
    (Dropout(0.5), (3, 4)),
])
@pytest.mark.parametrize("train", [False, True])
def test_layers_refuse_complex_input(layer, shape, train):
    with warnings.catch_warnings():
        warnings.simplefilter("error")          # no ComplexWarning: refused before any cast
        with pytest.raises(ValueError, match=r"complex input: expected real numbers.*x\.real"):
            layer.forward(_complex(shape), train=train)


def test_a_graph_refuses_complex_input():
    inp = input_vertex("in", 4)
    graph = CompGraph(inp, vertex(Dense(4, 2), inp))
    with pytest.raises(ValueError, match="complex input"):
        graph(_complex((3, 4)))


# ------------------------------------------------------------------ e. dy shape in backprop
@pytest.mark.parametrize("layer, shape", [
    (Dense(4, 2, "relu"), (5, 4)),
    (Conv(2, 3, (3, 3), padding="same"), (5, 2, 6, 6)),
    (BatchNorm(2), (5, 2, 6, 6)),
    (MaxPool(2), (5, 2, 6, 6)),
    (MeanPool(2), (5, 2, 6, 6)),
    (GlobalPool("max"), (5, 2, 6, 6)),
    (Flatten(), (5, 2, 6, 6)),
    (Dropout(0.5), (5, 4)),
    (Dropout(0.0), (5, 4)),
])
def test_layer_backprop_refuses_a_gradient_not_shaped_like_the_output(layer, shape):
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    y, backprop = layer.forward(x, train=True)
    wrong = np.ones((y.shape[0] - 1, *y.shape[1:]), np.float32)
    expected = re.escape(f"wrong gradient shape in backprop: expected dy shaped like the "
                         f"layer's output {tuple(y.shape)}")
    with pytest.raises(ValueError, match=expected):
        backprop(wrong)
    with pytest.raises(ValueError, match="wrong gradient shape.*got list"):
        backprop(wrong.tolist())
    backprop(np.ones_like(y))           # the right shape still goes through


def test_sequential_backprop_refuses_a_wrong_gradient_shape():
    y, backprop = _mlp().forward(np.ones((5, 4), np.float32), train=True)
    with pytest.raises(ValueError, match=r"expected dy shaped like the layer's output \(5, 3\)"):
        backprop(np.ones((5, 16), np.float32))


def test_graph_backprop_refuses_a_wrong_gradient_shape():
    inp = input_vertex("in", 3)
    graph = CompGraph(inp, vertex(Dense(4, 2), vertex(Dense(3, 4, "relu"), inp)))
    y, backprop = graph.forward(np.ones((5, 3), np.float32), train=True)
    with pytest.raises(ValueError, match=r"expected the output's shape \(5, 2\), got shape "
                                         r"\(4, 2\)"):
        backprop(np.ones((4, 2), np.float32))
    with pytest.raises(ValueError, match=r"expected the output's shape \(5, 2\), got list"):
        backprop([[1.0, 2.0]])
    backprop(np.ones_like(y))
