"""Speed-up of parallel fitness evaluation: one generation of 8 conv candidates on digits.

Each candidate (two 3x3 conv layers of 8-24 channels, global pooling, a dense head) trains on
one partition of the digits training set (``--batches`` batches of 32) and is measured on the
test split. The same generation is evaluated serially in this process (SerialEvaluator: one BLAS
thread, what a user gets without ``--workers``; and with the process's default BLAS threads) and
by a ProcessEvaluator with ``--workers`` processes (one BLAS thread each). ``warm`` times a
generation on a running pool, ``cold`` includes starting it. Every measurement is repeated
``--repeats`` times and the range is printed:

    speed-up = serial seconds / parallel seconds        (aim on 2 cores: >= 1.7x)

against a serial evaluation on one thread of each kind (BLAS and tinyevo's own), as each worker
runs; serial evaluation by default also spreads tinyevo's elementwise passes over the cores,
which leaves less for processes to gain.

Results are checked to be identical to the serial ones. Run with
``python benchmarks/bench_parallel.py [--workers 2] [--repeats 3]``.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

import tinyevo as te
from tinyevo.app.datasets import load_digits
from tinyevo.app.executors import ProcessEvaluator, SerialEvaluator
from tinyevo.evolution.iterators import BatchIterator
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
    fitness, population = problem(batches)
    t0 = time.perf_counter()
    evaluated = population.evaluate(fitness, evaluator)
    return time.perf_counter() - t0, evaluated.fitnesses()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batches", type=int, default=42, help="training batches per candidate")
    args = parser.parse_args()
    print(f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}; 8 conv candidates, "
          f"{args.batches} batches of 32 each")
    timed(SerialEvaluator(), args.batches)  # warm caches and imports
    serial, single, one, parallel, cold = [], [], [], [], []
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
            t, fits_warm = timed(evaluator, args.batches)
            parallel.append(t)
        if not fits == fits_warm == serial_fits:
            raise SystemExit(f"results differ: serial {serial_fits}, parallel {fits_warm}")
    print(f"serial, 1 BLAS thread    {_range(single)} s   (SerialEvaluator(); tinyevo's "
          f"own passes on {own_threads} threads)")
    print(f"serial, 1 thread         {_range(one)} s   (also tinyevo's own passes on one: "
          "what each worker runs)")
    print(f"serial, default threads  {_range(serial)} s   (single_thread=False)")
    print(f"{args.workers} workers (warm)         {_range(parallel)} s")
    print(f"{args.workers} workers (cold)         {_range(cold)} s   (includes starting the pool)")
    for name, base in (("1 thread", one), ("1 BLAS thread", single),
                       ("default threads", serial)):
        ratios = [s / p for s, p in zip(base, parallel)]
        print(f"speed-up vs serial, {name}: {min(ratios):.2f}x .. {max(ratios):.2f}x "
              f"(median {np.median(ratios):.2f}x)")
    print(f"identical fitness values; load average now {os.getloadavg()[0]:.1f}")


def _range(xs: list) -> str:
    return f"{min(xs):6.2f} .. {max(xs):6.2f} (median {np.median(xs):.2f})"


if __name__ == "__main__":
    main()
