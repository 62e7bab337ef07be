"""Speed of a size change with neuron selection (solve + parameter surgery) on the mutable graph.

Cases:
- ``large_tied``: a ~100-vertex residual/inception conv graph; the changed vertex is a fork path
  whose concat is tied by residual adds to every block, so the whole trunk (~35 index-space
  sources, ~1000 neurons) is solved as one MILP with scipy/HiGHS.
- ``large_untied``: the same graph, a vertex whose size is tied to nothing (the fast path).
- ``chain``: a 20-vertex conv chain (conv/BN pairs), one vertex grown and one shrunk.
- ``copy``: copying the large graph (done for every child every generation), for reference.

Aim: under 100 ms for the large graph. Run ``pytest benchmarks/bench_graph.py
--benchmark-enable`` or ``python benchmarks/bench_graph.py`` for a plain table.
"""

from __future__ import annotations

import time

import numpy as np

import tinyevo
from tinyevo.graph import (
    CompGraph,
    add,
    change_nout,
    concat,
    copy,
    input_vertex,
    track_values,
    vertex,
)
from tinyevo.layers import BatchNorm, Conv, Dense, GlobalPool


def conv(nin: int, nout: int, k: int = 3, act: str = "relu") -> Conv:
    return Conv(nin, nout, (k, k), padding="same", activation=act)


def inception_resnet(blocks: int = 11, width: int = 48) -> CompGraph:
    """stem -> blocks x [3-path fork -> concat, + block input, BN] -> global pool -> dense.
    Each block has 9 vertices: 101 vertices for 11 blocks."""
    inp = input_vertex("in", 3, "conv2d")
    v = vertex(conv(3, width), inp, name="stem")
    split = (width // 4, width // 4, width - 2 * (width // 4))
    for b in range(blocks):
        p1 = vertex(conv(width, split[0], 1), v, name=f"b{b}.p1")
        p2 = vertex(BatchNorm(split[1], "relu"),
                    vertex(conv(width, split[1]), v, name=f"b{b}.p2conv"), name=f"b{b}.p2")
        mid = vertex(conv(width, 16), v, name=f"b{b}.p3a")
        mid = vertex(BatchNorm(16, "relu"), mid, name=f"b{b}.p3bn")
        p3 = vertex(conv(16, split[2], 3, "identity"), mid, name=f"b{b}.p3")
        cat = concat(p1, p2, p3, name=f"b{b}.cat")
        v = vertex(BatchNorm(width), add(v, cat, name=f"b{b}.res"), name=f"b{b}.bn")
    out = vertex(Dense(width, 10), vertex(GlobalPool(), v, name="pool"), name="out",
                 shielded=True)
    return CompGraph(inp, out)


def conv_chain(n: int = 20, width: int = 32) -> CompGraph:
    """input -> 9 x (conv, BN) -> global pool -> dense: 21 vertices."""
    inp = input_vertex("in", 3, "conv2d")
    v = inp
    for i in range((n - 2) // 2):
        v = vertex(conv(v.nout, width), v, name=f"c{i}")
        v = vertex(BatchNorm(width, "relu"), v, name=f"bn{i}")
    out = vertex(Dense(width, 10), vertex(GlobalPool(), v, name="pool"), name="out")
    return CompGraph(inp, out)


def _with_values(graph: CompGraph) -> CompGraph:
    """Tracked neuron values, as after training (random but fixed)."""
    track_values(graph)
    rng = np.random.default_rng(0)
    for layer in graph.layers():
        if layer.neuron_value is not None:
            layer.neuron_value = rng.random(layer.nout).astype(np.float32)
    return graph


def _case(build, name: str, delta: int):
    tinyevo.seed(0)
    base = _with_values(build())

    def setup():
        g = copy(base)
        return (g, {g[name]: delta}), {}

    def run(g, deltas):
        assert change_nout(g, deltas)

    return base, setup, run


CASES = {
    "large_tied_grow": (inception_resnet, "b5.p3", 6),
    "large_tied_shrink": (inception_resnet, "b5.p3", -6),
    "large_untied_shrink": (inception_resnet, "b5.p3a", -4),
    "chain_grow": (conv_chain, "c4", 8),
    "chain_shrink": (conv_chain, "c4", -8),
}


# ---------------------------------------------------------------------- pytest-benchmark

def _bench(benchmark, key):
    build, name, delta = CASES[key]
    _, setup, run = _case(build, name, delta)
    benchmark.pedantic(run, setup=setup, rounds=20, iterations=1)


def test_large_tied_grow(benchmark):
    _bench(benchmark, "large_tied_grow")


def test_large_tied_shrink(benchmark):
    _bench(benchmark, "large_tied_shrink")


def test_large_untied_shrink(benchmark):
    _bench(benchmark, "large_untied_shrink")


def test_chain_grow(benchmark):
    _bench(benchmark, "chain_grow")


def test_chain_shrink(benchmark):
    _bench(benchmark, "chain_shrink")


def test_copy_large(benchmark):
    g = inception_resnet()
    benchmark(copy, g)


# ---------------------------------------------------------------------- plain run

def main(rounds: int = 20) -> None:
    print(f"{'case':<22}{'vertices':>9}{'median ms':>11}{'min ms':>9}")
    for key, (build, name, delta) in CASES.items():
        base, setup, run = _case(build, name, delta)
        times = []
        for _ in range(rounds):
            args, _ = setup()
            t0 = time.perf_counter()
            run(*args)
            times.append(time.perf_counter() - t0)
        print(f"{key:<22}{len(base):>9}{1e3 * np.median(times):>11.1f}"
              f"{1e3 * min(times):>9.1f}")
    g = inception_resnet()
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        copy(g)
        times.append(time.perf_counter() - t0)
    print(f"{'copy_large':<22}{len(g):>9}{1e3 * np.median(times):>11.1f}{1e3 * min(times):>9.1f}")


if __name__ == "__main__":
    main()
