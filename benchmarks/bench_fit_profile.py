"""Where a ``fit`` run's time goes, and its training throughput against one model trained alone.

    python benchmarks/bench_fit_profile.py ~/data/mnist                # 3 minutes, 2 workers
    python benchmarks/bench_fit_profile.py ~/data/mnist --time 40      # a quick look

Runs ``tinyevo.fit`` on MNIST (DIR holds the four gzipped IDX files) with the defaults, the
given worker processes and time limit, and reads the phase timings of its per-generation
progress events (docs/fit.md, "timings"). The search part of the run (up to the last
generation's event) is profiled; the final training that the defaults give MNIST (one model
alone, in this process) is reported beside it. Printed:

- the share of the workers' time (workers x the evaluations' wall time, and workers x the
  search's wall time: the cores a run on that many workers has) in training, validation,
  (de)serialising candidates, other work inside a task, idle waiting in a generation (its
  tail), and, in the second, outside the evaluations (operators, checkpoints, start-up);
- the share of the search's wall time in the parent's operators (selection, mutation,
  crossover), checkpoints (hall of fame, callbacks, save, gc) and shipping candidates;
- the training throughput: samples trained by all candidates together per second of the
  search's wall time;
- the baseline: the candidate of median multiply-adds over all the generations, rebuilt
  with fresh weights and trained alone for ``--alone`` seconds in a plain loop (same batch
  size, the same optimiser kind) with tinyevo's default threads (the issue's baseline: one
  model on the same cores); its samples per second and the ratio of fit's throughput to it;
  then the same on one thread, as each worker runs, and what the pool keeps of it (fit's
  throughput over workers x that).

Targets (issue #26): training + validation >= 85 % of the cores' time; throughput ratio >= 0.8;
operators < 2 % of the wall time. Not run by the tests: it takes minutes and needs the cores.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time

import tinyevo  # first: it sets OpenBLAS's thread wait before NumPy loads OpenBLAS

# isort: split
import numpy as np

from tinyevo.app import FitConfig
from tinyevo.evolution.candidate import graph, opt
from tinyevo.losses import logit_cross_entropy

TARGETS = {"busy": 0.85, "ratio": 0.8, "operators": 0.02}


def main(argv: list[str] | None = None) -> None:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.time <= 0 or args.alone <= 0 or args.workers < 1:
        parser.error(f"expected --time and --alone > 0 seconds and --workers >= 1, got "
                     f"{args.time:g}, {args.alone:g} and {args.workers}")
    argv = sys.argv[1:] if argv is None else argv
    print("command: python benchmarks/bench_fit_profile.py " + " ".join(argv))
    (x, y), _ = tinyevo.load_dataset(f"mnist:{args.data}")     # as bench_mnist.py loads it
    print(f"MNIST: {len(x)} training images; {os.cpu_count()} CPUs, load average "
          f"{os.getloadavg()[0]:.1f}; fit with the defaults, {args.workers} workers, "
          f"{args.time:g} s, seed {args.seed}", flush=True)
    run = profile_fit(x, y, args.time, args.workers, args.seed)
    print(report(run, args.workers))
    median = median_candidate(run["candidates"])
    alone = train_alone(median, x, y, FitConfig().batch_size, args.alone, args.seed)
    print(f"\nalone: the median candidate ({median['nparams']} parameters, "
          f"{median['macs'] / 1e6:.2f} M multiply-adds a sample; of {len(run['candidates'])} "
          f"evaluated) rebuilt with fresh weights, trained alone for {alone['seconds']:.0f} s "
          f"in batches of {alone['batch']} with {type(median['opt']).__name__}, "
          f"{tinyevo.backend.num_threads()} tinyevo threads: {alone['rate']:.0f} samples/s")
    ratio = run["throughput"] / alone["rate"]
    print(f"fit's throughput / alone: {ratio:.2f}")
    with one_thread():
        single = train_alone(median, x, y, FitConfig().batch_size, args.alone, args.seed)
    print(f"the same alone on one thread (as each worker runs): {single['rate']:.0f} samples/s; "
          f"fit's throughput / ({args.workers} x that): "
          f"{run['throughput'] / (args.workers * single['rate']):.2f} (what the pool keeps of "
          "one-thread training)")
    print(targets(run, args.workers, ratio))
    print(f"load average now {os.getloadavg()[0]:.1f}")


def profile_fit(x: np.ndarray, y: np.ndarray, seconds: float, workers: int, seed: int) -> dict:
    """Run fit, keeping its generation events and, per evaluated candidate, what rebuilding
    it takes (spec, parameter count, multiply-adds, optimiser)."""
    events, candidates = [], []

    def keep(population):        # a callback: its time counts in the "checkpoint" phase
        for c in population.members:
            g = graph(c)
            candidates.append({"spec": g.to_spec(), "nparams": g.nparams(),
                               "macs": g.macs(x.shape[2:]), "opt": opt(c).copy()})

    t0 = time.monotonic()
    tinyevo.fit(x, y, time_limit=seconds, executor=workers, seed=seed,
                progress=events.append, callbacks=[keep])
    wall = time.monotonic() - t0
    generations = [e for e in events if e["event"] == "generation"]
    finals = [e for e in events if e["event"] == "final" and "fitness" in e]
    search = generations[-1]["elapsed"]
    totals = {}
    for e in generations:
        for name, value in e["timings"].items():
            if isinstance(value, (int, float)) and name != "workers":
                totals[name] = totals.get(name, 0) + value
    return {"wall": wall, "search": search, "generations": len(generations),
            "totals": totals, "final": finals[-1] if finals else None,
            "throughput": totals["train_samples"] / search, "candidates": candidates}


def report(run: dict, workers: int) -> str:
    """The table of shares."""
    t, search = run["totals"], run["search"]
    evaluations = workers * t["evaluate_wall"]
    cores = workers * search
    other = t["busy"] - t["train"] - t["validate"] - t["serialise"]
    rows = [("train", t["train"]), ("validate", t["validate"]),
            ("serialise (worker)", t["serialise"]), ("other in a task", other),
            ("idle (tail, pool start)", t["idle"])]
    lines = [f"\nrun: {run['wall']:.1f} s wall; search {search:.1f} s ({run['generations']} "
             f"generations, {t['evaluate_wall']:.1f} s evaluating)" + _final(run),
             f"{'workers time':24s}{'of workers x evaluations':>26s}{'of workers x search':>22s}"]
    lines += [f"  {name:22s}{_pct(v, evaluations):>26s}{_pct(v, cores):>22s}"
              for name, v in rows]
    lines.append(f"  {'outside evaluations':22s}{'':>26s}"
                 f"{_pct(cores - evaluations, cores):>22s}")
    lines.append(f"{'parent':24s}{'of the search wall':>26s}")
    lines += [f"  {name:22s}{_pct(t[name], search):>26s}"
              for name in ("operators", "checkpoint", "ship")]
    lines.append(f"training throughput: {run['throughput']:.0f} samples/s ("
                 f"{t['train_samples']:.0f} samples, all candidates, over the search's wall)")
    return "\n".join(lines)


def median_candidate(candidates: list[dict]) -> dict:
    """The candidate of median size by multiply-adds a sample, what its training time follows
    (the parameter count ranks it far worse; docs/parallel.md); the lower one of an even count."""
    ranked = sorted(candidates, key=lambda c: c["macs"])
    return ranked[(len(ranked) - 1) // 2]


@contextlib.contextmanager
def one_thread():
    """BLAS and tinyevo's own passes on one thread, as in each worker process."""
    from threadpoolctl import threadpool_limits

    threads = tinyevo.backend.num_threads()
    tinyevo.backend.set_num_threads(1)
    try:
        with threadpool_limits(1):
            yield
    finally:
        tinyevo.backend.set_num_threads(threads)


def train_alone(candidate: dict, x: np.ndarray, y: np.ndarray, batch: int, seconds: float,
                seed: int) -> dict:
    """Samples per second of ``candidate``'s architecture, fresh weights, trained alone on
    shuffled batches for ``seconds`` (after three warm-up steps) with a fresh optimiser."""
    tinyevo.seed(seed)
    model, optimizer = tinyevo.CompGraph.from_spec(candidate["spec"]), candidate["opt"].copy()
    rng = np.random.default_rng(seed)

    def step(idx):
        out, backprop = model.forward(x[idx], train=True)
        _, dout = logit_cross_entropy(out, y[idx])
        backprop(dout, need_dx=False)
        optimizer.update(model)

    order = rng.permutation(len(x))
    for i in range(3):
        step(order[i * batch:(i + 1) * batch])
    samples, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        order = rng.permutation(len(x))
        for i in range(0, len(x) - batch + 1, batch):
            step(order[i:i + batch])
            samples += batch
            if time.perf_counter() - start >= seconds:
                break
    elapsed = time.perf_counter() - start
    return {"rate": samples / elapsed, "seconds": elapsed, "batch": batch}


def targets(run: dict, workers: int, ratio: float) -> str:
    """The issue's three targets, each with the figure measured and whether it is met."""
    t, search = run["totals"], run["search"]
    steps = (t["train"] + t["validate"]) / (workers * search)
    rows = [(f"train + validate of {workers} cores' search time", steps, ">=", TARGETS["busy"]),
            ("fit's throughput / alone", ratio, ">=", TARGETS["ratio"]),
            ("operators of the search's wall time", t["operators"] / search, "<",
             TARGETS["operators"])]
    lines = ["targets:"]
    for name, value, op, aim in rows:
        met = value >= aim if op == ">=" else value < aim
        shown = f"{value:.2f}" if name.startswith("fit") else f"{100 * value:.1f} %"
        aimed = f"{aim:.2f}" if name.startswith("fit") else f"{100 * aim:.0f} %"
        lines.append(f"  {name:44s} {shown:>8s}  (aim {op} {aimed}: "
                     f"{'met' if met else 'NOT met'})")
    return "\n".join(lines)


def _final(run: dict) -> str:
    final = run["final"]
    if final is None:
        return "; no final training"
    return (f"; final training {final['seconds']:.1f} s ({final['steps']} steps, "
            f"{final['steps'] / final['seconds']:.1f} steps/s)")


def _pct(value: float, whole: float) -> str:
    return f"{100 * value / whole:5.1f} %" if whole > 0 else "    -"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("data", help="folder with MNIST's four gzipped IDX files")
    p.add_argument("--time", type=float, default=180.0, help="fit's time limit in seconds")
    p.add_argument("--workers", type=int, default=2, help="worker processes")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--alone", type=float, default=30.0,
                   help="seconds the median candidate trains alone")
    return p


if __name__ == "__main__":
    main()
