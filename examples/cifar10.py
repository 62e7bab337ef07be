"""Evolve a CIFAR-10 classifier from the "python version" batches you already have on disk
(cifar-10-batches-py: data_batch_1..5, test_batch; nothing is downloaded).

    python examples/cifar10.py ~/data/cifar-10-batches-py --time-limit 3600 --workers 8
"""

from __future__ import annotations

import argparse

import tinyevo as te
from tinyevo.cli import parse_duration


def main(argv: list[str] | None = None) -> float:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("directory", help="the cifar-10-batches-py folder (or the one holding it)")
    p.add_argument("--time-limit", type=parse_duration, default=3600.0)
    p.add_argument("--generations", type=int, default=None)
    p.add_argument("--population", type=int, default=24)
    p.add_argument("--workers", type=int, default=None)
    p.add_argument("--dir", default="runs/cifar10")
    p.add_argument("--smoke", action="store_true", help="tiny settings for a quick check")
    args = p.parse_args(argv)
    (x, y), (x_test, y_test) = te.load_dataset(f"cifar10:{args.directory}")
    kw = dict(time_limit=args.time_limit, generations=args.generations,
              population_size=args.population, mdir=args.dir, seed=0,
              widths=(16, 64), executor=args.workers, batch_size=64)
    if args.smoke:
        kw.update(time_limit=None, generations=1, population_size=2, batches_per_generation=2,
                  widths=(4, 8))
    population = te.fit(x, y, **kw)
    best = population.best()
    accuracy = best.evaluate(x_test, y_test)
    print(f"generation {population.generation}: test accuracy {100 * accuracy:.2f} %, "
          f"{best.graph().nparams():,} parameters; checkpoint in {args.dir}")
    return accuracy


if __name__ == "__main__":
    main()
