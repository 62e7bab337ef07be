"""Time to draw a 100+ vertex graph from the seed README's "complex search space".

The draw builds every vertex and initialises every layer (glorot-uniform weights of up to
256x256x5x5 convolutions), so the figure is split into the time spent initialising weights
(tinyevo.layers.init) and the time the search spaces themselves take.

Run with ``python benchmarks/bench_search.py [--repeat 5]`` or under pytest-benchmark:
``pytest benchmarks/bench_search.py --benchmark-enable``.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

import tinyevo as te
import tinyevo.layers.conv as _conv
import tinyevo.layers.dense as _dense
from tinyevo.search.examples import complex_search_space

SEED = 5          # a draw of the complex space with 100+ vertices (checked below)


def complex_space(classes: int = 10) -> te.AbstractArchSpace:
    """The seed README's complex search space (tinyevo.search.examples)."""
    return complex_search_space(classes)


def draw(space: te.AbstractArchSpace, seed: int = SEED) -> te.CompGraph:
    inp = te.input_vertex("input", 3, "conv2d")
    return te.CompGraph(inp, space(inp, np.random.default_rng(seed)))


def measure(repeat: int = 5) -> dict:
    space = complex_space()
    graph = draw(space)                       # warm-up, and the size of the drawn graph
    init_time = [0.0]
    original = _conv.initialize

    def timed_init(*args, **kwargs):
        t = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            init_time[0] += time.perf_counter() - t

    _conv.initialize = _dense.initialize = timed_init
    try:
        t = time.perf_counter()
        for _ in range(repeat):
            draw(space)
        total = (time.perf_counter() - t) / repeat
    finally:
        _conv.initialize = _dense.initialize = original
    init = init_time[0] / repeat
    return {"vertices": len(graph), "params": graph.nparams(), "draw_s": total,
            "init_s": init, "spaces_s": total - init}


def test_draw_complex_space(benchmark):
    space = complex_space()
    graph = benchmark(draw, space)
    assert len(graph) >= 100


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    r = measure(args.repeat)
    assert r["vertices"] >= 100, f"seed {SEED} drew only {r['vertices']} vertices"
    print(f"complex search space, seed {SEED}: {r['vertices']} vertices, "
          f"{r['params']:,} parameters")
    print(f"draw: {r['draw_s'] * 1e3:.0f} ms per graph (weight init {r['init_s'] * 1e3:.0f} ms, "
          f"search spaces and vertices {r['spaces_s'] * 1e3:.1f} ms)")


if __name__ == "__main__":
    main()
