"""Parallel evaluation: the evaluator contract; serial, process pool and Dask agree; dead and
stuck workers cost no candidate."""

from __future__ import annotations

import concurrent.futures as cf
import dataclasses
import logging
import multiprocessing
import os
import re
import signal
import time

import numpy as np
import pytest

import tinyevo as te
from tinyevo.app.executors import (
    DaskEvaluator,
    ExecutorEvaluator,
    ProcessEvaluator,
    SerialEvaluator,
    make_evaluator,
)
from tinyevo.evolution import MapEvaluator, evaluate_candidate
from tinyevo.evolution.iterators import BatchIterator
from tinyevo.layers import Dense, Dropout


# --------------------------------------------------------------------- candidates and data
@dataclasses.dataclass(eq=False)
class Saboteur(te.CandidateModel):
    """A candidate that, inside a worker process, kills it (once while ``marker`` does not exist,
    or always) or hangs; in the test process it is an ordinary CandidateModel."""

    action: str = "none"  # "kill-once", "kill-always", "hang"
    marker: str = ""

    def graph(self, default=None):
        if multiprocessing.parent_process() is not None:  # in a worker
            if self.action == "hang":
                time.sleep(600)
            kill = self.action == "kill-always" or (
                self.action == "kill-once" and not os.path.exists(self.marker))
            if kill:
                if self.marker:
                    open(self.marker, "w").close()
                os.kill(os.getpid(), signal.SIGKILL)
        return self.model


def make_graphs():
    """Four tiny dense graphs; two with dropout, so evaluation draws random numbers."""
    graphs = []
    for i, n in enumerate((4, 6, 8, 5)):
        inp = te.input_vertex("in", 6, "dense")
        v = te.vertex(Dense(6, n, "relu"), inp, name="h")
        if i % 2:
            v = te.vertex(Dropout(0.3), v, name="drop")
        graphs.append(te.CompGraph(inp, te.vertex(Dense(n, 3), v, name="out")))
    return graphs


def make_problem(shuffle=True, candidate=te.CandidateModel, **kw):
    """(fitness, population) from the same seed every time; reshuffled partitions of the data."""
    te.seed(7)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((64, 6), dtype=np.float32)
    y = rng.integers(0, 3, 64)
    train = te.RepeatPartitionIterator(BatchIterator((x, y), 8, shuffle=shuffle), 3, cycle=True)
    fitness = te.TrainThenFitness(train, te.losses.logit_cross_entropy, te.optimizers.Adam(0.01),
                                  te.AccuracyFitness([(x, y)]), invalidfitness=-1.0)
    return fitness, te.Population([candidate(g, **kw) for g in make_graphs()])


def run_generations(evaluator, ngen=2, **kw):
    """Fitness values and weights after evaluating the same population ``ngen`` times."""
    fitness, population = make_problem(**kw)
    out = []
    for g in range(1, ngen + 1):
        population = te.Population(population.members, g).evaluate(fitness, evaluator)
        weights = [a.copy() for c in population for layer in c.graph().layers()
                   for a in layer.params.values()]
        out.append((population.fitnesses(), weights))
    return out


def assert_same(a, b):
    for (fa, wa), (fb, wb) in zip(a, b, strict=True):
        assert fa == fb
        assert len(wa) == len(wb) and all(np.array_equal(p, q) for p, q in zip(wa, wb))


@pytest.fixture(scope="module")
def serial_result():
    return run_generations(SerialEvaluator())


@pytest.fixture(scope="module")
def dask_client():
    distributed = pytest.importorskip("distributed")
    cluster = client = None
    try:
        cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                           dashboard_address=None)
        client = distributed.Client(cluster)
        yield client
    finally:
        if client is not None:
            client.close()
        if cluster is not None:
            cluster.close()


# --------------------------------------------------------------------- fast tests
def test_make_evaluator_picks_by_argument():
    assert isinstance(make_evaluator(), SerialEvaluator)
    assert isinstance(make_evaluator(workers=1), SerialEvaluator)
    ev = make_evaluator(workers=2, timeout=30)
    assert isinstance(ev, ProcessEvaluator) and ev.workers == 2 and ev.timeout == 30
    assert isinstance(make_evaluator(3), ProcessEvaluator)
    with cf.ThreadPoolExecutor(2) as pool:
        assert isinstance(make_evaluator(pool), ExecutorEvaluator)
        assert make_evaluator(pool.map).map_fn == pool.map
    custom = Reversed()
    assert make_evaluator(ev) is ev and make_evaluator(custom) is custom
    assert isinstance(make_evaluator(map), MapEvaluator)
    with pytest.raises(ValueError, match="workers"):
        make_evaluator(workers=0)
    with pytest.raises(ValueError, match="exclude"):
        make_evaluator(workers=2, dask_scheduler="tcp://h:1")
    with pytest.raises(ValueError, match="not both"):
        make_evaluator(2, workers=2)
    with pytest.raises(ValueError, match="address such as 'tcp://host:8786', got 'threads'"):
        make_evaluator("threads")
    with pytest.raises(TypeError, match=r"concurrent.futures.Executor, .* got float 3.5"):
        make_evaluator(3.5)


class Reversed:
    """A custom evaluator: evaluates the members last to first, in this process."""

    def evaluate(self, fitness, generation, members):
        done = [evaluate_candidate(fitness, generation, c) for c in members[::-1]]
        return done[::-1]


def test_a_custom_evaluator_and_a_plain_map_plug_in():
    # Without shuffling and dropout evaluation draws nothing: the order does not matter.
    plain = run_generations(None, shuffle=False, candidate=_no_dropout)
    assert_same(run_generations(Reversed(), shuffle=False, candidate=_no_dropout), plain)
    assert_same(run_generations(MapEvaluator(map), shuffle=False, candidate=_no_dropout), plain)


class GenerationLog(te.AbstractFitness):
    """Records the generation starts and the evaluations it sees, in order."""

    def __init__(self):
        self.log = []
        self.data = te.StatefulGenerationIter([[1], [2]])  # not searched for: no hook for it

    def start_generation(self, generation):
        self.log.append(("start", generation))

    def __call__(self, candidate, generation=None):
        self.log.append(("evaluate", generation))
        return 0.0


def test_an_evaluator_starts_each_generation_through_the_hook_only():
    fitness, evaluator = GenerationLog(), SerialEvaluator()
    for g in (1, 2):
        te.Population([te.CandidateModel(None)] * 2, g).evaluate(fitness, evaluator)
    assert fitness.log == [("start", 1), ("evaluate", 1), ("evaluate", 1),
                           ("start", 2), ("evaluate", 2), ("evaluate", 2)]
    assert fitness.data._current is None  # the evaluator asks the fitness, never its attributes


def test_serial_evaluator_is_plain_map_when_evaluation_draws_nothing():
    # Without shuffling and dropout, SerialEvaluator is exactly the built-in evaluation.
    plain = run_generations(None, shuffle=False, candidate=_no_dropout)
    assert_same(run_generations(SerialEvaluator(), shuffle=False, candidate=_no_dropout), plain)


def _no_dropout(graph):
    for v in graph.vertices:
        if isinstance(getattr(v, "layer", None), Dropout):
            v.layer.p = 0.0
    return te.CandidateModel(graph)


def test_serial_evaluation_leaves_the_library_generator_alone():
    fitness, population = make_problem()
    te.seed(11)
    expected = te.backend.rng().random()
    te.seed(11)
    population.evaluate(fitness, SerialEvaluator())
    assert te.backend.rng().random() == expected  # evaluation drew from its own seeds


def blas_threads(candidate):
    from threadpoolctl import threadpool_info

    return max((p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"),
               default=1)


def test_serial_evaluator_uses_one_blas_thread_like_the_workers():
    # multi-threaded OpenBLAS products differ in the last bits from single-threaded ones
    pytest.importorskip("threadpoolctl")
    assert SerialEvaluator().evaluate(blas_threads, 1, [None])[0].fitness == 1


def test_thread_pool_matches_serial_and_ships_the_fitness_on_request(serial_result):
    with cf.ThreadPoolExecutor(2) as pool:
        assert_same(run_generations(ExecutorEvaluator(pool)), serial_result)


class Relay(cf.Executor):
    """Hands tasks to ``pool``, recording whether each carried the run's fitness; says how many
    workers it has only where ``workers`` is given."""

    def __init__(self, pool, workers=None):
        self.pool, self.carried = pool, []
        if workers is not None:
            self._max_workers = workers

    def submit(self, fn, task, *args):
        self.carried.append(task.payload is not None)
        return self.pool.submit(fn, task, *args)


def test_the_fitness_goes_with_a_first_task_per_worker_else_on_request(serial_result):
    with cf.ThreadPoolExecutor(2) as pool:
        told = Relay(pool, workers=2)
        assert_same(run_generations(ExecutorEvaluator(told)), serial_result)
        assert told.carried == [True, True] + [False] * 6          # 2 generations of 4
        untold = Relay(pool)
        assert_same(run_generations(ExecutorEvaluator(untold)), serial_result)
        assert not any(untold.carried[:4]) and any(untold.carried[4:])  # asked for it


def broken_fitness(candidate):
    raise ValueError("bad candidate")


def test_a_fitness_that_raises_raises_as_in_a_serial_run():
    broken = broken_fitness
    with cf.ThreadPoolExecutor(1) as pool, pytest.raises(ValueError, match="bad candidate"):
        te.Population([te.CandidateModel(None)]).evaluate(broken, ExecutorEvaluator(pool))


# --------------------------------------------------------------------- process pool
@pytest.mark.slow
def test_process_pool_matches_serial(serial_result):
    with ProcessEvaluator(workers=2) as evaluator:
        assert_same(run_generations(evaluator), serial_result)


@pytest.mark.slow
def test_process_pool_survives_killed_and_stuck_workers(tmp_path, caplog):
    fitness, population = make_problem(candidate=Saboteur)
    population.members[0].action, population.members[0].marker = "kill-once", str(tmp_path / "k")
    population.members[2].action = "kill-always"
    population.members[3].action = "hang"
    t0 = time.monotonic()
    with caplog.at_level(logging.WARNING, "tinyevo"), \
            ProcessEvaluator(workers=2, retries=1, timeout=3) as evaluator:
        evaluated = population.evaluate(fitness, evaluator)
    assert time.monotonic() - t0 < 40
    fits = evaluated.fitnesses()
    assert len(fits) == 4 and evaluated.fitted
    assert fits[0] >= 0 and fits[1] >= 0  # killed once: retried; innocent bystander: retried
    assert fits[2] == -1.0 and fits[3] == -1.0  # keeps killing; stuck: the invalid fitness
    assert "time limit of 3 s" in caplog.text
    # The always-killing candidate is given up after its retry when it crashed alone (2
    # failures), or after one more run on its own when others were in flight with it (3): it
    # depends on the timing (whether the stuck candidate's time limit had expired by then).
    assert re.search(r"the worker failed [23] times", caplog.text)
    assert not np.array_equal(first_weight(evaluated[0]), first_weight(population[0]))


def first_weight(candidate):
    return next(iter(candidate.graph().layers())).params["weight"]


# --------------------------------------------------------------------- dask
@pytest.mark.slow
def test_dask_matches_serial(serial_result, dask_client):
    with DaskEvaluator(dask_client) as evaluator:
        assert_same(run_generations(evaluator), serial_result)
    with make_evaluator(dask_client.get_executor()) as evaluator:
        assert isinstance(evaluator, DaskEvaluator)


@pytest.mark.slow
def test_dask_survives_a_killed_worker(tmp_path, dask_client, serial_result):
    fitness, population = make_problem(candidate=Saboteur)
    population.members[1].action, population.members[1].marker = "kill-once", str(tmp_path / "k")
    with DaskEvaluator(dask_client) as evaluator:
        evaluated = population.evaluate(fitness, evaluator)
    assert os.path.exists(tmp_path / "k")  # a worker did die
    assert evaluated.fitted and len(evaluated) == 4
    assert evaluated.fitnesses() == serial_result[0][0]  # nothing lost, nothing changed


def test_a_cupy_run_starts_its_workers_by_spawn(monkeypatch):
    # CUDA does not survive a fork once initialised, and the fork server imports tinyevo (which
    # selects CuPy at import where TINYEVO_BACKEND says so): CuPy runs spawn their workers.
    from tinyevo import backend as B

    default = ProcessEvaluator(2)
    assert default._start_method() == default.mp_context
    monkeypatch.setattr(B, "name", lambda: "cupy")
    assert default._start_method() == "spawn"
    assert ProcessEvaluator(2, mp_context="forkserver")._start_method() == "forkserver"
    with pytest.raises(ValueError, match="mp_context='fork' cannot start workers"):
        ProcessEvaluator(2, mp_context="fork")._start_method()
