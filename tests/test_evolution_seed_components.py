"""The seed's remaining components: ReBatchingIterator, SeedIterator, LogFitness, MapCandidate
(the batch-size search built on them is tests/test_batch_size_search.py)."""

import logging
import pickle

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import tinyevo as te
from tinyevo import backend as B
from tinyevo.evolution import (
    BatchIterator,
    BatchSizeIteratorMap,
    CandidateDataIterMap,
    CandidateModel,
    CandidateOptModel,
    CrossoverThenMutate,
    EwmaFitness,
    FittedCandidate,
    IteratorMapCrossover,
    LearningRateCrossover,
    LearningRateMutation,
    LogFitness,
    MapCandidate,
    MutationChain,
    MutationProbability,
    OptimizerCrossover,
    OptimizerMutation,
    Population,
    ReBatchingIterator,
    SeedIterator,
    SizeFitness,
    TrainBatchSizeMutation,
    TrainThenFitness,
    VertexMutation,
    evolve_model,
    fitness_of,
)
from tinyevo.evolution.mutation.candidate import acts_on
from tinyevo.optimizers import SGD, Adam, Momentum


def _graph(nin=4, width=6, nout=3):
    inp = te.input_vertex("in", nin, "dense")
    hidden = te.vertex(te.layers.Dense(nin, width, "relu"), inp)
    return te.CompGraph(inp, te.vertex(te.layers.Dense(width, nout), hidden))


# ---------------------------------------------------------------- ReBatchingIterator

def test_rebatching_joins_and_splits_batches_keeping_sample_order():
    x, y = np.arange(20).reshape(10, 2), np.arange(10)
    smaller = list(ReBatchingIterator(BatchIterator((x, y), 4), 3))
    assert [len(b[1]) for b in smaller] == [3, 3, 3, 1]
    assert np.concatenate([b[0] for b in smaller]).tolist() == x.tolist()
    assert np.concatenate([b[1] for b in smaller]).tolist() == y.tolist()
    larger = ReBatchingIterator(BatchIterator(np.arange(10), 2), 5)
    assert [b.tolist() for b in larger] == [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9]]
    assert len(larger) == 2 and len(ReBatchingIterator(BatchIterator(y, 4), 3)) == 4


def test_rebatching_to_the_same_size_gives_the_batches_themselves():
    x = np.arange(8.0)
    same = list(ReBatchingIterator(BatchIterator(x, 4), 4))
    assert all(np.shares_memory(b, x) for b in same)


def test_rebatching_counts_samples_of_iterators_without_a_count():
    batches = [np.zeros(3), np.zeros(5)]                 # a plain list of batches
    assert len(ReBatchingIterator(batches, 4)) == 2
    assert ReBatchingIterator(ReBatchingIterator(batches, 3), 2).nsamples == 8


@given(sizes=st.lists(st.integers(1, 7), min_size=1, max_size=6), batch_size=st.integers(1, 9))
def test_rebatching_any_batches_gives_every_sample_once_in_order(sizes, batch_size):
    n = sum(sizes)
    cuts = np.cumsum([0] + sizes)
    data = [(np.arange(n)[a:b], -np.arange(n)[a:b]) for a, b in zip(cuts[:-1], cuts[1:])]
    out = list(ReBatchingIterator(data, batch_size))
    assert [len(b[0]) for b in out[:-1]] == [batch_size] * (len(out) - 1)
    assert 1 <= len(out[-1][0]) <= batch_size and len(out) == len(ReBatchingIterator(data,
                                                                                    batch_size))
    assert np.concatenate([b[0] for b in out]).tolist() == list(range(n))
    assert np.concatenate([b[1] for b in out]).tolist() == [-i for i in range(n)]


@pytest.mark.parametrize("bad", [0, -2, 1.5, True, "8"])
def test_rebatching_refuses_a_batch_size_that_is_no_positive_int(bad):
    with pytest.raises(ValueError, match="positive integer"):
        ReBatchingIterator([], bad)


# ---------------------------------------------------------------- SeedIterator

def test_seed_iterator_makes_every_pass_draw_the_same_numbers():
    shuffled = BatchIterator(np.arange(12), 3, shuffle=True)
    assert [b.tolist() for b in shuffled] != [b.tolist() for b in shuffled]
    seeded = SeedIterator(shuffled)
    assert [b.tolist() for b in seeded] == [b.tolist() for b in seeded]
    # each element is drawn after its own seed: augmentation per batch is the same too
    noisy = SeedIterator(te.MapIterator(lambda i: B.rng().random(), range(3)), seed=4)
    draws = list(noisy)
    assert list(noisy) == draws and len(set(draws)) == 3


def test_seed_iterator_reseeds_a_given_generator_in_place():
    rng = np.random.default_rng(0)
    it = SeedIterator(BatchIterator(np.arange(9), 3, shuffle=True, rng=rng), rng=rng, seed=7)
    first = [b.tolist() for b in it]
    rng.random(100)                                   # anything in between
    assert [b.tolist() for b in it] == first
    other = SeedIterator(BatchIterator(np.arange(9), 3, shuffle=True, rng=rng), rng=rng, seed=8)
    assert [b.tolist() for b in other] != first
    assert len(it) == 3 and it.seed == 7


def test_seed_iterator_draws_its_seed_from_the_generator_it_reseeds():
    te.seed(3)
    a = SeedIterator(range(2)).seed
    te.seed(3)
    assert SeedIterator(range(2)).seed == a
    with pytest.raises(ValueError, match="seed must be"):
        SeedIterator(range(2), seed=-1)


# ---------------------------------------------------------------- LogFitness

def test_log_fitness_logs_each_candidate_numbered_per_generation(caplog):
    f = LogFitness(SizeFitness())
    c = CandidateModel(_graph())
    with caplog.at_level(logging.INFO, logger="tinyevo.evolution"):
        values = [fitness_of(f, c, 1), fitness_of(f, c, 1), fitness_of(f, c, 2)]
    assert values == [c.graph().nparams()] * 3
    messages = [r.getMessage() for r in caplog.records]
    assert messages[0] == "candidate   1: 3 vertices, 51 parameters, fitness 51"
    assert [m.split(":")[0] for m in messages] == ["candidate   1", "candidate   2",
                                                    "candidate   1"]


def test_log_fitness_takes_a_message_level_and_logger_and_passes_the_invalid_fitness(caplog):
    logger = logging.getLogger("test.logfitness")
    f = LogFitness(lambda c: 0.25, lambda i, c, v: f"#{i} {v}", logging.DEBUG, logger)
    with caplog.at_level(logging.DEBUG, logger="test.logfitness"):
        assert fitness_of(f, CandidateModel(None)) == 0.25
    assert [(r.levelno, r.getMessage()) for r in caplog.records] == [(logging.DEBUG, "#1 0.25")]
    train = TrainThenFitness([], None, SGD(), SizeFitness(), invalidfitness=-1.0)
    assert LogFitness(train).invalidfitness == -1.0
    assert EwmaFitness(LogFitness(train)).invalidfitness == -1.0
    assert not hasattr(LogFitness(SizeFitness()), "invalidfitness")
    assert isinstance(pickle.loads(pickle.dumps(LogFitness(SizeFitness()))).f, SizeFitness)


def test_log_fitness_evaluates_a_population_as_its_base_does(caplog):
    population = Population([CandidateModel(_graph(width=w)) for w in (2, 5)])
    with caplog.at_level(logging.INFO, logger="tinyevo.evolution"):
        fitted = population.evaluate(LogFitness(SizeFitness()))
    assert fitted.fitnesses() == population.evaluate(SizeFitness()).fitnesses()
    assert len(caplog.records) == 2


# ---------------------------------------------------------------- MapCandidate

def test_each_operator_acts_on_what_its_basic_operators_say():
    assert acts_on(VertexMutation(te.NoutMutation(-0.1, 0.1))) == "model"
    assert acts_on(lambda model: model) == "model"
    assert acts_on(MutationChain(LearningRateMutation(),
                                 MutationProbability(OptimizerMutation(), 0.1))) == "optimizer"
    assert acts_on(MutationChain(MutationProbability(LearningRateCrossover(), 0.4),
                                 OptimizerCrossover())) == "optimizer"
    assert acts_on(MutationProbability(TrainBatchSizeMutation(-0.2, 0.2), 0.1)) == "itermap"
    assert acts_on(IteratorMapCrossover()) == "itermap"
    with pytest.raises(ValueError, match="acts on"):
        acts_on(MutationChain(LearningRateMutation(), TrainBatchSizeMutation(0.1, 0.1)))
    with pytest.raises(ValueError, match="both act on optimizers"):
        MapCandidate(LearningRateMutation(), OptimizerMutation())
    with pytest.raises(TypeError, match="callable"):
        MapCandidate(3)


def test_map_candidate_mutates_each_part_with_its_operator_on_copies():
    parent = CandidateDataIterMap(BatchSizeIteratorMap(16), CandidateOptModel(SGD(0.1),
                                                                                _graph()))
    def grow(graph):
        te.change_nout(graph, {graph.vertices[1]: 4})
    child = MapCandidate(grow, OptimizerMutation([Momentum]),
                         TrainBatchSizeMutation(1.0, 1.0))(parent)
    assert isinstance(child, CandidateDataIterMap)
    assert child.graph() is not parent.graph() and child.graph().nparams() > 51
    assert parent.graph().nparams() == 51
    assert type(child.opt()) is Momentum and child.opt().learning_rate == 0.1
    assert type(parent.opt()) is SGD
    assert (child.itermap().batch_size, parent.itermap().batch_size) == (32, 16)
    # without operators: a copy of each part
    copy = MapCandidate()(parent)
    assert copy.graph() is not parent.graph() and copy.opt() is not parent.opt()
    assert copy.itermap() == parent.itermap() and copy.graph().nparams() == 51


def test_map_candidate_on_a_fitted_candidate_gives_a_child_that_remembers_its_fitness():
    parent = FittedCandidate(CandidateDataIterMap(BatchSizeIteratorMap(8), CandidateModel(
        _graph())), 0.75, 2)
    child = MapCandidate(TrainBatchSizeMutation(-0.5, -0.5))(parent)
    assert child.fitness is None and child.prior_fitness == 0.75
    assert child.itermap().batch_size == 4


def test_map_candidate_crosses_a_pair_over_part_by_part():
    a = CandidateDataIterMap(BatchSizeIteratorMap(16), CandidateOptModel(Adam(1e-3), _graph()))
    b = CandidateDataIterMap(BatchSizeIteratorMap(64), CandidateOptModel(Adam(1e-2), _graph()))
    c1, c2 = MapCandidate(LearningRateCrossover(), IteratorMapCrossover())((a, b))
    assert (c1.itermap().batch_size, c2.itermap().batch_size) == (64, 16)
    assert (c1.opt().learning_rate, c2.opt().learning_rate) == (1e-2, 1e-3)
    assert c1.graph() is not a.graph() and c1.opt() is not b.opt()
    assert c1.itermap() is not b.itermap()
    assert (a.itermap().batch_size, b.itermap().batch_size) == (16, 64)


def test_map_candidate_is_an_evolve_model_for_crossover_then_mutate():
    mutate = MapCandidate(lambda g: g, LearningRateMutation(), TrainBatchSizeMutation(1.0, 1.0))
    assert isinstance(mutate, evolve_model)
    pairs = [FittedCandidate(CandidateDataIterMap(BatchSizeIteratorMap(s), CandidateOptModel(
        SGD(0.1), _graph())), 0.5, 1) for s in (4, 8)]
    children = CrossoverThenMutate(MapCandidate(IteratorMapCrossover()), mutate)(pairs)
    assert [c.itermap().batch_size for c in children] == [16, 8]
    again = pickle.loads(pickle.dumps(MapCandidate(TrainBatchSizeMutation(1.0, 1.0))))
    assert again(children[0]).itermap().batch_size == 32
