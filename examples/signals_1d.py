"""A custom search space on 1-D signals: classify noisy sine, square and sawtooth waves.

    python examples/signals_1d.py                # about a minute
    python examples/signals_1d.py --smoke        # seconds (CI)
"""

from __future__ import annotations

import argparse

import numpy as np

import tinyevo as te


def waves(n: int, length: int = 64, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(n, 1, length) signals of three shapes with random frequency, phase and noise."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    t = np.linspace(0, 1, length, dtype=np.float32)
    freq = rng.uniform(2, 6, (n, 1))
    phase = rng.uniform(0, 1, (n, 1))
    cycles = (freq * t + phase) % 1.0
    shapes = [np.sin(2 * np.pi * cycles), np.where(cycles < 0.5, 1.0, -1.0), 2 * cycles - 1]
    x = np.choose(y[:, None], shapes) + 0.3 * rng.standard_normal((n, length))
    return x[:, None, :].astype(np.float32), y


def search_space(nclasses: int) -> te.ArchSpaceChain:
    """Conv1d blocks with wide kernels (signals are long and smooth), then a dense head."""
    conv = te.VertexSpace(te.ConvSpace(1, range(4, 17), ["relu", "elu"], kernelsizes=(3, 5, 9)))
    bn = te.VertexSpace(te.BatchNormSpace(["identity", "relu"]))
    block = te.RepeatArchSpace(te.ArchSpace(conv, te.ArchSpaceChain(conv, bn)), range(1, 3))
    pool = te.VertexSpace(te.PoolSpace(1, 2, 2, "max"))
    head = te.VertexSpace(te.DenseSpace(nclasses, "identity"), shielded=True)
    return te.ArchSpaceChain(block, pool, block, pool, te.GlobalPoolSpace(), head)


def main(argv: list[str] | None = None) -> float:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--smoke", action="store_true", help="tiny settings for a quick check")
    args = p.parse_args(argv)
    n, gens, pop = (200, 2, 3) if args.smoke else (1500, 10, 8)
    x, y = waves(n)
    x_test, y_test = waves(n // 4, seed=1)
    population = te.fit(x, y, generations=gens, population_size=pop, seed=0,
                        search_space=search_space(3),
                        batches_per_generation=4 if args.smoke else None)
    accuracy = population.best().evaluate(x_test, y_test)
    print(f"best model after {population.generation} generations: test accuracy "
          f"{100 * accuracy:.1f} %, {population.best().graph().nparams():,} parameters")
    return accuracy


if __name__ == "__main__":
    main()
