"""Time to mutate a 100+ vertex conv graph with a VertexMutation over all its vertices.

The graph is drawn from the seed README's "complex search space". Three mutations are timed on
fresh copies of it (the copy is not counted, it is reported on its own):

- ``autoflux``: AutoFlux's per-vertex rates: nout +/-20 % (p 0.05) with neuron selection, add
  vertex (p 0.005, identity init), remove vertex (p 0.01);
- ``nout_all``: NoutMutation(-0.2, 0.2) on every vertex, then neuron selection (the worst case
  for the size solver: every tied set changes);
- ``structural``: add vertex and remove vertex at p 0.1 each, with neuron selection.

For each, the share of the time spent in the graph's size solver (``solve_selection``, also
when called by the graph's own edits) and parameter surgery (``apply_selection``) is reported.
The aim: one generation's operators on 32 such graphs well under 1 s, i.e. ~10-20 ms per graph.

Run with ``python benchmarks/bench_mutation.py [--repeat 20]`` or under pytest-benchmark:
``pytest benchmarks/bench_mutation.py --benchmark-enable``.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from _clock import OperatorClock

import tinyevo as te
import tinyevo.evolution.mutation as M
from tinyevo.search.examples import complex_search_space

SEED = 5          # a draw of the complex space with 100+ vertices (checked below)


def complex_space(classes: int = 10) -> te.AbstractArchSpace:
    """The seed README's complex search space (tinyevo.search.examples)."""
    return complex_search_space(classes)


def draw(seed: int = SEED) -> te.CompGraph:
    inp = te.input_vertex("input", 3, "conv2d")
    return te.CompGraph(inp, complex_space()(inp, np.random.default_rng(seed)))


def mutations(rng: np.random.Generator) -> dict:
    addspace = te.VertexSpace(te.ConvSpace(2, outsizes=range(8, 257),
                                           activations=["identity", "relu"],
                                           kernelsizes=range(1, 4)))

    def mp(m, p):
        return M.MutationProbability(m, p, rng=rng)

    nout = M.NeuronSelectMutation(M.NoutMutation(-0.2, 0.2, rng=rng))
    return {
        "autoflux": M.PostMutation(M.VertexMutation(M.MutationChain(
            mp(nout, 0.05), mp(M.AddVertexMutation(addspace, rng=rng), 0.005),
            mp(M.RemoveVertexMutation(rng=rng), 0.01))), M.neuronselect),
        "nout_all": M.PostMutation(M.VertexMutation(nout), M.neuronselect),
        "structural": M.PostMutation(M.VertexMutation(M.MutationChain(
            mp(M.AddVertexMutation(addspace, rng=rng), 0.1),
            mp(M.RemoveVertexMutation(rng=rng), 0.1))), M.neuronselect),
    }


def measure(repeat: int = 20) -> dict:
    te.seed(0)
    graph = draw()
    assert len(graph) >= 100, len(graph)
    out = {"vertices": len(graph), "params": graph.nparams()}
    t = time.perf_counter()
    for _ in range(repeat):
        graph.copy()
    out["copy_s"] = (time.perf_counter() - t) / repeat
    for name in ("autoflux", "nout_all", "structural"):
        ms = mutations(np.random.default_rng(1))
        times = []
        with OperatorClock() as clock:
            for _ in range(repeat):
                g = graph.copy()
                t = time.perf_counter()
                ms[name](g)
                times.append(time.perf_counter() - t)
                assert not g.pending()
        total = float(np.sum(times))
        out[name] = {"mean_s": total / repeat, "median_s": float(np.median(times)),
                     "max_s": float(np.max(times)), "solver_share": clock.solve / total,
                     "surgery_share": clock.surgery / total}
    return out


def test_mutate_complex_graph(benchmark):
    graph = draw()
    ms = mutations(np.random.default_rng(1))

    def setup():
        return (graph.copy(),), {}

    benchmark.pedantic(lambda g: ms["autoflux"](g), setup=setup, rounds=10)


def test_nout_all_vertices(benchmark):
    graph = draw()
    ms = mutations(np.random.default_rng(1))

    def setup():
        return (graph.copy(),), {}

    benchmark.pedantic(lambda g: ms["nout_all"](g), setup=setup, rounds=10)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=20)
    r = measure(ap.parse_args().repeat)
    print(f"graph: {r['vertices']} vertices, {r['params']:,} parameters; "
          f"copy {r['copy_s'] * 1e3:.1f} ms (not counted below)")
    for name in ("autoflux", "nout_all", "structural"):
        m = r[name]
        print(f"{name:>10}: mean {m['mean_s'] * 1e3:7.1f} ms  median {m['median_s'] * 1e3:7.1f} ms"
              f"  max {m['max_s'] * 1e3:7.1f} ms  solver {m['solver_share']:5.1%}  surgery "
              f"{m['surgery_share']:5.1%}  -> x32 {32 * m['mean_s']:.2f} s")


if __name__ == "__main__":
    main()
