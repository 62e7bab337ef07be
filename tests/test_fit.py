"""tinyevo.fit end to end, on a small slice of the bundled digits with tiny settings."""

import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
from evolution_cases import fit_summary

import tinyevo as te
from tinyevo.app.checkpoint import load_checkpoint

pytest.importorskip("sklearn")

TINY = dict(population_size=3, batches_per_generation=2, batch_size=16, widths=(4, 8),
            seed=5)
TINY_ELITES = 2     # fit's default




def test_fit_returns_the_last_generation_best_first(digits):
    x, y = digits
    seen = []
    population = te.fit(x, y, generations=2, callbacks=[lambda p: seen.append(p.generation)],
                        **TINY)
    assert population.generation == 2 and seen == [1, 2]
    fitness = [c.fitness for c in population]
    assert fitness == sorted(fitness, reverse=True) and len(fitness) == 3
    best = population.best()
    labels = best.predict(x[:10])
    assert labels.shape == (10,) and labels.dtype.kind in "iu"
    assert 0.0 <= best.evaluate(x[:50], y[:50]) <= 1.0
    assert best(x[:4]).shape == (4, 10)
    assert all(getattr(c, "eval_time", 0) > 0 for c in population)


def test_each_replaced_generation_is_freed_at_once(digits):
    """Graphs are reference cycles: fit collects them after every generation, so the memory of
    the models a generation replaced is free for the next one's (not left to the collector)."""
    import gc
    import weakref

    x, y = digits
    graphs = {}

    def look(p):
        # a vertex: the graph object itself is not in a cycle, its vertices are
        graphs[p.generation] = [weakref.ref(c.graph().vertices[-1]) for c in p]

    was = gc.isenabled()
    gc.disable()                                  # only fit's own collection may free them
    try:
        te.fit(x, y, generations=2, callbacks=[look], **{**TINY, "population_size": 5})
        alive = sum(r() is not None for r in graphs[1])
    finally:
        if was:
            gc.enable()
    assert len(graphs[1]) == 5 and alive <= TINY_ELITES


def test_time_limit_does_not_start_a_generation_that_would_overrun(digits, monkeypatch):
    fit_module = sys.modules["tinyevo.app.fitting"]
    clock = [1000.0]

    class FakeTime:                      # every trained candidate takes 10 "seconds"
        perf_counter = staticmethod(time.perf_counter)
        time = staticmethod(time.time)   # the deadline (real time) is far away

        @staticmethod
        def monotonic():
            return clock[0]

    def progress(event):
        if event["event"] == "candidate" and event.get("fitness") is not None:
            clock[0] += 10.0

    monkeypatch.setattr(fit_module, "time", FakeTime)
    x, y = digits
    # 30 s per generation: after generation 2 (60 s) a third would end at 90 s > 75 s.
    population = te.fit(x, y, time_limit=75, progress=progress, final_training=0.0, **TINY)
    assert population.generation == 2
    assert clock[0] - 1000.0 <= 75.0


def test_fit_takes_an_iterable_of_batches_and_a_validation_set(digits):
    x, y = digits
    batches = [(x[i:i + 40], y[i:i + 40]) for i in range(0, 200, 40)]
    population = te.fit(batches, valid=(x[200:], y[200:]), generations=1, **TINY)
    assert population.generation == 1 and len(population) == 3


def test_same_seed_same_run_and_resume_equals_an_uninterrupted_run(digits, tmp_path):
    x, y = digits
    te.fit(x, y, generations=2, mdir=tmp_path / "a", **TINY)
    resumed = te.fit(x, y, generations=3, mdir=tmp_path / "a", **TINY)
    straight = te.fit(x, y, generations=3, mdir=tmp_path / "b", **TINY)
    assert resumed.generation == straight.generation == 3
    assert fit_summary(resumed) == fit_summary(straight)
    np.testing.assert_array_equal(resumed.best().graph()(x[:8]), straight.best().graph()(x[:8]))
    # and the checkpoint holds the last complete generation
    saved, state = load_checkpoint(tmp_path / "a")
    assert saved.generation == 3 and "rng" in state


@pytest.mark.parametrize("mode", ["keep", "reset"])
def test_optimizer_state_is_kept_in_checkpoints_or_reset_as_asked(digits, tmp_path, mode):
    x, y = digits
    population = te.fit(x, y, generations=2, mdir=tmp_path, optimizer_state=mode, **TINY)
    saved, _ = load_checkpoint(tmp_path)
    for live, back in zip(population.members, saved.members):
        a, b = live.opt().state_arrays(live.graph()), back.opt().state_arrays(back.graph())
        assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
        assert bool(a) == (mode == "keep")
    if mode == "keep":
        # Two batches a generation: 4 steps for what trained in both generations, which
        # is more than the 2 elites: a child carried on with its parent's state.
        steps = [max(int(v) for k, v in c.opt().state_arrays(c.graph()).items()
                     if k.endswith("/t")) for c in population.members]
        assert max(steps) == 4 and steps.count(4) > TINY_ELITES


@pytest.mark.parametrize("mode", ["keep", "reset"])
def test_resume_a_checkpoint_from_before_optimizer_state_was_kept(digits, tmp_path, mode, caplog):
    import json

    x, y = digits
    te.fit(x, y, generations=1, mdir=tmp_path, optimizer_state="reset", **TINY)
    folder = tmp_path / "checkpoint"
    doc = json.loads((folder / "state.json").read_text())
    del doc["state"]["config"]["optimizer_state"], doc["optimizer_state"]
    (folder / "state.json").write_text(json.dumps(doc))
    (folder / "optimizers.npz").unlink()
    with caplog.at_level("WARNING", logger="tinyevo"):
        assert te.fit(x, y, generations=2, mdir=tmp_path, optimizer_state=mode,
                      **TINY).generation == 2
    assert ("before the setting optimizer_state existed" in caplog.text) == (mode == "keep")


def test_a_checkpoint_missing_its_optimizer_state_is_refused(digits, tmp_path):
    x, y = digits
    te.fit(x, y, generations=1, mdir=tmp_path, **TINY)
    (tmp_path / "checkpoint" / "optimizers.npz").unlink()
    with pytest.raises(ValueError, match="optimizers.npz"):
        load_checkpoint(tmp_path)


def test_resume_refuses_other_settings(digits, tmp_path):
    x, y = digits
    te.fit(x, y, generations=1, mdir=tmp_path, **TINY)
    with pytest.raises(ValueError, match="other settings"):
        te.fit(x, y, generations=2, mdir=tmp_path, **{**TINY, "batch_size": 8})


def test_resume_a_checkpoint_written_before_a_setting_existed(digits, tmp_path):
    import json

    x, y = digits
    te.fit(x, y, generations=1, mdir=tmp_path, **TINY)
    state_file = tmp_path / "checkpoint" / "state.json"
    state = json.loads(state_file.read_text())
    del state["state"]["config"]["lr_schedule"]    # as written by an earlier tinyevo
    state_file.write_text(json.dumps(state))
    assert te.fit(x, y, generations=2, mdir=tmp_path, **TINY).generation == 2
    with pytest.raises(ValueError, match="lr_schedule"):    # but not with another value
        te.fit(x, y, generations=3, mdir=tmp_path, lr_schedule="cosine", **TINY)


def test_ctrl_c_returns_the_last_complete_generation(digits, tmp_path):
    x, y = digits

    def interrupt(population):
        if population.generation == 2:
            raise KeyboardInterrupt

    population = te.fit(x, y, generations=5, callbacks=[interrupt], mdir=tmp_path, **TINY)
    # The callbacks run before the checkpoint: generation 2 was not checkpointed, so the run
    # returns generation 1, as its checkpoint holds it (#22 items 3 and 6).
    saved = load_checkpoint(tmp_path)[0]
    assert population.generation == saved.generation == 1
    assert [c.fitness for c in population] == [c.fitness for c in saved]
    assert [c.fitness for c in population.hall_of_fame] == [c.fitness
                                                            for c in saved.hall_of_fame]
    # Without a run directory there is no checkpoint to match: the generation is returned.
    assert te.fit(x, y, generations=5, callbacks=[interrupt], **TINY).generation == 2


@pytest.mark.parametrize("bad, match", [
    (dict(), "generations=, time_limit= or target_fitness="),
    (dict(generations=0), "generations"),
    (dict(generations=1, population_size=1), "population_size"),
    (dict(generations=1, valid_fraction=1.5), "valid_fraction"),
    (dict(generations=1, time_limit=-1), "time_limit"),
    (dict(generations=1, lr_schedule="linear"), "lr_schedule"),
    (dict(generations=1, tiebreak="speed"), "tiebreak"),
    (dict(generations=1, optimizer_state="clear"), "optimizer_state"),
])
def test_bad_arguments_say_what_is_wrong(digits, bad, match):
    x, y = digits
    with pytest.raises(ValueError, match=match):
        te.fit(x, y, **bad)


def test_settings_left_none_on_resume_are_the_checkpoints(digits, tmp_path):
    x, y = digits
    te.fit(x, y, generations=1, mdir=tmp_path / "a", **TINY)
    # population_size, widths and seed are chosen by fit when None: here, the checkpoint's
    resumed = te.fit(x, y, generations=2, mdir=tmp_path / "a", batches_per_generation=2,
                     batch_size=16)
    assert fit_summary(resumed) == fit_summary(te.fit(x, y, generations=2, **TINY))


@pytest.mark.parametrize("x, y, match", [
    (np.zeros((10, 3, 2, 2, 2), np.float32), np.zeros(10, int), "must be"),
    (np.zeros((10, 4), np.float32), np.zeros(9, int), "labels"),
    (np.zeros((10, 4), np.float32), np.full(10, -1), "0..K-1"),
    (np.zeros((10, 4), np.float32), np.array(list("ababababab")), "integers"),
    (np.full((10, 4), np.nan, np.float32), np.zeros(10, int), "NaN"),
    (np.zeros((10, 4), np.float32), None, "labels y are missing"),
])
def test_bad_data_is_refused_with_a_clear_message(x, y, match):
    with pytest.raises(ValueError, match=match):
        te.fit(x, y, generations=1)


@pytest.mark.slow
def test_a_run_killed_mid_generation_resumes_to_the_uninterrupted_result(digits, tmp_path):
    """kill -9 while candidates train (after at least one checkpoint), resume, compare."""
    script = textwrap.dedent(f"""
        import tinyevo as te
        x, y = te.load_digits("train")
        te.fit(x[:240], y[:240], generations=50, mdir={str(tmp_path / 'killed')!r},
               **{TINY!r})
    """)
    proc = subprocess.Popen([sys.executable, "-c", script])
    try:
        deadline = time.monotonic() + 120
        while load_checkpoint_generation(tmp_path / "killed") < 2:
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.05)
        time.sleep(0.2)                       # into the next generation's training
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    done = load_checkpoint_generation(tmp_path / "killed")
    x, y = digits
    target = done + 1
    resumed = te.fit(x, y, generations=target, mdir=tmp_path / "killed", **TINY)
    straight = te.fit(x, y, generations=target, mdir=tmp_path / "straight", **TINY)
    assert fit_summary(resumed) == fit_summary(straight)


def load_checkpoint_generation(mdir):
    try:
        loaded = load_checkpoint(mdir)
    except (ValueError, OSError):
        return 0
    return 0 if loaded is None else loaded[0].generation


@pytest.mark.slow
def test_two_worker_processes_give_the_serial_result(digits):
    x, y = digits
    serial = te.fit(x, y, generations=2, **TINY)
    parallel = te.fit(x, y, generations=2, executor=2, **TINY)
    assert fit_summary(serial) == fit_summary(parallel)


@pytest.mark.parametrize("pairwise", [False, True])
def test_default_strategy_children_own_their_models(pairwise):
    from tinyevo.app import defaults
    from tinyevo.app.fitting import initial_population
    from tinyevo.evolution import FittedCandidate

    te.seed(0)
    pop = initial_population(defaults.default_search_space("dense", 3), 4, "dense", 5)
    parents = [FittedCandidate(c, 0.1 * i, 1) for i, c in enumerate(pop.members)]
    strategy = defaults.default_strategy(5, defaults.default_mutation("dense", 3),
                                         defaults.default_crossover(), pairwise=pairwise)
    children = strategy(parents)
    assert len(children) == 5
    elites = children[:2]                        # the two fittest, kept as they are
    assert [c.fitness for c in elites] == [parents[4].fitness, parents[3].fitness]
    mine = [c.graph() for c in children[2:]]
    assert not {id(g) for g in mine} & {id(p.graph()) for p in parents}
    assert len({id(g) for g in mine}) == 3
    for g in mine:
        g.validate()


def test_initial_models_over_the_cost_ceiling_are_drawn_again():
    from tinyevo.app import defaults
    from tinyevo.app.fitting import initial_population

    space = defaults.default_search_space("conv2d", 10, (8, 32), (1, 28, 28))
    te.seed(2)
    free = [c.graph().macs((28, 28)) for c in initial_population(space, 1, "conv2d", 8).members]
    ceiling = float(np.median(free))
    assert max(free) > ceiling                   # some draws of this seed are over it
    te.seed(2)
    capped = initial_population(space, 1, "conv2d", 8, max_macs=ceiling, spatial=(28, 28))
    assert all(c.graph().macs((28, 28)) <= ceiling for c in capped.members)
    te.seed(2)                   # a ceiling no draw meets: the cheapest of the tries is kept
    cheapest = initial_population(space, 1, "conv2d", 1, max_macs=1.0, spatial=(28, 28),
                                  tries=5)
    assert cheapest.members[0].graph().macs((28, 28)) < free[0]     # the same first draw


def test_a_mutation_past_the_cost_ceiling_is_undone():
    from tinyevo.app.defaults import GraphMutation
    from tinyevo.evolution.mutation import NoutMutation, VertexMutation

    def graph():
        inp = te.input_vertex("in", 1, "conv2d")
        conv = te.vertex(te.layers.Conv(1, 8, 3, padding="same", activation="relu"), inp,
                         name="conv")
        pool = te.vertex(te.layers.GlobalPool(), conv)
        return te.CompGraph(inp, te.vertex(te.layers.Dense(8, 2), pool, shielded=True))

    def nothing(g):
        return g

    widen = VertexMutation(NoutMutation(1.0, 1.0))     # doubles every unshielded layer
    g = graph()
    cost = g.macs((10, 10))                            # 8 x 9 x 100 + 16
    ok = GraphMutation(widen, nothing, nothing, 2e8, max_macs=3 * cost, spatial=(10, 10))
    grown = ok(g)
    assert grown is g and g.macs((10, 10)) > cost    # under the ceiling: kept
    g = graph()
    before = {k: np.array(a) for k, a in g.arrays().items()}
    tight = GraphMutation(widen, nothing, nothing, 2e8, max_macs=1.5 * cost, spatial=(10, 10))
    kept = tight(g)
    assert kept is not g and kept.macs((10, 10)) == cost and kept["conv"].nout == 8
    assert kept.arrays().keys() == before.keys()
    assert all(np.array_equal(a, before[k]) for k, a in kept.arrays().items())
    # A graph already over the ceiling (a crossover's child) gets no growing mutations.
    over = GraphMutation(widen, nothing, nothing, 2e8, max_macs=0.5 * cost, spatial=(10, 10))
    g = graph()
    assert over(g) is g and g["conv"].nout == 8


def test_device_copies_of_the_data_stay_out_of_worker_payloads(digits):
    # On a GPU, fit's batches and validation set keep device copies; a worker process gets the
    # host arrays and makes its own (a pickled CuPy array would need CuPy to unpickle).
    import pickle

    from tinyevo.app.config import FitConfig
    from tinyevo.app.data import GenerationBatches
    from tinyevo.app.scoring import ClassifierFitness

    x, y = digits
    batches = GenerationBatches(x, y, FitConfig(seed=0))
    fitness = ClassifierFitness(batches, (x[:20], y[:20]))
    batches._device = fitness._device = ("cupy", "device arrays")
    batches2 = pickle.loads(pickle.dumps(batches))
    fitness2 = pickle.loads(pickle.dumps(fitness))
    assert batches2._device is None and fitness2._device is None
    assert batches._device is not None                      # the original keeps its copies
    np.testing.assert_array_equal(batches2.x, x)
    assert len(fitness2.valid) == 1 and fitness2.train.dataiter._device is None


# ---------------------------------------------------------------- budgets, deadline, hall of fame

def test_generation_batches_continue_one_stream_the_same_for_every_candidate():
    import pickle

    from tinyevo.app.config import FitConfig
    from tinyevo.app.data import GenerationBatches

    x = np.arange(50, dtype=np.float32).reshape(50, 1)
    y = np.arange(50) % 2
    config = FitConfig(batch_size=8, batches_per_generation=3, budget_growth=0.5, seed=1)
    stream = GenerationBatches(x, y, config)
    elsewhere = pickle.loads(pickle.dumps(stream))            # as a worker process has it
    seen = []
    for g in (1, 2, 3):
        batches = [b[0][:, 0].astype(int).tolist() for b in stream.itergeneration(g)]
        assert batches == [b[0][:, 0].astype(int).tolist() for b in stream.itergeneration(g)]
        assert batches == [b[0][:, 0].astype(int).tolist() for b in elsewhere.itergeneration(g)]
        assert len(batches) == config.batches_at(g, 50) == len(stream.itergeneration(g))
        seen += [i for b in batches for i in b]
    assert len(seen) == (3 + 4 + 6) * 8
    # Generation after generation, the next slice of one stream: every sample once per epoch.
    assert sorted(seen[:50]) == sorted(seen[50:100]) == list(range(50))
    assert seen[:50] != seen[50:100]                          # each epoch in its own order
    assert seen == stream.indices(0, 13).tolist()


def test_validation_is_stratified_and_capped():
    from tinyevo.app.data import split_validation

    x = np.zeros((10000, 3), np.float32)
    y = np.repeat(np.arange(4), [1000, 2000, 3000, 4000])
    (_, ytrain), (_, yvalid) = split_validation(x, y, 0.3, seed=0, max_samples=500)
    assert len(yvalid) == 500 and len(ytrain) == 9500
    assert np.bincount(yvalid).tolist() == [50, 100, 150, 200]
    (_, _), (_, yvalid) = split_validation(x, y, 0.3, seed=0)
    assert len(yvalid) == 3000


def test_a_generation_cut_by_the_time_limit_is_dropped(tmp_path, monkeypatch, caplog):
    """Large data, a short limit, and a second generation far too long for it: the run ends
    within the limit and returns (and holds in its checkpoint) generation 1 as it was."""
    fit_module = sys.modules["tinyevo.app.fitting"]
    monkeypatch.setattr(fit_module, "_expected_seconds", lambda *a: 0.0)   # always start one
    rng = np.random.default_rng(0)
    x = rng.standard_normal((200_000, 16), dtype=np.float32)
    y = (x[:, 0] > 0).astype(np.int64)
    settings = dict(population_size=3, batches_per_generation=10, budget_growth=1000.0, seed=3,
                    batch_size=32)
    t0 = time.monotonic()
    population = te.fit(x, y, time_limit=2.0, mdir=tmp_path, **settings)
    took = time.monotonic() - t0
    assert population.generation == 1
    assert took < 2.0 + 10.0
    assert "cut generation 2" in caplog.text
    once = te.fit(x, y, generations=1, **settings)
    assert fit_summary(population) == fit_summary(once)
    for a, b in zip(population, once):       # the elites trained in generation 2 were copies
        arrays = b.graph().arrays()
        assert all(np.array_equal(v, arrays[k]) for k, v in a.graph().arrays().items())
    assert load_checkpoint(tmp_path)[0].generation == 1


def test_a_time_limit_before_the_first_generation_ends_says_so():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((100_000, 16), dtype=np.float32)
    y = (x[:, 0] > 0).astype(np.int64)
    with pytest.raises(RuntimeError, match="before the first generation"):
        te.fit(x, y, time_limit=0.5, population_size=2, batches_per_generation=100_000)


def test_the_hall_of_fame_survives_resume(digits, tmp_path):
    x, y = digits
    straight = te.fit(x, y, generations=4, mdir=tmp_path / "straight", **TINY)
    te.fit(x, y, generations=2, mdir=tmp_path / "resumed", **TINY)
    resumed = te.fit(x, y, generations=4, mdir=tmp_path / "resumed", **TINY)
    fame, again = straight.hall_of_fame, resumed.hall_of_fame
    assert len(fame) == 5
    assert [(c.fitness, c.generation) for c in fame] == [(c.fitness, c.generation)
                                                         for c in again]
    for a, b in zip(fame, again):
        arrays = b.graph().arrays()
        assert all(np.array_equal(v, arrays[k]) for k, v in a.graph().arrays().items())
    assert fame.best().fitness >= max(c.fitness for c in straight)


def test_the_hall_of_fame_keeps_the_best_ever_when_the_last_generation_is_worse(digits):
    x, y = digits
    population = te.fit(x, y, generations=4, **TINY)
    fame = population.hall_of_fame
    fitnesses = [c.fitness for c in fame]
    assert fitnesses == sorted(fitnesses, reverse=True)
    assert all(c.generation in (1, 2, 3, 4) for c in fame)
    # Snapshots score what they scored when they were taken (the fitness is reproducible).
    from tinyevo.app.config import FitConfig
    from tinyevo.app.data import GenerationBatches, split_validation
    from tinyevo.app.scoring import ClassifierFitness
    (xt, yt), valid = split_validation(x, y, 0.3, TINY["seed"])
    scorer = ClassifierFitness(GenerationBatches(xt, yt, FitConfig(seed=0)), valid, tiebreak="loss")
    best = fame.best()
    assert scorer._score(best) == pytest.approx(best.fitness, abs=1e-9)


def test_final_training_trains_a_copy_of_the_best_and_keeps_the_time_limit(digits):
    x, y = digits
    events = []
    t0 = time.monotonic()
    population = te.fit(x, y, time_limit=6.0, final_training=0.5, progress=events.append,
                        **TINY)
    assert time.monotonic() - t0 < 6.0 + 10.0
    final = [e for e in events if e["event"] == "final" and "fitness" in e]
    assert len(final) == 1 and final[0]["steps"] > 0
    # Kept unless it validates clearly worse than where it started (accept_final), and then
    # also in the hall of fame.
    from tinyevo.app.scoring import accept_final
    before = type("Fitted", (), {"fitness": final[0]["before"]})()
    kept = accept_final(type("Fitted", (), {"fitness": final[0]["fitness"]})(), before, 72)
    assert (population.final is not None) == kept
    if kept:
        assert population.final.fitness == final[0]["fitness"]
        fame = [c.fitness for c in population.hall_of_fame]
        assert population.final.fitness in fame or population.final.fitness <= min(fame)


def test_train_final_leaves_the_best_as_it_was(digits):
    from tinyevo.app.config import FitConfig
    from tinyevo.app.data import GenerationBatches
    from tinyevo.app.scoring import ClassifierFitness, train_final

    x, y = digits
    population = te.fit(x, y, generations=1, **TINY)
    best = population.hall_of_fame.best()
    before = {k: np.array(a) for k, a in best.graph().arrays().items()}
    lr = best.opt().learning_rate
    stream = GenerationBatches(x[:150], y[:150], FitConfig(batch_size=16, seed=0))
    scorer = ClassifierFitness(stream, (x[150:], y[150:]))
    final = train_final(best, scorer, 1, 1.0)
    assert final is not None and final.generation == 1
    assert final.graph() is not best.graph()
    assert all(np.array_equal(a, before[k]) for k, a in best.graph().arrays().items())
    assert not all(np.array_equal(a, before[k]) for k, a in final.graph().arrays().items())
    assert best.opt().learning_rate == lr == final.opt().learning_rate
    assert train_final(best, scorer, 1, 0.0) is None


def test_large_data_gets_a_smaller_population_and_a_final_training(tmp_path):
    import json

    rng = np.random.default_rng(0)
    x = rng.standard_normal((3000, 4), dtype=np.float32)
    y = (x[:, 0] > 0).astype(np.int64)
    te.fit(x, y, generations=1, batch_size=8, mdir=tmp_path / "large", seed=0)
    config = json.loads((tmp_path / "large" / "checkpoint" / "state.json").read_text())
    config = config["state"]["config"]
    # 50 batches of 8 are less than one pass over 2,100 training samples: large data;
    # 280 training samples take 35 batches of 8, a pass: small data.
    assert config["population_size"] == 8 and config["final_training"] == 0.4
    assert config["valid_max"] == 1000
    assert config["max_macs"] == 8000 * 4
    te.fit(x[:400], y[:400], generations=1, batch_size=8, mdir=tmp_path / "small", seed=0)
    config = json.loads((tmp_path / "small" / "checkpoint" / "state.json").read_text())
    config = config["state"]["config"]
    assert config["population_size"] == 12 and config["final_training"] == 0.0
    assert config["max_macs"] is None


def test_a_resumed_run_keeps_the_settings_it_derived_from_the_data(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3000, 4), dtype=np.float32)
    y = (x[:, 0] > 0).astype(np.int64)
    first = te.fit(x, y, generations=1, batch_size=8, mdir=tmp_path, seed=0,
                   population_size=3, max_macs=0, final_training=0.2)
    assert len(first) == 3
    # Left as None on resume: the checkpoint's (3, no ceiling, 0.2), not the defaults for
    # large data (8, a ceiling, 0.4), which would make the run another one.
    again = te.fit(x, y, generations=2, batch_size=8, mdir=tmp_path, seed=0)
    assert again.generation == 2 and len(again) == 3
    with pytest.raises(ValueError, match="population_size: 3 there, 4 now"):
        te.fit(x, y, generations=3, batch_size=8, mdir=tmp_path, seed=0, population_size=4)


def test_the_final_training_takes_the_time_left_when_the_search_stops_for_time(
        digits, monkeypatch):
    fit_module = sys.modules["tinyevo.app.fitting"]
    given = []

    def record(best, scorer, generation, seconds, progress=None):
        given.append(seconds)

    monkeypatch.setattr(fit_module, "train_final", record)
    x, y = digits
    # Stopped by its generations: the final training gets its share (0.1 of 100 s).
    te.fit(x, y, generations=1, time_limit=100.0, final_training=0.1, **TINY)
    assert given[-1] == pytest.approx(10.0)
    # Stopped because the next generation would not fit: all the time left (~100 s).
    monkeypatch.setattr(fit_module, "_expected_seconds", lambda *a: 1000.0)
    te.fit(x, y, time_limit=100.0, final_training=0.1, **TINY)
    assert 90.0 < given[-1] < 100.0


def test_ctrl_c_mid_generation_returns_the_weights_that_earned_the_fitness(digits, tmp_path):
    # Regression (#22): the elites of the interrupted generation had been trained in place,
    # so the returned (and then exported) models were not the ones their fitness measured.
    x, y = digits

    def interrupt(event):
        if event["event"] == "candidate" and event["generation"] == 3 and event["done"] == 3:
            raise KeyboardInterrupt

    population = te.fit(x, y, generations=5, progress=interrupt, mdir=tmp_path, **TINY)
    saved, _ = load_checkpoint(tmp_path)
    assert population.generation == saved.generation == 2
    for a, b in zip(population, saved):
        assert a.fitness == b.fitness
        arrays = b.graph().arrays()
        assert all(np.array_equal(v, arrays[k]) for k, v in a.graph().arrays().items())


def test_the_final_model_is_kept_unless_it_validates_clearly_worse():
    from types import SimpleNamespace as C

    from tinyevo.app.scoring import accept_final

    best = C(fitness=0.99)                   # 1,000 samples at 99 %: standard error 0.31 %
    assert accept_final(C(fitness=0.99), best, 1000)
    assert accept_final(C(fitness=0.985), best, 1000)        # within two standard errors
    assert not accept_final(C(fitness=0.98), best, 1000)     # beyond them
    assert not accept_final(C(fitness=0.985), best, 100_000)


@pytest.mark.slow
def test_worker_processes_stop_at_the_deadline_too(monkeypatch, caplog):
    fit_module = sys.modules["tinyevo.app.fitting"]
    monkeypatch.setattr(fit_module, "_expected_seconds", lambda *a: 0.0)   # always start one
    rng = np.random.default_rng(0)
    x = rng.standard_normal((200_000, 16), dtype=np.float32)
    y = (x[:, 0] > 0).astype(np.int64)
    t0 = time.monotonic()
    population = te.fit(x, y, time_limit=4.0, executor=2, population_size=4,
                        batches_per_generation=10, budget_growth=1000.0, seed=3,
                        final_training=0.0)
    assert time.monotonic() - t0 < 4.0 + 10.0
    assert population.generation == 1 and "cut generation 2" in caplog.text


def test_resumed_again_and_again_every_generation_matches_the_uninterrupted_run(digits, tmp_path):
    # #22 item 2: a run resumed twice had lost its output layer's shield allow-list and
    # diverged from the uninterrupted run; here it is resumed after every generation.
    x, y = digits

    def recorder(log):
        def record(population):
            log.append((population.generation, [c.fitness for c in population],
                        [{k: np.array(a) for k, a in c.graph().arrays().items()}
                         for c in population]))
        return record

    straight, stepwise = [], []
    te.fit(x, y, generations=5, callbacks=[recorder(straight)], **TINY)
    for g in range(1, 6):
        te.fit(x, y, generations=g, mdir=tmp_path, callbacks=[recorder(stepwise)], **TINY)
    assert [r[:2] for r in stepwise] == [r[:2] for r in straight]
    for (_, _, a), (_, _, b) in zip(stepwise, straight):
        for ma, mb in zip(a, b):
            assert ma.keys() == mb.keys()
            assert all(np.array_equal(ma[k], mb[k]) for k in ma)
