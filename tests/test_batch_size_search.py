"""Batch size searched as the seed does: a candidate that carries its own iterator map
(CandidateDataIterMap of a BatchSizeIteratorMap), TrainBatchSizeMutation, IteratorMapCrossover,
and fit's ``batch_size_search``. The batch-size mutation changes the candidate's batches and
survives crossover and checkpoints."""

import collections
import json

import numpy as np
import pytest

import tinyevo as te
from tinyevo.app import defaults
from tinyevo.app.checkpoint import load_checkpoint, save_checkpoint
from tinyevo.app.config import FitConfig
from tinyevo.app.data import GenerationBatches
from tinyevo.evolution import (
    AccuracyFitness,
    BatchIterator,
    BatchSizeIteratorMap,
    CandidateDataIterMap,
    CandidateModel,
    CandidateOptModel,
    FittedCandidate,
    IteratorMapCrossover,
    MapCandidate,
    MutationProbability,
    Population,
    RepeatPartitionIterator,
    TrainBatchSizeMutation,
    TrainThenFitness,
    evolve_crossover,
    fitness_of,
    itermap,
    mutate_batch_size,
)
from tinyevo.layers import Dense
from tinyevo.losses import logit_cross_entropy
from tinyevo.optimizers import SGD, Adam


class SpyModel:
    """A dense classifier that records the size of every batch it trains on."""

    def __init__(self):
        self.layer, self.seen = Dense(4, 3), []

    def forward(self, x, train=False):
        if train:
            self.seen.append(len(x))
        return self.layer.forward(x, train)

    def __call__(self, x):
        return self.layer(x)

    def layers(self):
        return [self.layer]


def _data(n=40):
    rng = np.random.default_rng(0)
    return rng.standard_normal((n, 4)).astype(np.float32), rng.integers(0, 3, n)


def _fitness(n=40, batch=10):
    x, y = _data(n)
    train = RepeatPartitionIterator(BatchIterator((x, y), batch), 100)
    return TrainThenFitness(train, logit_cross_entropy, SGD(0.01), AccuracyFitness([(x, y)]))


def _graph():
    inp = te.input_vertex("in", 4, "dense")
    return te.CompGraph(inp, te.vertex(Dense(5, 3), te.vertex(Dense(4, 5, "relu"), inp)))


# ---------------------------------------------------------------- the candidate's batches

def test_a_candidate_trains_on_its_own_batch_size_and_others_on_the_fitness_batches():
    fitness = _fitness()
    plain, own = SpyModel(), SpyModel()
    fitness_of(fitness, CandidateModel(plain), 1)
    fitness_of(fitness, CandidateDataIterMap(BatchSizeIteratorMap(16), CandidateModel(own)), 1)
    assert plain.seen == [10, 10, 10, 10]
    assert own.seen == [16, 16, 8]               # the same 40 samples, in batches of 16


def test_the_batch_size_mutation_changes_the_batches_the_child_trains_on():
    parent = CandidateDataIterMap(BatchSizeIteratorMap(8), CandidateModel(SpyModel()))
    child = MapCandidate(TrainBatchSizeMutation(1.0, 1.0))(parent)
    assert (itermap(parent).batch_size, itermap(child).batch_size) == (8, 16)
    fitness = _fitness()
    fitness_of(fitness, parent, 1)
    fitness_of(fitness, child, 1)
    assert parent.graph().seen == [8] * 5 and child.graph().seen == [16, 16, 8]


def test_a_fitted_candidate_and_a_cosine_schedule_see_the_rebatched_steps():
    fitness = _fitness()
    fitness.lr_schedule = te.evolution.cosine_schedule
    steps = []
    fitness._train_loop = lambda model, opt, lossf, data, lr_at: steps.append(
        (len(data), [lr_at(i) for i in range(len(data))])) or (0, 0)
    c = FittedCandidate(CandidateDataIterMap(BatchSizeIteratorMap(16), CandidateOptModel(
        SGD(0.1), SpyModel())), 0.5, 1)
    fitness(c, 1)
    assert steps[0][0] == 3 and steps[0][1][0] == pytest.approx(0.1)


# ---------------------------------------------------------------- the mutation

def test_mutate_batch_size_follows_the_seed_rule():
    assert mutate_batch_size(int, 100, 0.1, 0.1) == 110
    assert mutate_batch_size(int, 100, -0.1, -0.1) == 90
    assert mutate_batch_size(int, 1, -0.9, -0.9) == 1           # never below 1
    powers = tuple(2 ** k for k in range(1, 11))                  # 2 .. 1024, 10 sizes
    assert mutate_batch_size(powers, 16, 0.1, 0.1) == 32          # one step up
    assert mutate_batch_size(powers, 16, -0.2, -0.2) == 4         # two steps down
    assert mutate_batch_size(powers, 20, 0.0, 0.0) == 16          # the nearest size
    assert mutate_batch_size(powers, 512, 0.5, 0.5) == 1024       # clamped at the end


def test_train_batch_size_mutation_draws_around_the_current_size():
    powers = [2 ** k for k in range(3, 11)]
    m = TrainBatchSizeMutation(0.2, -0.2, powers, rng=np.random.default_rng(0))   # any order
    counts = collections.Counter(m(BatchSizeIteratorMap(64)).batch_size for _ in range(400))
    assert set(counts) == {16, 32, 64, 128, 256} and counts[64] > counts[256]
    sizes = {TrainBatchSizeMutation(-0.5, 0.5)(BatchSizeIteratorMap(10)).batch_size
             for _ in range(200)}
    assert sizes <= set(range(5, 16)) and len(sizes) > 5
    unchanged = te.evolution.AbstractIteratorMap()
    assert TrainBatchSizeMutation(0.5, 0.5)(unchanged) is unchanged


@pytest.mark.parametrize("args, match", [
    ((-1.0, 0.2), "must be > -1"), ((0.1, float("nan")), "finite number"),
    ((0.1, 0.2, []), "quantizeto"), ((0.1, 0.2, [8, 0]), "quantizeto"),
])
def test_train_batch_size_mutation_refuses_bad_settings(args, match):
    with pytest.raises(ValueError, match=match):
        TrainBatchSizeMutation(*args)


def test_train_batch_size_mutation_refuses_what_is_no_iterator_map():
    with pytest.raises(TypeError, match="iterator maps"):
        TrainBatchSizeMutation(0.1, 0.1)(SGD())


# ---------------------------------------------------------------- the crossover

def test_the_crossover_swaps_batch_sizes_and_the_children_own_their_parts():
    a = CandidateDataIterMap(BatchSizeIteratorMap(16), CandidateOptModel(Adam(), _graph()))
    b = CandidateDataIterMap(BatchSizeIteratorMap(64), CandidateOptModel(Adam(), _graph()))
    c1, c2 = evolve_crossover(itermap_crossover=IteratorMapCrossover())((a, b))
    assert (itermap(c1).batch_size, itermap(c2).batch_size) == (64, 16)
    assert itermap(c1) is not itermap(b) and c1.graph() is not a.graph()
    kept = evolve_crossover(itermap_crossover=MutationProbability(IteratorMapCrossover(), 0.0))
    k1, k2 = kept((a, b))
    assert (itermap(k1).batch_size, itermap(k2).batch_size) == (16, 64)
    assert itermap(k1) is not itermap(a)
    # a pair where one has no map: nothing to swap
    n1, n2 = evolve_crossover(itermap_crossover=IteratorMapCrossover())(
        (a, CandidateOptModel(Adam(), _graph())))
    assert itermap(n1).batch_size == 16 and itermap(n2) is None


def test_a_child_of_crossover_trains_on_its_new_batch_size():
    a = CandidateDataIterMap(BatchSizeIteratorMap(8), CandidateModel(SpyModel()))
    b = CandidateDataIterMap(BatchSizeIteratorMap(20), CandidateModel(SpyModel()))
    c1, _ = MapCandidate(IteratorMapCrossover())((a, b))
    c1.graph().seen.clear()
    fitness_of(_fitness(), c1, 1)
    assert c1.graph().seen == [20, 20]


# ---------------------------------------------------------------- checkpoints

def _population(sizes):
    members = [FittedCandidate(CandidateDataIterMap(BatchSizeIteratorMap(s), CandidateOptModel(
        Adam(), _graph())), 0.5, 1) for s in sizes]
    return Population(members, 1)


def test_a_checkpoint_keeps_each_candidates_batch_size(tmp_path):
    hof = te.HallOfFame(2)
    population = _population([8, 32])
    hof.update(population)
    save_checkpoint(tmp_path, population, {}, hall_of_fame=hof)
    loaded, _ = load_checkpoint(tmp_path)
    assert [itermap(c).batch_size for c in loaded] == [8, 32]
    assert all(isinstance(c.candidate, CandidateDataIterMap) for c in loaded)
    assert sorted(itermap(c).batch_size for c in loaded.hall_of_fame) == [8, 32]
    assert isinstance(loaded.members[0].opt(), Adam)
    # an older tinyevo cannot read the batch sizes: the version says so
    assert te.app.read_json(tmp_path / "checkpoint" / "state.json")["version"] == 3


def test_a_checkpoint_refuses_a_bad_batch_size_and_a_map_it_cannot_hold(tmp_path):
    save_checkpoint(tmp_path, _population([8]), {})
    state = tmp_path / "checkpoint" / "state.json"
    doc = json.loads(state.read_text())
    doc["members"][0]["batch_size"] = 0
    state.write_text(json.dumps(doc))
    with pytest.raises(ValueError, match="batch_size"):
        load_checkpoint(tmp_path)
    odd = Population([FittedCandidate(CandidateDataIterMap(sorted, CandidateModel(_graph())),
                                      0.5, 1)])
    with pytest.raises(TypeError, match="BatchSizeIteratorMap"):
        save_checkpoint(tmp_path / "odd", odd, {})


# ---------------------------------------------------------------- fit

TINY = dict(population_size=4, batches_per_generation=3, batch_size=16, widths=(4, 8), seed=5)



def _summary(population):
    return [(c.fitness, itermap(c).batch_size, [v.name for v in c.graph().vertices])
            for c in population]


def test_fit_searches_batch_sizes_and_a_resumed_run_equals_the_uninterrupted_one(digits,
                                                                                 tmp_path):
    x, y = digits
    te.fit(x, y, generations=2, mdir=tmp_path / "a", batch_size_search=True, **TINY)
    resumed = te.fit(x, y, generations=5, mdir=tmp_path / "a", batch_size_search=True, **TINY)
    straight = te.fit(x, y, generations=5, batch_size_search=True, **TINY)
    assert _summary(resumed) == _summary(straight)
    assert len({itermap(c).batch_size for c in straight}) > 1
    assert {itermap(c).batch_size for c in straight} <= set(defaults.batch_size_choices(16))
    assert [itermap(c).batch_size for c in resumed.hall_of_fame] == \
        [itermap(c).batch_size for c in straight.hall_of_fame]
    saved = json.loads((tmp_path / "a" / "checkpoint" / "state.json").read_text())
    assert [m["batch_size"] for m in saved["members"]] == [s[1] for s in _summary(resumed)]
    assert saved["state"]["config"]["batch_size_search"] is True


def test_fit_without_the_setting_trains_every_candidate_on_the_fitness_batches(digits,
                                                                               tmp_path):
    x, y = digits
    population = te.fit(x, y, generations=2, mdir=tmp_path, **TINY)
    assert all(itermap(c) is None for c in population)
    saved = json.loads((tmp_path / "checkpoint" / "state.json").read_text())
    assert all("batch_size" not in m for m in saved["members"])
    with pytest.raises(ValueError, match="batch_size_search"):
        te.fit(x, y, generations=3, mdir=tmp_path, batch_size_search=True, **TINY)


def test_the_initial_batch_sizes_and_operators_are_autofluxs():
    assert defaults.batch_size_choices(32) == (4, 8, 16, 32, 64, 128, 256, 512)
    assert defaults.batch_size_choices(1, range(-2, 3)) == (1, 2, 4)
    members = [CandidateModel(None) for _ in range(300)]
    drawn = defaults.with_batch_sizes(Population(members), 64, np.random.default_rng(0))
    sizes = collections.Counter(itermap(c).batch_size for c in drawn)
    assert set(sizes) == {16, 32, 64, 128, 256} and min(sizes.values()) > 30
    assert defaults.batch_size_operators(None) == (None, None)
    mutation, crossover = defaults.batch_size_operators(64)
    assert (mutation.p, crossover.p) == (0.1, 0.2)
    assert mutation.m.quantizeto == (8, 16, 32, 64, 128, 256, 512, 1024)


def test_a_generation_rebatched_keeps_its_samples_and_counts_its_steps():
    x, y = _data(50)
    stream = GenerationBatches(x, y, FitConfig(seed=0, batch_size=8, batches_per_generation=3))
    batches = stream.itergeneration(2)
    rebatched = BatchSizeIteratorMap(5)(batches)
    assert len(rebatched) == 5 and rebatched.nsamples == 24
    joined = np.concatenate([b[1] for b in rebatched])
    np.testing.assert_array_equal(joined, np.concatenate([b[1] for b in batches]))
