"""Speed-up of parallel fitness evaluation: one generation of 8 conv candidates on digits.

Each candidate (two 3x3 conv layers of 8-24 channels, global pooling, a dense head) trains on
one partition of the digits training set (``--batches`` batches of 32) and is measured on the
test split. The same generation is evaluated serially in this process (SerialEvaluator: one BLAS
thread, what a user gets without ``--workers``; and with the process's default BLAS threads) and
by a ProcessEvaluator with ``--workers`` processes (one BLAS thread each). ``warm`` times a
generation on a running pool (of a new run: each worker is sent the fitness with its first
task), ``cold`` includes starting it; ``in index order`` is the warm pool handing the
candidates out in the members' order instead of costliest first (by parameter count). Every
measurement is repeated ``--repeats`` times and the range is printed:

    speed-up = serial seconds / parallel seconds        (aim on 2 cores: >= 1.85x)

against a serial evaluation on one thread of each kind (BLAS and tinyevo's own), as each worker
runs; serial evaluation by default also spreads tinyevo's elementwise passes over the cores,
which leaves less for processes to gain.

Results are checked to be identical to the serial ones. Last, where the workers' time went in
the warm runs (the phase timings each result brings back, :mod:`tinyevo.evolution.timing`) and
how many bytes a candidate and a result take to ship; and, with 2 workers, the ceiling these
cores set (two serial one-thread evaluations at once, in two processes, against one alone: what
each loses to the other when both cores are busy). Run with
``python benchmarks/bench_parallel.py [--workers 2] [--repeats 3]``.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

import tinyevo as te
from tinyevo.app._workers import dumps, pin_threads
from tinyevo.app.datasets import load_digits
from tinyevo.app.executors import ProcessEvaluator, SerialEvaluator
from tinyevo.evolution.iterators import BatchIterator
from tinyevo.evolution.timing import take
from tinyevo.layers import Conv, Dense, GlobalPool


def conv_candidates(n: int = 8) -> list:
    rng = np.random.default_rng(0)
    graphs = []
    for _ in range(n):
        c1, c2 = (int(c) for c in rng.integers(8, 25, 2))
        inp = te.input_vertex("in", 1, "conv2d")
        v = te.vertex(Conv(1, c1, (3, 3), padding="same", activation="relu"), inp, name="c1")
        v = te.vertex(Conv(c1, c2, (3, 3), padding="same", activation="relu"), v, name="c2")
        v = te.vertex(GlobalPool("mean"), v, name="gpool")
        graphs.append(te.CompGraph(inp, te.vertex(Dense(c2, 10), v, name="out")))
    return [te.CandidateModel(g) for g in graphs]


def problem(batches: int):
    te.seed(0)
    train, test = load_digits("train"), load_digits("test")
    data = te.RepeatPartitionIterator(BatchIterator(train, 32, shuffle=True), batches, cycle=True)
    fitness = te.TrainThenFitness(data, te.losses.logit_cross_entropy, te.optimizers.Adam(0.01),
                                  te.AccuracyFitness([test]))
    return fitness, te.Population(conv_candidates())


def timed(evaluator, batches: int) -> tuple[float, list]:
    t, evaluated = evaluation(evaluator, batches)
    return t, evaluated.fitnesses()


def evaluation(evaluator, batches: int) -> tuple[float, te.Population]:
    """Seconds to evaluate the generation with ``evaluator``, and the evaluated generation."""
    fitness, population = problem(batches)
    t0 = time.perf_counter()
    evaluated = population.evaluate(fitness, evaluator)
    return time.perf_counter() - t0, evaluated


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batches", type=int, default=42, help="training batches per candidate")
    args = parser.parse_args()
    print(f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}; 8 conv candidates, "
          f"{args.batches} batches of 32 each")
    timed(SerialEvaluator(), args.batches)  # warm caches and imports
    serial, single, one, parallel, cold, in_order = [], [], [], [], [], []
    phases: dict[str, float] = {}
    own_threads = te.backend.num_threads()
    for _ in range(args.repeats):
        serial.append(timed(SerialEvaluator(single_thread=False), args.batches)[0])
        t, serial_fits = timed(SerialEvaluator(), args.batches)
        single.append(t)
        te.backend.set_num_threads(1)          # as in each worker: one thread of each kind
        try:
            one.append(timed(SerialEvaluator(), args.batches)[0])
        finally:
            te.backend.set_num_threads(own_threads)
        with ProcessEvaluator(workers=args.workers) as evaluator:
            t, fits = timed(evaluator, args.batches)  # the pool starts inside this call
            cold.append(t)
            take()
            t, evaluated = evaluation(evaluator, args.batches)
            parallel.append(t)
            for name, value in take().items():
                phases[name] = phases.get(name, 0.0) + value
            evaluator.cost = lambda member: 0        # ties: the members' order
            t, fits_in_order = timed(evaluator, args.batches)
            in_order.append(t)
        if not fits == evaluated.fitnesses() == fits_in_order == serial_fits:
            raise SystemExit(f"results differ: serial {serial_fits}, parallel {fits}, "
                             f"{evaluated.fitnesses()}, {fits_in_order}")
    print(f"serial, 1 BLAS thread    {_range(single)} s   (SerialEvaluator(); tinyevo's "
          f"own passes on {own_threads} threads)")
    print(f"serial, 1 thread         {_range(one)} s   (also tinyevo's own passes on one: "
          "what each worker runs)")
    print(f"serial, default threads  {_range(serial)} s   (single_thread=False)")
    print(f"{args.workers} workers (warm)         {_range(parallel)} s")
    print(f"{args.workers} workers (cold)         {_range(cold)} s   (includes starting the pool)")
    print(f"{args.workers} workers, index order {_range(in_order)} s   (warm; not costliest first)")
    for name, base in (("1 thread", one), ("1 BLAS thread", single),
                       ("default threads", serial)):
        ratios = [s / p for s, p in zip(base, parallel)]
        print(f"speed-up vs serial, {name}: {min(ratios):.2f}x .. {max(ratios):.2f}x "
              f"(median {np.median(ratios):.2f}x)")
    gain = np.median(in_order) / np.median(parallel)
    print(f"speed-up of costliest first over index order: {gain:.2f}x (medians)")
    print(where_the_time_went(phases, args.workers * sum(parallel), evaluated))
    if args.workers == 2:
        limit = ceiling(args.batches, args.repeats)
        print(f"ceiling on these cores: {min(limit):.2f}x .. {max(limit):.2f}x (median "
              f"{np.median(limit):.2f}x; two serial one-thread evaluations at once, in two "
              "processes, against one alone)")
    print(f"identical fitness values; load average now {os.getloadavg()[0]:.1f}")


def ceiling(batches: int, repeats: int) -> list[float]:
    """The speed-up the two cores allow with no scheduling at all: two processes evaluating the
    whole generation serially on one thread each, started together, against one alone
    (2 x alone / together). Below 2 by what each loses to the other when both cores are busy
    (shared cache and memory bandwidth)."""
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    ctx = mp.get_context("forkserver" if "forkserver" in mp.get_all_start_methods() else "spawn")
    with ctx.Manager() as manager, ProcessPoolExecutor(2, mp_context=ctx,
                                                       initializer=pin_threads) as pool:
        both, alone = manager.Barrier(2), manager.Barrier(1)
        ratios = []
        for _ in range(repeats):
            t_alone = pool.submit(_evaluate_at, alone, batches).result()
            t_both = [f.result() for f in [pool.submit(_evaluate_at, both, batches)
                                           for _ in range(2)]]
            ratios.append(2 * t_alone / max(t_both))
    return ratios


def _evaluate_at(barrier, batches: int) -> float:
    timed(SerialEvaluator(), batches)  # warm this process
    barrier.wait()
    return timed(SerialEvaluator(), batches)[0]


def where_the_time_went(phases: dict, worker_seconds: float, evaluated: te.Population) -> str:
    """The warm runs' worker time by phase, and what a candidate and a result weigh."""
    inside = phases["train"] + phases["validate"] + phases["serialise"]
    shares = {"train": phases["train"], "validate": phases["validate"],
              "serialise": phases["serialise"], "other in a task": phases["busy"] - inside,
              "idle": worker_seconds - phases["busy"]}
    sizes = [len(dumps(c.candidate)) for c in evaluated]
    results = [len(dumps(c)) for c in evaluated]
    return ("workers' time (warm runs): " + ", ".join(
        f"{name} {100 * v / worker_seconds:.1f} %" for name, v in shares.items())
        + f"; this process shipping {1e3 * phases['ship']:.1f} ms in all\n"
        f"shipped per candidate: {np.mean(sizes) / 1024:.0f} KiB out, "
        f"{np.mean(results) / 1024:.0f} KiB back (means)")


def _range(xs: list) -> str:
    return f"{min(xs):6.2f} .. {max(xs):6.2f} (median {np.median(xs):.2f})"


if __name__ == "__main__":
    main()
