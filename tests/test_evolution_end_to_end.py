"""The seed's "very basic example" end to end, with Sequential dense models and a weight/activation
mutation (graph mutations come with issue 4); elitism; the guard inside a whole generation."""

import copy
import logging

import numpy as np
from evolution_cases import Slow

import tinyevo
from tinyevo import backend as B
from tinyevo.evolution import (
    AccuracyFitness,
    CandidateModel,
    CandidateOptModel,
    CombinedEvolution,
    EliteSelection,
    EvolveCandidates,
    FittedCandidate,
    Population,
    SusSelection,
    TrainThenFitness,
    evolve,
    evolve_model,
    fitness_of,
    onehot,
)
from tinyevo.layers import Dense, Sequential
from tinyevo.losses import logit_cross_entropy
from tinyevo.optimizers import SGD, Adam

NLABELS, NINPUTS = 3, 5
ACTIVATIONS = ["identity", "relu", "elu", "selu"]


def random_model(rng=None):
    """The seed's initial search space: 1-3 hidden dense layers of width 3-10, then the output."""
    rng = B.rng(rng)
    layers, nin = [], NINPUTS
    for _ in range(int(rng.integers(1, 4))):
        nout = int(rng.integers(3, 11))
        layers.append(Dense(nin, nout, ACTIVATIONS[int(rng.integers(len(ACTIVATIONS)))]))
        nin = nout
    return Sequential(*layers, Dense(nin, NLABELS, "identity"))


class Perturb:
    """A simple mutation: with probability p per hidden layer, a new activation; always a small
    Gaussian perturbation of the weights. The output layer's activation is left alone."""

    def __init__(self, p=0.4, scale=0.1, rng=None):
        self.p, self.scale, self.rng = p, scale, rng

    def __call__(self, model):
        rng = B.rng(self.rng)
        layers = list(model.layers())
        for layer in layers[:-1]:
            if rng.random() < self.p:
                layer.activation = ACTIVATIONS[int(rng.integers(len(ACTIVATIONS)))]
        for layer in layers:
            w = layer.params["weight"]
            w += self.scale * rng.standard_normal(w.shape, dtype=np.float32)


def test_seed_very_basic_example():
    tinyevo.seed(0)
    models = [random_model() for _ in range(5)]
    population = Population([CandidateModel(m) for m in models])
    assert population.generation == 1

    rng = np.random.default_rng(0)
    batchsize = 4
    datasettrain = [(rng.standard_normal((batchsize, NINPUTS), dtype=np.float32),
                     onehot(rng.integers(0, NLABELS, batchsize), NLABELS))]
    datasetvalidate = [(rng.standard_normal((batchsize, NINPUTS), dtype=np.float32),
                        onehot(rng.integers(0, NLABELS, batchsize), NLABELS))]
    fitnessfunction = TrainThenFitness(dataiter=datasettrain, defaultloss=logit_cross_entropy,
                                       defaultopt=Adam(), fitstrat=AccuracyFitness(datasetvalidate))

    elites = EliteSelection(2)
    mutate = SusSelection(3, EvolveCandidates(evolve_model(Perturb())))
    selection = CombinedEvolution(elites, mutate)

    newpopulation = evolve(selection, fitnessfunction, population)
    assert newpopulation != population and newpopulation.generation == 2
    _check_generation(population, newpopulation)
    newnewpopulation = evolve(selection, fitnessfunction, newpopulation)
    assert newnewpopulation != newpopulation and newnewpopulation.generation == 3
    _check_generation(newpopulation, newnewpopulation)


def _check_generation(old, new):
    evaluated = new.previous
    assert evaluated.generation == old.generation and evaluated.fitted
    assert len(new) == 5
    # the two elites are the two best of the evaluated generation, kept as they are
    best_two = evaluated.best_first()[:2]
    assert [c.candidate for c in new.members[:2]] == [c.candidate for c in best_two]
    assert all(isinstance(c, FittedCandidate) for c in new.members[:2])
    # three children: new candidates with new models (copies, not the parents' objects)
    old_models = {id(c.graph()) for c in evaluated}
    children = new.members[2:]
    assert all(not isinstance(c, FittedCandidate) for c in children)
    assert all(id(c.graph()) not in old_models for c in children)


def _blobs(n, rng):
    centers = np.array([[2, 0, 0, 0, 0], [0, 2, 0, 0, 0], [0, 0, 2, 0, 0]], np.float32)
    y = rng.integers(0, NLABELS, n)
    x = centers[y] + rng.standard_normal((n, NINPUTS), dtype=np.float32)
    return x, y


def test_best_fitness_never_decreases_with_elites():
    """Elitism's promise holds when fitness is a pure function of the model: with a fitness that
    does not train (accuracy of the inherited, mutated weights), an unchanged elite scores the
    same again, so each generation's best is at least the last one's. (With TrainThenFitness the
    seed retrains elites every generation, and a retrained elite may score lower.)"""
    tinyevo.seed(1)
    rng = np.random.default_rng(1)
    x, y = _blobs(120, rng)
    accuracy = AccuracyFitness([(x, y)])
    population = Population([CandidateModel(random_model()) for _ in range(6)])
    strategy = CombinedEvolution(
        EliteSelection(2), SusSelection(4, EvolveCandidates(evolve_model(Perturb(scale=0.3)))))
    bests = []
    for _ in range(20):
        population = evolve(strategy, accuracy, population)
        bests.append(population.previous.best().fitness)
    assert all(b2 >= b1 for b1, b2 in zip(bests, bests[1:]))
    assert bests[-1] > bests[0]  # and the search does find better weights


def test_guard_in_a_population_invalidates_only_the_broken(caplog):
    tinyevo.seed(2)
    rng = np.random.default_rng(2)
    x, y = _blobs(96, rng)
    train = [(x[i:i + 16], y[i:i + 16]) for i in range(0, 96, 16)]
    f = TrainThenFitness(train, logit_cross_entropy, Adam(0.01), AccuracyFitness([(x, y)]),
                         invalidfitness=0.0, time_limit=0.25)
    good = [random_model() for _ in range(2)]
    alone = [fitness_of(f, CandidateModel(copy.deepcopy(m))) for m in good]
    diverging = CandidateOptModel(SGD(1e30), Sequential(Dense(5, 8, "relu"), Dense(8, 3)))
    raising = CandidateModel(Sequential(Dense(4, 3)))  # expects 4 features, gets 5
    slow = CandidateModel(Slow(Sequential(Dense(5, 3)), 0.3))  # over budget at once
    members = [CandidateModel(good[0]), diverging, raising, slow, CandidateModel(good[1])]
    strategy = CombinedEvolution(EliteSelection(2),
                                 SusSelection(3, EvolveCandidates(evolve_model(Perturb()))))
    with caplog.at_level(logging.WARNING, logger="tinyevo"):
        new = evolve(strategy, f, Population(members))
    assert new.generation == 2 and len(new) == 5
    values = new.previous.fitnesses()
    assert values[1:4] == [0.0, 0.0, 0.0]
    assert [values[0], values[4]] == alone and min(alone) > 0.0
    assert caplog.text.count("invalid fitness") == 3
