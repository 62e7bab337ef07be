"""Phase timing: the per-thread totals, the phases evaluators and fit record, and the order in
which the pool evaluators hand candidates out. Nothing here asserts a duration."""

from __future__ import annotations

import concurrent.futures as cf
import threading

import numpy as np
import pytest

import tinyevo as te
from tinyevo.app.executors import ExecutorEvaluator, ProcessEvaluator, SerialEvaluator
from tinyevo.app.fitting import PHASES
from tinyevo.evolution.iterators import BatchIterator
from tinyevo.evolution.timing import count, merge, phase, take
from tinyevo.layers import Dense

TINY = dict(population_size=3, batches_per_generation=2, batch_size=16, widths=(4, 8), seed=5)


def test_phases_add_up_per_name_and_take_resets():
    take()
    with phase("a"):
        with phase("b"):
            count("n", 3)
    with phase("a"):
        count("n", 4)
    merge({"a": 10.0, "c": 1.0})
    totals = take()
    assert set(totals) == {"a", "b", "n", "c"}
    assert totals["n"] == 7 and totals["c"] == 1.0
    assert totals["a"] >= 10.0 + totals["b"] and totals["b"] >= 0
    assert take() == {}


def test_a_phase_counts_when_its_block_raises():
    take()
    with pytest.raises(KeyError), phase("broken"):
        raise KeyError("x")
    assert "broken" in take()


def test_each_thread_keeps_its_own_totals():
    take()
    seen = {}

    def other():
        with phase("there"):
            pass
        seen.update(take())

    count("here", 1)
    t = threading.Thread(target=other)
    t.start()
    t.join()
    assert set(seen) == {"there"} and take() == {"here": 1}


# --------------------------------------------------------------------- evaluators
def problem(widths=(3, 9, 5, 7)):
    """A fitness that trains on 3 batches of 8 a generation, and dense candidates of
    ``widths`` hidden units."""
    te.seed(3)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((48, 6), dtype=np.float32)
    y = rng.integers(0, 3, 48)
    train = te.RepeatPartitionIterator(BatchIterator((x, y), 8), 3, cycle=True)
    fitness = te.TrainThenFitness(train, te.losses.logit_cross_entropy, te.optimizers.Adam(0.01),
                                  te.AccuracyFitness([(x, y)]))
    members = []
    for n in widths:
        inp = te.input_vertex("in", 6, "dense")
        hidden = te.vertex(Dense(6, n, "relu"), inp, name="h")
        members.append(te.CandidateModel(te.CompGraph(inp, te.vertex(Dense(n, 3), hidden,
                                                                      name="out"))))
    return fitness, te.Population(members)


def test_the_serial_evaluator_records_each_phase_in_process():
    fitness, population = problem()
    take()
    population.evaluate(fitness, SerialEvaluator())
    totals = take()
    assert totals["train_samples"] == 4 * 3 * 8
    assert totals["train"] > 0 and totals["validate"] > 0
    assert totals["busy"] >= totals["train"] + totals["validate"]


@pytest.mark.slow
def test_worker_phases_come_back_with_the_results():
    fitness, population = problem()
    take()
    with ProcessEvaluator(workers=2) as evaluator:
        evaluated = population.evaluate(fitness, evaluator)
    totals = take()
    assert evaluated.fitted
    assert totals["train_samples"] == 4 * 3 * 8
    assert totals["busy"] >= totals["train"] + totals["validate"] + totals["serialise"]
    assert totals["train"] > 0 and totals["serialise"] > 0 and totals["ship"] > 0


ORDER: list[int] = []     # what Recorder evaluated; a thread pool shares this module


class Recorder(te.AbstractFitness):
    """Records the hidden width of each candidate it evaluates, in order (its copies in the
    pool's threads too)."""

    def __call__(self, candidate, generation=None):
        ORDER.append(candidate.graph()["h"].layer.nout)
        return 0.0


def test_a_pool_hands_out_the_costliest_candidate_first():
    _, population = problem()
    ORDER.clear()
    with cf.ThreadPoolExecutor(1) as pool:
        evaluator = ExecutorEvaluator(pool)
        evaluated = population.evaluate(Recorder(), evaluator)
        assert ORDER == [9, 7, 5, 3]                               # by parameter count
        assert [c.graph()["h"].layer.nout for c in evaluated] == [3, 9, 5, 7]  # in order
        ORDER.clear()
        evaluator.cost = lambda c: -c.graph().nparams()
        population.evaluate(Recorder(), evaluator)
        assert ORDER == [3, 5, 7, 9]


def test_a_cost_that_fails_or_is_not_finite_leaves_the_members_order(caplog):
    _, population = problem()
    with cf.ThreadPoolExecutor(1) as pool:
        evaluator = ExecutorEvaluator(pool)
        for cost, said in ((lambda c: 1 / 0, "ZeroDivisionError"), (lambda c: None, "TypeError"),
                           (lambda c: float("nan"), "not a finite number")):
            ORDER.clear()
            evaluator.cost = cost
            caplog.clear()
            with caplog.at_level("WARNING", logger="tinyevo"):
                population.evaluate(Recorder(), evaluator)
            assert ORDER == [3, 9, 5, 7]
            assert "evaluator.cost" in caplog.text and said in caplog.text


class Failing(te.AbstractFitness):
    """Trains a little (a phase in the worker), then fails."""

    def __call__(self, candidate, generation=None):
        with phase("train"):
            count("train_samples", 5)
        raise ValueError("this fitness fails")


def test_a_failed_task_brings_its_worker_phases_back():
    # Totals left behind in a worker would be counted in the next run on it.
    _, population = problem()
    take()
    with cf.ThreadPoolExecutor(1) as pool:
        with pytest.raises(ValueError, match="fails"):
            population.evaluate(Failing(), ExecutorEvaluator(pool))
        stayed = pool.submit(take).result()
    assert stayed == {}
    assert take()["train_samples"] == 5


def test_a_thread_pool_evaluates_one_candidate_at_a_time():
    with cf.ThreadPoolExecutor(4) as pool:
        assert ExecutorEvaluator(pool).workers == 1
    with cf.ProcessPoolExecutor(2) as pool:
        assert ExecutorEvaluator(pool).workers == 2


# --------------------------------------------------------------------- fit
def generation_timings(executor, digits):
    x, y = digits
    events = []
    te.fit(x, y, generations=2, executor=executor, progress=events.append, **TINY)
    return [e["timings"] for e in events if e["event"] == "generation"]


def check_plausible(timings, workers):
    assert len(timings) == 2
    for t in timings:
        assert set(PHASES) | {"train_samples", "workers", "evaluate_wall", "idle"} <= set(t)
        assert t["workers"] == workers
        assert t["train"] > 0 and t["validate"] > 0 and t["operators"] > 0
        assert t["checkpoint"] > 0
        assert t["train_samples"] == TINY["population_size"] * 2 * TINY["batch_size"]
        inside = t["train"] + t["validate"] + t["serialise"]
        assert inside <= t["busy"] <= workers * t["evaluate_wall"] * 1.01
        assert t["idle"] == pytest.approx(workers * t["evaluate_wall"] - t["busy"], abs=1e-9)


def test_fit_reports_each_generations_timings_serially(digits):
    timings = generation_timings(None, digits)
    check_plausible(timings, 1)
    assert all(t["serialise"] == 0 and t["ship"] == 0 for t in timings)


@pytest.mark.slow
def test_fit_reports_each_generations_timings_with_two_workers(digits):
    timings = generation_timings(2, digits)
    check_plausible(timings, 2)
    assert all(t["serialise"] > 0 and t["ship"] > 0 for t in timings)
