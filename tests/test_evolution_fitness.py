"""Fitness functions: the seed README's "Fitness functions" section, regression, the guard."""

import concurrent.futures
import copy
import logging
import math
import multiprocessing
import operator
import pickle

import numpy as np
import pytest
from evolution_cases import Slow

from tinyevo import backend as B
from tinyevo.evolution import (
    AbstractFitness,
    AccuracyFitness,
    AggFitness,
    CandidateModel,
    CandidateOptModel,
    EwmaFitness,
    FittedCandidate,
    GpuFitness,
    GpuIterator,
    LossFitness,
    MapEvaluator,
    MapFitness,
    Population,
    RepeatPartitionIterator,
    SizeFitness,
    TimeFitness,
    TrainAccuracyFitness,
    TrainThenFitness,
    copy_model,
    fitness_of,
    new_candidate,
    prior_fitness,
)
from tinyevo.layers import Dense, Sequential
from tinyevo.losses import logit_cross_entropy, mse
from tinyevo.optimizers import SGD, Adam


def _seed_candidates():
    # candidate1 = CandidateModel(x -> 3:-1:1); candidate2 = Dense(ones(3,3), 1:3)
    candidate1 = CandidateModel(lambda x: np.array([[3.0, 2.0, 1.0]], dtype=np.float32))
    dense = Dense(3, 3)
    dense.params["weight"][...] = 1.0
    dense.params["bias"][...] = np.arange(1, 4)
    return candidate1, CandidateModel(dense)


# Julia's label column 1:3 (onecold = 3) is a one-row "score" label here: argmax = 2.
ACC_DATA = [(np.ones((1, 3), np.float32), np.array([[1.0, 2.0, 3.0]], np.float32))]


def test_seed_fitness_examples():
    candidate1, candidate2 = _seed_candidates()
    accfitness = AccuracyFitness(ACC_DATA)
    assert fitness_of(accfitness, candidate1) == 0
    assert fitness_of(accfitness, candidate2) == 1

    timedfitness = TimeFitness(accfitness)
    c1time, c1acc = fitness_of(timedfitness, candidate1)
    c2time, c2acc = fitness_of(timedfitness, candidate2)
    assert (c1acc, c2acc) == (0, 1) and c1time > 0 and c2time > 0

    bigmodelfitness = SizeFitness()
    assert fitness_of(bigmodelfitness, candidate1) == 0
    assert fitness_of(bigmodelfitness, candidate2) == 12

    smallmodelfitness = MapFitness(lambda n: min(1, 1 / n) if n else 1, bigmodelfitness)
    assert fitness_of(smallmodelfitness, candidate1) == 1
    assert fitness_of(smallmodelfitness, candidate2) == 1 / 12

    combined = AggFitness(operator.add, accfitness, smallmodelfitness, bigmodelfitness)
    assert fitness_of(combined, candidate1) == 1
    assert fitness_of(combined, candidate2) == 13 + 1 / 12

    gpuaccfitness = GpuFitness(AccuracyFitness(GpuIterator(accfitness.dataset)))
    assert fitness_of(gpuaccfitness, candidate1) == 0
    assert fitness_of(gpuaccfitness, candidate2) == 1


def test_fitness_objects_are_callable_and_plain_callables_are_fitnesses():
    _, c2 = _seed_candidates()
    assert SizeFitness()(c2) == 12
    assert fitness_of(lambda c: 0.25, c2) == 0.25
    with pytest.raises(TypeError):
        fitness_of(3, c2)


def test_accuracy_with_integer_labels_over_batches():
    model = Dense(2, 2)
    model.params["weight"][...] = np.eye(2)
    x = np.array([[1, 0], [0, 1], [1, 0], [0, 1]], np.float32)
    y = np.array([0, 1, 1, 1])
    data = [(x[:2], y[:2]), (x[2:], y[2:])]
    assert fitness_of(AccuracyFitness(data), CandidateModel(model)) == 0.75


def _regression(n=64, rng=None):
    rng = rng or np.random.default_rng(0)
    x = rng.standard_normal((n, 3), dtype=np.float32)
    y = (x @ np.array([[1.0], [-2.0], [0.5]], np.float32)).astype(np.float32)
    return x, y


def test_loss_fitness_maps_mse_so_that_higher_is_better():
    x, y = _regression()
    data = [(x[:32], y[:32]), (x[32:], y[32:])]
    perfect = Dense(3, 1)
    perfect.params["weight"][...] = np.array([[1.0, -2.0, 0.5]])
    assert fitness_of(LossFitness(data), CandidateModel(perfect)) == pytest.approx(1.0)
    zero = Dense(3, 1)
    zero.params["weight"][...] = 0.0
    expected = 1.0 / (1.0 + float(np.mean(y ** 2)))
    assert fitness_of(LossFitness(data, mse), CandidateModel(zero)) == pytest.approx(expected,
                                                                                 rel=1e-5)


def test_train_then_fitness_trains_regression_and_improves_loss_fitness():
    x, y = _regression(128)
    data = [(x[i:i + 16], y[i:i + 16]) for i in range(0, 128, 16)]
    cand = CandidateModel(Sequential(Dense(3, 1)))
    before = fitness_of(LossFitness(data), cand)
    f = TrainThenFitness(data * 5, mse, SGD(0.05), LossFitness(data))
    after = fitness_of(f, cand)
    assert after > before and after > 0.9


def _classification(n=64, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 4), dtype=np.float32)
    y = (x[:, 0] > 0).astype(np.int64)
    return x, y


def test_train_then_fitness_uses_the_candidate_opt_and_wipes_its_state():
    x, y = _classification()
    data = [(x[:32], y[:32]), (x[32:], y[32:])]
    own = Adam(0.01)
    cand = CandidateOptModel(own, Sequential(Dense(4, 2)))
    w0 = cand.model[0].params["weight"].copy()
    f = TrainThenFitness(data, logit_cross_entropy, SGD(0.0), AccuracyFitness(data))
    value = fitness_of(f, cand)
    assert 0 <= value <= 1
    assert not np.array_equal(w0, cand.model[0].params["weight"])  # own Adam, not SGD(0)
    assert len(own._state) == 0  # state wiped after training


def test_train_then_fitness_can_keep_the_candidate_opt_state_between_evaluations():
    x, y = _classification()
    data = [(x[:32], y[:32]), (x[32:], y[32:])]
    kept, wiped = Adam(0.01), Adam(0.01)
    a = CandidateOptModel(kept, Sequential(Dense(4, 2)))
    b = CandidateOptModel(wiped, copy_model(a.model))
    keep = TrainThenFitness(data, logit_cross_entropy, SGD(0.0), AccuracyFitness(data),
                            keep_optimizer_state=True)
    fitness_of(keep, a)
    layer = a.model[0]
    assert kept._state[layer]["weight"]["t"] == 2          # two batches
    fitness_of(keep, a)
    assert kept._state[layer]["weight"]["t"] == 4          # carried on, not restarted
    wipe = TrainThenFitness(data, logit_cross_entropy, SGD(0.0), AccuracyFitness(data))
    fitness_of(wipe, b)
    fitness_of(wipe, b)
    assert len(wiped._state) == 0
    assert not np.allclose(a.model[0].params["weight"], b.model[0].params["weight"])
    # A pass that diverges leaves no state behind to poison the next one.
    bad = [(np.full((4, 4), np.inf, np.float32), np.zeros(4, np.int64))]
    f = TrainThenFitness(bad, logit_cross_entropy, SGD(0.0), AccuracyFitness(data),
                         keep_optimizer_state=True)
    assert fitness_of(f, a) == 0.0 and len(kept._state) == 0


def test_train_then_fitness_lr_schedule_scales_each_step_and_restores_the_rate():
    from tinyevo.evolution.fitness import cosine_schedule

    x, y = _classification()
    data = [(x[i:i + 16], y[i:i + 16]) for i in range(0, 64, 16)]     # 4 steps

    class Spy(SGD):
        seen: list = []

        def update(self, model):
            Spy.seen.append(self.learning_rate)
            super().update(model)

    own = Spy(0.2)
    cand = CandidateOptModel(own, Sequential(Dense(4, 2)))
    f = TrainThenFitness(data, logit_cross_entropy, SGD(0.0), AccuracyFitness(data),
                         lr_schedule=cosine_schedule)
    fitness_of(f, cand)
    np.testing.assert_allclose(Spy.seen, [0.2 * cosine_schedule(i, 4) for i in range(4)])
    assert Spy.seen[0] == pytest.approx(0.2) and Spy.seen[-1] < 0.05
    assert own.learning_rate == 0.2                  # the searched rate is the candidate's
    with pytest.raises(ValueError, match="lr_schedule"):
        TrainThenFitness(data, logit_cross_entropy, SGD(0.1), AccuracyFitness(data),
                         lr_schedule=0.5)


def test_train_then_fitness_default_opt_is_copied_not_shared():
    x, y = _classification()
    default = Adam(0.01)
    f = TrainThenFitness([(x, y)], logit_cross_entropy, default, AccuracyFitness([(x, y)]))
    fitness_of(f, CandidateModel(Sequential(Dense(4, 2))))
    assert len(default._state) == 0


def test_train_then_fitness_picks_the_generation_partition():
    x, y = _classification(64)
    batches = [(x[i:i + 8], y[i:i + 8]) for i in range(0, 64, 8)]
    seen = []

    class Recorder:
        def __init__(self, model):
            self.model = model

        def __call__(self, xb):
            seen.append(float(xb[0, 0]))
            return self.model(xb)

        def forward(self, xb, train=False):
            seen.append(float(xb[0, 0]))
            return self.model.forward(xb, train=train)

        def layers(self):
            return self.model.layers()

    f = TrainThenFitness(RepeatPartitionIterator(batches, 2), logit_cross_entropy, SGD(0.01),
                         AccuracyFitness(batches[:1]))
    for gen in (1, 1, 2):
        fitness_of(f, CandidateModel(Recorder(Sequential(Dense(4, 2)))), gen)
    first, second = [float(b[0][0, 0]) for b in batches[:2]], [float(b[0][0, 0]) for b in
                                                                 batches[2:4]]
    # each call: 2 training batches + 1 validation batch
    assert seen == first + [first[0]] + first + [first[0]] + second + [first[0]]


def test_train_accuracy_fitness_counts_training_hits():
    x, y = _classification(256)
    data = [(x[i:i + 32], y[i:i + 32]) for i in range(0, 256, 32)]
    cand = CandidateModel(Sequential(Dense(4, 2)))
    frozen = fitness_of(TrainAccuracyFitness(data, logit_cross_entropy, SGD(0.0)), cand)
    assert frozen == fitness_of(AccuracyFitness(data), cand)  # nothing learnt: same hits
    learning = TrainAccuracyFitness(data, logit_cross_entropy, Adam(0.05))
    values = [fitness_of(learning, cand) for _ in range(6)]  # the initial weights vary
    assert values[-1] > max(frozen, 0.8)


def test_guard_nan_raise_and_timeout_give_invalid_fitness_and_log(caplog):
    x, y = _classification(64)
    data = [(x[i:i + 16], y[i:i + 16]) for i in range(0, 64, 16)]
    f = TrainThenFitness(data, logit_cross_entropy, Adam(0.01), AccuracyFitness(data),
                         invalidfitness=-1.0, time_limit=0.25)
    diverging = CandidateOptModel(SGD(1e30), Sequential(Dense(4, 8, "relu"), Dense(8, 2)))
    raising = CandidateModel(Sequential(Dense(7, 2)))  # wrong input size: the layer raises
    slow = CandidateModel(Slow(Sequential(Dense(4, 2)), 0.3))
    with caplog.at_level(logging.WARNING, logger="tinyevo"):
        assert fitness_of(f, diverging) == -1.0
        assert fitness_of(f, raising) == -1.0
        assert fitness_of(f, slow) == -1.0
    text = caplog.text
    assert "NaN/Inf" in text and "ValueError" in text and "time budget" in text
    assert 0 <= fitness_of(f, CandidateModel(Sequential(Dense(4, 2)))) <= 1


@pytest.mark.parametrize("xp", ["numpy", pytest.param("cupy", marks=pytest.mark.gpu)],
                         indirect=True)
def test_accuracy_and_training_on_the_backend(xp):
    x, y = _classification(64)
    data = GpuIterator([(x[:32], y[:32]), (x[32:], y[32:])])
    model = Sequential(Dense(4, 2))
    for layer in model.layers():
        layer.to()
    f = GpuFitness(TrainThenFitness(data, logit_cross_entropy, Adam(0.01),
                                    AccuracyFitness(data)))
    value = fitness_of(f, CandidateModel(model))
    assert isinstance(value, float) and 0 <= value <= 1
    assert B.get_array_module(model[0].params["weight"]) is xp


# --------------------------------------------------------------------- EwmaFitness
def _six_tenths(c):
    return 0.6


class _Constant(AbstractFitness):
    def __init__(self, value, invalidfitness):
        self.value, self.invalidfitness = value, invalidfitness

    def __call__(self, candidate, generation=None):
        return self.value


def _child_of(value):
    """A child (not yet evaluated) of a parent evaluated to ``value``."""
    parent = FittedCandidate(CandidateModel(Sequential(Dense(2, 2))), value, 1)
    return new_candidate(parent, copy_model)


def test_ewma_fitness_blends_a_child_with_its_parent_as_the_seed_does():
    child = _child_of(0.8)
    assert child.fitness is None and prior_fitness(child) == 0.8  # unevaluated, with a prior
    assert fitness_of(EwmaFitness(_six_tenths), child) == pytest.approx(0.7)
    assert fitness_of(EwmaFitness(_six_tenths, alpha=0.25), child) == pytest.approx(0.65)
    assert fitness_of(EwmaFitness(_six_tenths, alpha=0), child) == 0.6
    assert prior_fitness(_child_of(0.8).new_candidate(copy_model)) == 0.8  # a child's child
    fresh = CandidateModel(Sequential(Dense(2, 2)))
    assert prior_fitness(fresh) is None and prior_fitness(fresh, -1) == -1
    assert fitness_of(EwmaFitness(_six_tenths), fresh) == 0.6


def test_ewma_fitness_blends_an_elite_with_its_own_last_fitness():
    values = iter([0.8, 0.6, 0.6])
    f = EwmaFitness(lambda c: next(values))
    pop = Population([CandidateModel(Sequential(Dense(2, 2)))]).evaluate(f)
    assert pop.fitnesses() == [0.8]                       # fresh: the base value
    pop = Population(pop.members, 2).evaluate(f)
    assert pop.fitnesses() == [pytest.approx(0.7)]        # 0.5 * 0.6 + 0.5 * 0.8
    assert prior_fitness(pop[0].candidate) == 0.8 and prior_fitness(pop[0]) == pop[0].fitness
    pop = Population(pop.members, 3).evaluate(f)
    assert pop.fitnesses() == [pytest.approx(0.65)]       # an average over the generations


def test_ewma_fitness_keeps_an_invalid_candidate_invalid():
    x, y = _classification(64)
    data = [(x[i:i + 16], y[i:i + 16]) for i in range(0, 64, 16)]
    base = TrainThenFitness(data, logit_cross_entropy, Adam(0.01), AccuracyFitness(data),
                            invalidfitness=-1.0)
    f = EwmaFitness(base)
    parent = FittedCandidate(CandidateOptModel(SGD(1e30), Sequential(Dense(4, 8, "relu"),
                                                                     Dense(8, 2))), 0.8, 1)
    diverging = new_candidate(parent, copy.deepcopy)
    assert fitness_of(f, diverging) == -1.0                  # not 0.5 * -1 + 0.5 * 0.8
    assert f.invalidfitness == -1.0                       # what evaluators give a lost task
    assert not hasattr(EwmaFitness(_six_tenths), "invalidfitness")
    # A failed evaluation is no measurement: a child of an invalid parent is not pulled down.
    f = EwmaFitness(_Constant(0.6, invalidfitness=-1.0))
    assert fitness_of(f, _child_of(-1.0)) == 0.6
    assert fitness_of(f, _child_of(0.8)) == pytest.approx(0.7)


def test_ewma_fitness_passes_non_numbers_through_and_checks_alpha():
    assert fitness_of(EwmaFitness(lambda c: (1, 2)), _child_of(0.8)) == (1, 2)
    assert fitness_of(EwmaFitness(_six_tenths), _child_of((1, 2))) == 0.6
    assert fitness_of(EwmaFitness(_six_tenths), _child_of(math.nan)) == 0.6
    for bad in (1, 1.5, -0.1, math.nan, True, "0.5", None):
        with pytest.raises(ValueError, match=r"alpha must be a number in \[0, 1\)"):
            EwmaFitness(_six_tenths, bad)
    assert repr(EwmaFitness(SizeFitness(), 0.25)) == "EwmaFitness(SizeFitness(), alpha=0.25)"


def test_the_prior_travels_with_a_candidate_to_a_worker_process():
    child = _child_of(0.8)
    assert prior_fitness(pickle.loads(pickle.dumps(child))) == 0.8
    elite = FittedCandidate(CandidateModel(Sequential(Dense(2, 2))), 0.4, 1)
    ctx = multiprocessing.get_context("forkserver")
    with concurrent.futures.ProcessPoolExecutor(1, mp_context=ctx) as pool:
        pop = Population([child, elite], 2).evaluate(EwmaFitness(_six_tenths),
                                                      MapEvaluator(pool.map))
    assert pop.fitnesses() == [pytest.approx(0.7), pytest.approx(0.5)]
    assert [prior_fitness(c.candidate) for c in pop] == [0.8, 0.4]  # came back with it
