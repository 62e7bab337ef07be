"""Time to cross two 100+ vertex conv graphs over.

Both graphs are drawn from the seed README's "complex search space" (different seeds). Timed:

- ``swap``: one ``CrossoverSwap()((g1, g2))`` on the graphs: two copies, the segment search,
  crosswise reconnection and the size alignment (the copies are also reported on their own);
- ``autoflux``: AutoFlux's graph crossover, ``VertexCrossover(MutationProbability(
  CrossoverSwap(), 0.05))``: every vertex of g1 paired, a swap at 5 % of the pairs;
- ``every_pair``: ``VertexCrossover(CrossoverSwap(0.5), 0.5)``, a swap tried at every pair
  (the worst case: ~100 swaps, each copying both graphs).

One generation of AutoFlux on a population of 32 crosses at most 16 pairs with ``autoflux``, so
the aim (well under 1 s for a generation's operators) means well under ~60 ms per pair.

Run with ``python benchmarks/bench_crossover.py [--repeat 10]`` or under pytest-benchmark:
``pytest benchmarks/bench_crossover.py --benchmark-enable``.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

import tinyevo as te
from tinyevo.evolution.crossover import CrossoverSwap, VertexCrossover
from tinyevo.evolution.mutation import MutationProbability
from tinyevo.search.examples import complex_search_space

SEEDS = (5, 15)   # first seeds tried for two draws of the complex space with 100+ vertices


def complex_space(classes: int = 10) -> te.AbstractArchSpace:
    """The seed README's complex search space (tinyevo.search.examples)."""
    return complex_search_space(classes)


def graphs() -> tuple[te.CompGraph, te.CompGraph]:
    space = complex_space()
    out = []
    for prefix, seed in zip("AB", SEEDS):
        while True:                                   # the next seed that draws 100+ vertices
            inp = te.input_vertex("input", 3, "conv2d")
            g = te.CompGraph(inp, space(inp, np.random.default_rng(seed)))
            if len(g) >= 100:
                break
            seed += 1
        out.append(g.copy(rename=lambda s, p=prefix: f"{p}.{s}"))
    return out[0], out[1]


OPERATORS = {
    "swap": lambda rng: CrossoverSwap(rng=rng),
    "autoflux": lambda rng: VertexCrossover(MutationProbability(CrossoverSwap(rng=rng), 0.05,
                                                                rng=rng), rng=rng),
    "every_pair": lambda rng: VertexCrossover(CrossoverSwap(0.5, rng=rng), 0.5, rng=rng),
}


def measure(repeat: int = 10) -> dict:
    g1, g2 = graphs()
    res = {"vertices": (len(g1), len(g2)), "params": (g1.nparams(), g2.nparams())}
    t = time.perf_counter()
    for _ in range(repeat):
        g1.copy(), g2.copy()
    res["copy_both_s"] = (time.perf_counter() - t) / repeat
    copy_time = [0.0]
    original = te.CompGraph.copy

    def timed_copy(self, *args, **kwargs):
        t = time.perf_counter()
        try:
            return original(self, *args, **kwargs)
        finally:
            copy_time[0] += time.perf_counter() - t

    te.CompGraph.copy = timed_copy
    try:
        for name, make in OPERATORS.items():
            n = repeat if name != "every_pair" else max(1, repeat // 5)
            rng = np.random.default_rng(0)
            changed = 0
            copy_time[0] = 0.0
            t = time.perf_counter()
            for _ in range(n):
                c1, c2 = make(rng)((g1, g2))
                changed += (c1 is not g1) + (c2 is not g2)
            res[f"{name}_s"] = (time.perf_counter() - t) / n
            res[f"{name}_copy_s"] = copy_time[0] / n
            res[f"{name}_changed"] = changed / (2 * n)
    finally:
        te.CompGraph.copy = original
    return res


def test_crossover_swap(benchmark):
    g1, g2 = graphs()
    assert min(len(g1), len(g2)) >= 100
    swap = CrossoverSwap(rng=np.random.default_rng(0))
    c1, c2 = benchmark(swap, (g1, g2))
    c1.validate()
    c2.validate()


def test_autoflux_vertex_crossover(benchmark):
    g1, g2 = graphs()
    op = OPERATORS["autoflux"](np.random.default_rng(0))
    c1, c2 = benchmark(op, (g1, g2))
    c1.validate()
    c2.validate()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=10)
    args = parser.parse_args()
    r = measure(args.repeat)
    print(f"complex search space: {r['vertices']} vertices, "
          f"{r['params'][0]:,} and {r['params'][1]:,} parameters")
    print(f"copy both graphs (CompGraph.copy): {r['copy_both_s'] * 1e3:.1f} ms")
    for name in OPERATORS:
        total, cp = r[f"{name}_s"], r[f"{name}_copy_s"]
        print(f"{name:>10}: {total * 1e3:7.1f} ms per pair, of which copying {cp * 1e3:6.1f} ms,"
              f" crossover itself {(total - cp) * 1e3:6.1f} ms "
              f"(children changed: {r[f'{name}_changed']:.0%})")
    a, c = r["autoflux_s"], r["autoflux_copy_s"]
    print(f"one generation, 16 pairs with autoflux: {16 * a * 1e3:.0f} ms "
          f"({16 * (a - c) * 1e3:.0f} ms without the copies every child needs anyway)")


if __name__ == "__main__":
    main()
