"""Objectives: the value (a float with a vector), the objectives, and ObjectivesFitness."""

import copy
import json
import math
import pickle

import numpy as np
import pytest

import tinyevo as te
from tinyevo.evolution import (
    CandidateModel,
    EliteSelection,
    FitnessObjective,
    FittedCandidate,
    HallOfFame,
    LatencyObjective,
    MetricObjective,
    Objective,
    Objectives,
    ObjectivesFitness,
    ParamsObjective,
    fitness_of,
)
from tinyevo.layers import Dense, Sequential


def _value(fitness=0.9, acc=0.9, params=100.0):
    return Objectives(fitness, ("accuracy", "params"), (acc, params), ("max", "min"))


def test_an_objectives_value_is_its_fitness_where_one_number_is_wanted():
    v = _value(0.91, 0.9, 1200)
    assert isinstance(v, float) and float(v) == 0.91 and v.fitness == 0.91
    assert v > 0.9 and v < _value(0.95) and f"{v:.2f}" == "0.91"
    assert type(v * 2) is float and v * 2 == 1.82
    assert v["params"] == 1200.0 and v.as_dict() == {"accuracy": 0.9, "params": 1200.0}
    assert v.oriented() == (0.9, -1200.0)
    best = EliteSelection(1)([FittedCandidate("a", _value(0.5)), FittedCandidate("b", v)])
    assert best[0].candidate == "b"
    hof = HallOfFame(2)
    hof.update([FittedCandidate(CandidateModel(Dense(2, 2)), v)])
    assert hof.best().fitness is v                     # the vector goes along
    with pytest.raises(KeyError, match="no objective 'latency'"):
        v["latency"]


def test_an_objectives_value_is_immutable_pickles_and_round_trips_json():
    v = _value(0.91, 0.9, 1200)
    with pytest.raises(AttributeError, match="immutable"):
        v.names = ("x",)
    for again in (pickle.loads(pickle.dumps(v)), copy.deepcopy(v),
                  Objectives.from_json(float(v), json.loads(json.dumps(v.to_json())))):
        assert type(again) is Objectives and float(again) == float(v)
        assert (again.names, again.values, again.senses) == (v.names, v.values, v.senses)
    assert repr(v) == "Objectives(0.91, accuracy=0.9, params=1200)"


@pytest.mark.parametrize("args, error", [
    ((0.5, ("a", "a"), (1, 2), ("max", "max")), ValueError),
    ((0.5, ("a",), (1, 2), ("max",)), ValueError),
    ((0.5, ("a",), (1,), ("up",)), ValueError),
    ((0.5, ("a",), ("x",), ("max",)), TypeError),
    (("high", ("a",), (1,), ("max",)), TypeError),
    ((0.5, (), (), ()), ValueError),
])
def test_malformed_objectives_are_refused(args, error):
    with pytest.raises(error):
        Objectives(*args)


def test_worst_is_dominated_by_any_measured_value():
    worst = Objectives.worst(0.0, ("accuracy", "params"), ("max", "min"))
    assert worst.values == (-math.inf, math.inf) and worst.oriented() == (-math.inf, -math.inf)


def test_objectives_fitness_measures_after_the_scalar_fitness():
    calls = []

    def scalar(c):
        calls.append("fitness")
        return 0.75

    def depth(c):
        calls.append("depth")
        return len(list(c.graph().layers()))

    f = ObjectivesFitness(scalar, [FitnessObjective("accuracy"), ParamsObjective(),
                                   Objective("depth", depth, "min")])
    value = fitness_of(f, CandidateModel(Sequential(Dense(3, 4), Dense(4, 2))))
    assert calls == ["fitness", "depth"]
    assert value.names == ("accuracy", "params", "depth")
    assert value.values == (0.75, 26.0, 2.0) and value.senses == ("max", "min", "min")
    assert f.invalidfitness.values == (-math.inf, math.inf, math.inf)


def test_an_invalid_candidate_gets_the_worst_objectives(caplog):
    class Invalid(te.AbstractFitness):
        invalidfitness = 0.0

        def __call__(self, c, generation=None):
            return 0.0

    f = ObjectivesFitness(Invalid(), [FitnessObjective("accuracy"), ParamsObjective()])
    value = fitness_of(f, CandidateModel(Dense(2, 2)))
    assert float(value) == 0.0 and value.values == (-math.inf, math.inf)
    assert f.invalidfitness.values == value.values

    def broken(c):
        raise RuntimeError("no")

    f = ObjectivesFitness(lambda c: 0.5, [FitnessObjective(), Objective("x", broken)])
    assert fitness_of(f, CandidateModel(Dense(2, 2))).values == (-math.inf, -math.inf)
    assert "RuntimeError: no" in caplog.text


def test_metric_objective_reads_what_the_fitness_recorded():
    c = CandidateModel(Dense(2, 2))

    def scalar(candidate):
        candidate.metrics = {"accuracy": 0.5, "loss": 1.25}
        return 0.5005

    f = ObjectivesFitness(scalar, [MetricObjective("accuracy"), MetricObjective("loss", "min")])
    assert fitness_of(f, c).values == (0.5, 1.25)


def test_objectives_fitness_refuses_what_is_no_objective():
    with pytest.raises(TypeError, match="give fun"):
        Objective("depth")                     # measures nothing: every value would be worst
    with pytest.raises(TypeError, match="no objective"):
        ObjectivesFitness(lambda c: 1.0, [lambda c: 2.0])
    with pytest.raises(ValueError, match="must differ"):
        ObjectivesFitness(lambda c: 1.0, [ParamsObjective(), ParamsObjective()])
    f = ObjectivesFitness(lambda c: (1.0, 2.0), [ParamsObjective()])
    with pytest.raises(TypeError, match="real number"):
        fitness_of(f, CandidateModel(Dense(2, 2)))


def test_latency_ranks_a_ten_times_larger_model_as_slower():
    x = np.random.default_rng(0).standard_normal((64, 64)).astype(np.float32)
    small = CandidateModel(Sequential(Dense(64, 32, "relu"), Dense(32, 10)))
    large = CandidateModel(Sequential(Dense(64, 512, "relu"), Dense(512, 512, "relu"),
                                      Dense(512, 10)))
    assert te.evolution.nparams(large.graph()) > 10 * te.evolution.nparams(small.graph())
    latency = LatencyObjective(x, repeats=5, warmup=1)
    for _ in range(3):       # not once by chance
        assert latency(large) > latency(small) > 0
    clone = pickle.loads(pickle.dumps(latency))
    assert clone(small) > 0 and latency.sense == "min"


def test_latency_settings_are_checked():
    with pytest.raises(ValueError, match="repeats"):
        LatencyObjective(np.ones((2, 2)), repeats=0)
    with pytest.raises(ValueError, match="non-empty"):
        LatencyObjective(np.ones((0, 2)))


def test_ewma_blends_the_scalar_and_objectives_keep_the_vector():
    parent = FittedCandidate(CandidateModel(Dense(2, 2)), _value(0.8))
    child = te.new_candidate(parent, lambda v: v)
    f = ObjectivesFitness(te.EwmaFitness(lambda c: 0.6), [FitnessObjective("blended"),
                                                          ParamsObjective()])
    value = fitness_of(f, child)
    assert value == pytest.approx(0.7) and value.values == (pytest.approx(0.7), 6.0)
