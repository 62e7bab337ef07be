"""A fingerprint of seeded results, to show that a refactoring changed no result.

Records, as JSON:

- ``fit`` on the bundled digits for a few generations (seed 0, two seeds of evaluation
  order): every generation's fitnesses, and a hash of the best model's structure and weights;
- the operator benchmarks' mutations (``bench_mutation``: autoflux, nout_all, structural) and
  crossovers (``bench_crossover``: swap, autoflux, every_pair) applied with their seeded
  generators: a hash of every resulting graph.

Run it before and after a change and compare the files::

    python benchmarks/seeded_reference.py --out before.json
    ... change ...
    python benchmarks/seeded_reference.py --out after.json --compare before.json

A hash covers the graph's spec (structure, sizes, layer settings; vertex names included) and
every array's bytes, so "same hash" means bit-identical models.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_crossover  # noqa: E402
import bench_mutation  # noqa: E402

import tinyevo as te  # noqa: E402


def graph_hash(g) -> str:
    h = hashlib.sha256(json.dumps(g.to_spec(), sort_keys=True, default=str).encode())
    for name, a in sorted(g.arrays().items()):
        a = np.ascontiguousarray(te.backend.to_numpy(a))
        h.update(name.encode())
        h.update(str(a.dtype).encode() + str(a.shape).encode())
        h.update(a.tobytes())
    return h.hexdigest()[:16]


def fit_digits(generations: int = 3) -> dict:
    from sklearn.datasets import load_digits

    d = load_digits()
    x = (d.images[:, None] / 16.0).astype(np.float32)
    y = d.target
    gens = []
    pop = te.fit(x, y, generations=generations, seed=0, population_size=6,
                 batches_per_generation=10, callbacks=[lambda p: gens.append(
                     [round(float(c.fitness), 12) for c in p])])
    return {"generations": gens, "best": graph_hash(pop.best().graph()),
            "hall_of_fame_best": graph_hash(pop.hall_of_fame.best().graph())}


def mutations(repeat: int = 3) -> dict:
    te.seed(0)
    graph = bench_mutation.draw()
    out = {}
    for name in ("autoflux", "nout_all", "structural"):
        ms = bench_mutation.mutations(np.random.default_rng(1))
        hashes = []
        for _ in range(repeat):
            g = graph.copy()
            ms[name](g)
            hashes.append(graph_hash(g))
        out[name] = hashes
    return out


def crossovers(repeat: int = 3) -> dict:
    g1, g2 = bench_crossover.graphs()
    out = {}
    for name, make in bench_crossover.OPERATORS.items():
        rng = np.random.default_rng(0)
        hashes = []
        for _ in range(repeat):
            c1, c2 = make(rng)((g1, g2))
            hashes.append([graph_hash(c1), graph_hash(c2)])
        out[name] = hashes
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--compare", help="a file this script wrote before")
    parser.add_argument("--generations", type=int, default=5)
    args = parser.parse_args()
    res = {"fit_digits": fit_digits(args.generations), "mutations": mutations(),
           "crossovers": crossovers()}
    Path(args.out).write_text(json.dumps(res, indent=1))
    if args.compare:
        before = json.loads(Path(args.compare).read_text())
        diff = [k for k in res if res[k] != before.get(k)]
        for k in diff:
            print(f"DIFFERENT: {k}\n before: {before.get(k)}\n after:  {res[k]}")
        print("identical" if not diff else f"{len(diff)} of {len(res)} parts differ")
        return 1 if diff else 0
    print(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
