"""Time of one generation's GA operators on a population of 32 graphs of 100+ vertices.

The population is drawn from the seed README's "complex search space" (each member a
CandidateOptModel with Adam), given random fitness values, and evolved once with the
application's strategy (``tinyevo.app.defaults``): 2 elites, best-of-2 tournament, crossover
of pairs at p 0.3 (segment swaps at 5 % of the matched vertices, learning-rate and optimiser
crossover) and mutation at p 0.8 (the per-vertex mutations of ``default_mutation("conv2d")``,
then one neuron selection), with every child's copy of its parent's weights. Everything the
strategy does is timed: selection, copies, crossover, mutation. Training and evaluation are not.

The aim (issue #4): well under 1 s per generation. Between timed generations the previous one's
children are freed (``gc.collect()``), as ``fit`` does every generation. Both orders are timed,
alternating: the default chain (all crossovers, then all mutations, each child copied once more)
and ``pairwise=True`` (CrossoverThenMutate: a crossed model is copied once). The time is split
into copying (``CompGraph.copy``), the size solver (``solve_selection``), parameter surgery
(``apply_selection``) and the rest.

Run with ``python benchmarks/bench_generation.py [--repeat 5]`` or under pytest-benchmark:
``pytest benchmarks/bench_generation.py --benchmark-enable``.
"""

# isort: split
import tinyevo as te  # first: tinyevo tunes OpenBLAS before NumPy loads it

# isort: split
import argparse
import gc
import time

import numpy as np
from _clock import OperatorClock

from tinyevo.app import defaults
from tinyevo.evolution import CandidateOptModel, FittedCandidate
from tinyevo.optimizers import Adam
from tinyevo.search.examples import complex_search_space

POPULATION = 32


def population(size: int = POPULATION, seed: int = 0) -> list:
    """``size`` fitted candidates drawn from the complex space, each with 100+ vertices."""
    space = complex_search_space(10)
    rng = np.random.default_rng(seed)
    members = []
    while len(members) < size:
        inp = te.input_vertex("input", 3, "conv2d")
        g = te.CompGraph(inp, space(inp, rng))
        if len(g) < 100:
            continue
        opt = Adam(learning_rate=float(rng.uniform(1e-4, 1e-2)))
        members.append(FittedCandidate(CandidateOptModel(opt, g), float(rng.uniform()), 1))
    return members


def strategy(size: int = POPULATION, pairwise: bool = False):
    return defaults.default_strategy(size, defaults.default_mutation("conv2d", 10),
                                     defaults.default_crossover(), pairwise=pairwise)


def measure(repeat: int = 5, seed: int = 0) -> dict:
    """Both orders of the strategy (``default_strategy(pairwise=...)``), alternating."""
    members = population(seed=seed)
    res = {"vertices": float(np.mean([len(c.graph()) for c in members])),
           "params": float(np.mean([c.graph().nparams() for c in members]))}
    for pairwise in (False, True):
        res[pairwise] = {"seconds": [], "copy": [], "solve": [], "surgery": [], "ncopies": []}
    for r in range(repeat):
        for pairwise in (False, True):
            te.seed(seed + r)
            evolve = strategy(pairwise=pairwise)
            with OperatorClock() as clock:
                t = time.perf_counter()
                children = evolve(members)
                elapsed = time.perf_counter() - t
            assert len(children) == len(members)
            # Graphs are reference cycles: the last generation's children are freed by the
            # cycle collector, as fit() does after every generation, before the next is timed
            # (left to chance, the next generation writes into fresh memory and pays its page
            # faults, up to a second at these sizes).
            del children
            gc.collect()
            out = res[pairwise]
            out["seconds"].append(elapsed)
            out["copy"].append(clock.copy)
            out["solve"].append(clock.solve)
            out["surgery"].append(clock.surgery)
            out["ncopies"].append(clock.calls["copy"])
    return res


def test_generation(benchmark):
    members = population()
    te.seed(0)
    children = benchmark.pedantic(lambda: strategy()(members), rounds=3)
    assert len(children) == POPULATION
    for c in children:
        c.graph().validate()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    r = measure(args.repeat, args.seed)
    print(f"population of {POPULATION}: {r['vertices']:.0f} vertices and "
          f"{r['params'] / 1e6:.1f} M parameters per graph on average")
    for pairwise, name in ((False, "chain (default)"), (True, "pairwise")):
        d = r[pairwise]
        print(f"{name}:")
        for i, s in enumerate(d["seconds"]):
            rest = s - d["copy"][i] - d["solve"][i] - d["surgery"][i]
            print(f"  generation {i + 1}: {s * 1e3:6.0f} ms  ({d['ncopies'][i]} copies "
                  f"{d['copy'][i] * 1e3:5.0f} ms,"
                  f" size solver {d['solve'][i] * 1e3:5.0f} ms, surgery "
                  f"{d['surgery'][i] * 1e3:5.0f} ms, rest {rest * 1e3:5.0f} ms)")
        print(f"  median: {np.median(d['seconds']) * 1e3:.0f} ms per generation")


if __name__ == "__main__":
    main()
