"""HallOfFame: the K best evaluations as snapshots, kept in checkpoints and shown by the CLI."""

import json
import math

import numpy as np
import pytest

from tinyevo import backend as B
from tinyevo.app.checkpoint import load_checkpoint, save_checkpoint
from tinyevo.cli import main
from tinyevo.evolution import (
    AbstractFitness,
    CandidateModel,
    CandidateOptModel,
    FittedCandidate,
    HallOfFame,
    Population,
)
from tinyevo.graph import CompGraph, input_vertex, vertex
from tinyevo.layers import Dense
from tinyevo.losses import logit_cross_entropy
from tinyevo.optimizers import Adam, Momentum


def tiny_graph(width):
    inp = input_vertex("in", 3, "dense")
    hidden = vertex(Dense(3, width, "relu"), inp)
    return CompGraph(inp, vertex(Dense(width, 2), hidden))


def train(candidate, steps=3, seed=0):
    """A few steps of the candidate's own optimiser on random data, in place."""
    rng = np.random.default_rng(seed)
    x = B.to_device(rng.standard_normal((8, 3), dtype=np.float32))
    y = B.to_device(rng.integers(0, 2, 8))
    model, opt = candidate.graph(), candidate.opt()
    for _ in range(steps):
        out, backprop = model.forward(x, train=True)
        _, dout = logit_cross_entropy(out, y)
        backprop(dout, need_dx=False)
        opt.update(model)


def host_arrays(model):
    return {k: np.array(B.to_numpy(a)) for k, a in model.arrays().items()}


def opt_state(candidate):
    return {k: np.array(a) for k, a in candidate.opt().state_arrays(candidate.graph()).items()}


def assert_same_arrays(a, b):
    assert a.keys() == b.keys() and a
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def fitted(fitnesses, generation=1):
    return Population([FittedCandidate(CandidateModel(tiny_graph(2 + i)), f, generation)
                       for i, f in enumerate(fitnesses)], generation)


class ScriptedFitness(AbstractFitness):
    """Trains the candidate a few steps, then answers the fitness scripted for it and the
    generation: ``script[candidate][generation]``."""

    def __init__(self, script):
        self.script = script

    def __call__(self, candidate, generation=None):
        train(candidate, seed=generation)
        return self.script[candidate][generation]


# ------------------------------------------------------------------------------ ranking
def test_keeps_the_k_best_best_first_and_ties_keep_the_earlier_ahead():
    hof = HallOfFame(3)
    pop = fitted([0.1, 0.5, 0.3, 0.9, 0.5, 0.7])
    assert hof.update(pop) == 3
    assert [m.fitness for m in hof.members] == [0.9, 0.7, 0.5]
    assert hof.members[2].graph().nparams() == pop[1].graph().nparams()   # the earlier 0.5
    assert all(m.generation == 1 for m in hof)
    later = fitted([0.5, 0.8], generation=2)
    hof.update(later)
    assert [(m.fitness, m.generation) for m in hof] == [(0.9, 1), (0.8, 2), (0.7, 1)]
    assert hof.best() is hof.members[0] and len(hof) == 3 and hof[1].fitness == 0.8
    assert repr(hof) == "HallOfFame(size=3, 3 members, best 0.9)"


def test_snapshots_are_copies_not_the_members():
    pop = fitted([0.4, 0.6])
    hof = HallOfFame(2)
    hof.update(pop)
    for m in hof:
        assert m not in pop.members
        assert all(m.graph() is not c.graph() for c in pop)


def test_the_same_evaluation_is_stored_once():
    hof = HallOfFame(4)
    pop = fitted([0.2, 0.4])
    assert hof.update(pop) == 2
    assert hof.update(pop) == 0 and hof.update(list(pop)) == 0
    assert [m.fitness for m in hof] == [0.4, 0.2]
    # the same candidates measured again in a later generation are new evaluations
    again = Population([FittedCandidate(c, c.fitness, 2) for c in pop], 2)
    assert hof.update(again) == 2
    assert [(m.fitness, m.generation) for m in hof] == [(0.4, 1), (0.4, 2), (0.2, 1), (0.2, 2)]


def test_holds_no_reference_to_the_originals():
    import gc
    import weakref

    cand = CandidateOptModel(Adam(0.05), tiny_graph(4))
    train(cand)
    hof = HallOfFame(2)
    hof.update([FittedCandidate(cand, 0.5, 1)])
    refs = [weakref.ref(cand), weakref.ref(cand.graph().vertices[-1]), weakref.ref(cand.opt())]
    del cand
    gc.collect()
    assert [r() for r in refs] == [None, None, None]
    assert hof.best().graph()(np.ones((1, 3), dtype=np.float32)).shape == (1, 2)


def test_skips_members_without_a_finite_numeric_fitness():
    pop = fitted([math.nan, math.inf, -math.inf, (0.9, 1.0), None, "0.9", 0.1, np.float32(0.3)])
    pop.members.append(CandidateModel(tiny_graph(2)))              # never evaluated
    hof = HallOfFame(10)
    assert hof.update(pop) == 2
    assert [m.fitness for m in hof] == pytest.approx([0.3, 0.1])
    assert all(type(m.fitness) is float for m in hof)


@pytest.mark.parametrize("size", [0, -2, 2.5, "3", None, True])
def test_size_must_be_a_positive_int(size):
    with pytest.raises(ValueError, match="positive int"):
        HallOfFame(size)


def test_best_of_an_empty_hall_of_fame_says_so():
    hof = HallOfFame()
    assert hof.size == 5 and len(hof) == 0 and list(hof) == [] and hof.members == []
    with pytest.raises(ValueError, match="empty"):
        hof.best()


# ------------------------------------------------------------------------------ snapshots
def test_snapshot_is_unchanged_by_later_training_and_keeps_the_optimizer_state(xp):
    cand = CandidateOptModel(Adam(0.05), tiny_graph(4))
    train(cand)
    weights, state = host_arrays(cand.graph()), opt_state(cand)
    hof = HallOfFame(1)
    hof.update([FittedCandidate(cand, 0.5, 1)])
    snap = hof.best()
    assert snap.opt() is not cand.opt() and snap.opt().to_spec() == cand.opt().to_spec()
    assert_same_arrays(opt_state(snap), state)

    train(cand, steps=4, seed=1)                                   # the original trains on
    assert not np.array_equal(host_arrays(cand.graph())["1/weight"], weights["1/weight"])
    assert_same_arrays(host_arrays(snap.graph()), weights)
    assert_same_arrays(opt_state(snap), state)

    before = host_arrays(cand.graph())                             # and the other way round
    train(snap, steps=2, seed=2)
    assert_same_arrays(host_arrays(cand.graph()), before)


def test_optimizer_state_is_copied_where_copies_share_no_arrays(monkeypatch):
    """On CuPy a model copy holds new arrays, so inherit finds nothing: the state goes across
    as arrays instead (simulated here on NumPy)."""
    cand = CandidateOptModel(Adam(0.05), tiny_graph(4))
    train(cand)
    state = opt_state(cand)
    monkeypatch.setattr(Adam, "inherit", lambda self, model, *sources: 0)
    hof = HallOfFame(1)
    hof.update([FittedCandidate(cand, 0.5, 1)])
    assert_same_arrays(opt_state(hof.best()), state)
    train(cand, seed=1)
    assert_same_arrays(opt_state(hof.best()), state)


def test_keeps_a_model_whose_fitness_later_fell():
    a = CandidateOptModel(Adam(0.05), tiny_graph(4))
    b = CandidateOptModel(Momentum(0.05), tiny_graph(3))
    fitness = ScriptedFitness({a: {1: 0.9, 2: 0.5}, b: {1: 0.3, 2: 0.6}})
    hof = HallOfFame(2)
    gen1 = Population([a, b]).evaluate(fitness)
    hof.update(gen1)
    weights1, state1 = host_arrays(a.model), opt_state(a)
    gen2 = Population(gen1.members, 2).evaluate(fitness)          # both trained on
    hof.update(gen2)
    assert gen2.best().candidate is b and gen2.best().fitness == 0.6
    assert [(m.fitness, m.generation) for m in hof] == [(0.9, 1), (0.6, 2)]
    assert not np.array_equal(host_arrays(a.model)["1/weight"], weights1["1/weight"])
    assert_same_arrays(host_arrays(hof.best().graph()), weights1)  # generation 1's weights
    assert_same_arrays(opt_state(hof.best()), state1)
    assert type(hof.best().opt()) is Adam


# ------------------------------------------------------------------------------ checkpoint
def _population_and_hof():
    with_opt = CandidateOptModel(Adam(0.02), tiny_graph(4))
    plain = CandidateModel(tiny_graph(3))
    train(with_opt)
    pop = Population([FittedCandidate(with_opt, 0.7, 3), FittedCandidate(plain, 0.4, 3)], 3)
    hof = HallOfFame(3)
    hof.update(Population([FittedCandidate(with_opt, 0.8, 2)], 2))
    hof.update(pop)
    train(with_opt, seed=5)                       # the population moves on after the update
    return pop, hof


def test_checkpoint_round_trip_keeps_the_hall_of_fame(tmp_path):
    pop, hof = _population_and_hof()
    save_checkpoint(tmp_path, pop, {"note": 1}, hof)
    loaded, state = load_checkpoint(tmp_path)
    assert state == {"note": 1} and loaded.generation == 3
    back = loaded.hall_of_fame
    assert isinstance(back, HallOfFame) and back.size == 3 and len(back) == 3
    assert [(m.fitness, m.generation) for m in back] == [(0.8, 2), (0.7, 3), (0.4, 3)]
    for saved, got in zip(hof, back):
        assert_same_arrays(host_arrays(got.graph()), host_arrays(saved.graph()))
        if saved.opt() is None:
            assert got.opt() is None
        else:
            assert got.opt().to_spec() == saved.opt().to_spec()
            assert_same_arrays(opt_state(got), opt_state(saved))
    # the members are as before, and apart from the hall of fame's arrays
    for saved, got in zip(pop, loaded):
        assert_same_arrays(host_arrays(got.graph()), host_arrays(saved.graph()))
    assert not np.array_equal(host_arrays(back[1].graph())["1/weight"],
                              host_arrays(loaded[0].graph())["1/weight"])


def test_a_checkpoint_without_a_hall_of_fame_loads_with_an_empty_one(tmp_path):
    pop, _ = _population_and_hof()
    save_checkpoint(tmp_path, pop, {})                     # as written before it was kept
    doc = json.loads((tmp_path / "checkpoint" / "state.json").read_text())
    assert "hall_of_fame" not in doc
    loaded, _ = load_checkpoint(tmp_path)
    assert len(loaded) == 2 and len(loaded.hall_of_fame) == 0
    assert loaded.hall_of_fame.size == HallOfFame().size


@pytest.mark.parametrize("npz", ["members.npz", "optimizers.npz"])
def test_a_damaged_hall_of_fame_entry_is_refused(tmp_path, npz):
    pop, hof = _population_and_hof()
    save_checkpoint(tmp_path, pop, {}, hof)
    path = tmp_path / "checkpoint" / npz
    with np.load(path) as f:
        arrays = {k: f[k] for k in f.files}
    victim = sorted(k for k in arrays if k.startswith("hof/0/"))[-1]
    del arrays[victim]
    np.savez(path, **arrays)
    with pytest.raises(ValueError, match="damaged"):
        load_checkpoint(tmp_path)


def test_hall_of_fame_optimizer_state_of_no_entry_is_refused(tmp_path):
    pop, hof = _population_and_hof()
    save_checkpoint(tmp_path, pop, {}, hof)
    path = tmp_path / "checkpoint" / "optimizers.npz"
    with np.load(path) as f:
        arrays = {k: f[k] for k in f.files}
    arrays["hof/2/0/weight/t"] = np.asarray(1)                   # entry 2 has no optimiser
    np.savez(path, **arrays)
    with pytest.raises(ValueError, match="belongs to no member"):
        load_checkpoint(tmp_path)


# ------------------------------------------------------------------------------ CLI
def test_show_lists_the_hall_of_fame(tmp_path, capsys):
    pop, hof = _population_and_hof()
    save_checkpoint(tmp_path, pop, {}, hof)
    assert main(["show", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "best candidate: fitness 0.7000" in out                 # what it showed before
    lines = out[out.index("hall of fame"):].splitlines()
    assert "3 best candidates ever evaluated" in lines[0]
    rows = [line.split() for line in lines[2:5]]
    g = hof.members
    assert rows == [[str(r), f"{m.fitness:.4f}", str(m.generation), f"{m.graph().nparams():,}",
                     str(len(m.graph().vertices))] for r, m in enumerate(g, 1)]
    assert "the hall of fame's best: fitness 0.8000, evaluated in generation 2" in out


def test_show_without_a_hall_of_fame(tmp_path, capsys):
    pop, _ = _population_and_hof()
    save_checkpoint(tmp_path, pop, {})
    assert main(["show", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "hall of fame: none" in out and "best candidate of the last generation" in out
