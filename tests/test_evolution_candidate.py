"""Candidates: the seed README's "Candidate utilities" section and the accessors."""

from dataclasses import dataclass

import numpy as np
import pytest

from tinyevo.evolution import (
    AbstractCandidate,
    AbstractFitness,
    CandidateModel,
    CandidateOptModel,
    FittedCandidate,
    TimeFitness,
    copy_model,
    evolve_model,
    fitness_of,
    graph,
    lossfun,
    new_candidate,
    nparams,
    opt,
)
from tinyevo.graph import CompGraph, input_vertex, vertex
from tinyevo.layers import Dense, Sequential
from tinyevo.optimizers import SGD, Adam


# The seed's ExampleCandidate and ExampleFitness, in Python.
@dataclass
class ExampleCandidate(AbstractCandidate):
    a: int
    b: int


def aval(c, default=None):
    return getattr(c, "a", default)


def bval(c, default=None):
    return getattr(c, "b", default)


class ExampleFitness(AbstractFitness):
    def __call__(self, c, generation=None):
        return aval(c, 10) - bval(c, 5)


def test_example_candidate_and_fitness():
    assert fitness_of(ExampleFitness(), ExampleCandidate(4, 3)) == 1
    ctime, metric = fitness_of(TimeFitness(ExampleFitness()), ExampleCandidate(3, 1))
    assert metric == 2
    assert ctime > 0


def _graph():
    inp = input_vertex("in", 3)
    return CompGraph(inp, vertex(Dense(4, 2), vertex(Dense(3, 4, "relu"), inp)))


@pytest.mark.parametrize("make", [
    lambda: Dense(3, 2), lambda: Sequential(Dense(3, 4, "relu"), Dense(4, 2)), _graph,
    lambda: lambda x: x[:, :2] * 2,
], ids=["layer", "sequential", "graph", "function"])
def test_a_candidate_runs_any_model_by_calling_it(make):
    """A candidate's output is its model's ``model(x)``: a layer, a Sequential, a CompGraph or
    any function of the input."""
    model = make()
    x = np.ones((4, 3), np.float32)
    out = CandidateModel(model)(x)
    assert out.shape == (4, 2)
    np.testing.assert_array_equal(out, model(x))
    assert CandidateModel(model).predict(x).shape == (4,)


def test_example_fitness_uses_defaults_for_other_candidates():
    assert fitness_of(ExampleFitness(), CandidateModel(None)) == 10 - 5


def test_new_candidate_maps_every_dataclass_field():
    c = new_candidate(ExampleCandidate(4, 3), lambda v: v * 10)
    assert isinstance(c, ExampleCandidate) and (c.a, c.b) == (40, 30)


def test_accessors_default_unless_the_candidate_carries_the_property():
    model = Sequential(Dense(2, 3))
    c = CandidateModel(model)
    assert graph(c) is model and c.graph() is model
    assert opt(c) is None and opt(c, default="d") == "d"
    assert lossfun(c, default="l") == "l"
    o = Adam()
    co = CandidateOptModel(o, model)
    assert opt(co, default=SGD()) is o and graph(co) is model
    assert graph("not a candidate", default=1) == 1


def test_fitted_candidate_forwards_and_new_candidate_drops_fitness():
    c = ExampleCandidate(4, 3)
    f = FittedCandidate(c, 0.7, 2)
    assert (f.fitness, f.generation) == (0.7, 2)
    assert aval(f) == 4  # user accessors see through the wrapper
    child = new_candidate(f, lambda v: v + 1)
    assert isinstance(child, ExampleCandidate) and child.fitness is None
    assert FittedCandidate(f, 0.1, 3).candidate is c  # no nested wrappers


def test_new_candidate_needs_a_dataclass_or_an_override():
    class Plain(AbstractCandidate):
        pass

    with pytest.raises(NotImplementedError, match="dataclass"):
        new_candidate(Plain(), lambda v: v)
    with pytest.raises(TypeError):
        new_candidate(3, lambda v: v)


def test_evolve_model_copies_the_model_and_inherits_parameters():
    model = Sequential(Dense(2, 3, "relu"), Dense(3, 2))
    o = Adam(0.01)
    parent = CandidateOptModel(o, model)
    seen = []

    def mutation(m):
        seen.append(m)
        m[0].activation = "elu"

    child = evolve_model(mutation)(FittedCandidate(parent, 0.5, 1))
    assert isinstance(child, CandidateOptModel)
    assert child.model is not model and seen == [child.model]
    assert model[0].activation == "relu" and child.model[0].activation == "elu"
    np.testing.assert_array_equal(child.model[1].params["weight"], model[1].params["weight"])
    assert child.model[1].params["weight"] is not model[1].params["weight"]
    assert child.optimizer is not o and child.optimizer.learning_rate == 0.01


def test_evolve_model_uses_a_returned_model_and_an_optimizer_mutation():
    replacement = Sequential(Dense(2, 2))

    def halve(o):
        o.learning_rate /= 2

    child = evolve_model(lambda m: replacement, opt_mutation=halve)(
        CandidateOptModel(SGD(0.1), Sequential(Dense(2, 5))))
    assert child.model is replacement and child.optimizer.learning_rate == 0.05


def test_copy_model_and_nparams():
    model = Sequential(Dense(3, 3))
    assert nparams(model) == 12 and nparams(Dense(3, 3)) == 12 and nparams(lambda x: x) == 0
    cp = copy_model(model)
    assert cp is not model and nparams(cp) == 12

    class WithCopy:
        def copy(self):
            return "copied"

    assert copy_model(WithCopy()) == "copied"
