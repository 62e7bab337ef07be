"""How much of a GA run is spent outside training and validation (selection, mutation, copying).

3 generations of 8 dense candidates on a small synthetic classification set: each generation
trains every candidate on its partition of the data (RepeatPartitionIterator), measures validation
accuracy, keeps 2 elites and breeds 6 mutated children by SUS. The figure reported is

    overhead = (wall time of the evolve calls - time inside the fitness function) / wall time

Aim: under 5 %. Run with ``python benchmarks/bench_ga_loop.py [--backend cupy]``.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

import tinyevo
from tinyevo import backend as B
from tinyevo.evolution import (
    AbstractFitness,
    AccuracyFitness,
    CandidateModel,
    CombinedEvolution,
    EliteSelection,
    EvolveCandidates,
    GpuIterator,
    Population,
    RepeatPartitionIterator,
    ShuffleIterator,
    SusSelection,
    TrainThenFitness,
    evolve,
    evolve_model,
    fitness_of,
)
from tinyevo.layers import Dense, Sequential
from tinyevo.losses import logit_cross_entropy
from tinyevo.optimizers import Adam

NFEATURES, NCLASSES = 20, 4
ACTIVATIONS = ("relu", "elu", "selu", "identity")


class Timed(AbstractFitness):
    """Wraps a fitness and adds up the time spent in it."""

    def __init__(self, f):
        self.f, self.seconds, self.calls = f, 0.0, 0

    def __call__(self, candidate, generation=None):
        t0 = time.perf_counter()
        try:
            return fitness_of(self.f, candidate, generation)
        finally:
            self.seconds += time.perf_counter() - t0
            self.calls += 1


class Mutate:
    """Stand-in for the graph mutations of issue 4: new activations and perturbed weights."""

    def __init__(self, rng):
        self.rng = rng

    def __call__(self, model):
        layers = list(model.layers())
        for layer in layers[:-1]:
            if self.rng.random() < 0.3:
                layer.activation = ACTIVATIONS[int(self.rng.integers(len(ACTIVATIONS)))]
        for layer in layers:
            w = layer.params["weight"]
            w += B.to_device(0.02 * self.rng.standard_normal(w.shape, dtype=np.float32))


def make_data(n, rng):
    centers = rng.standard_normal((NCLASSES, NFEATURES), dtype=np.float32) * 1.5
    y = rng.integers(0, NCLASSES, n)
    x = centers[y] + rng.standard_normal((n, NFEATURES), dtype=np.float32)
    return x.astype(np.float32), y


def make_model(rng):
    layers, nin = [], NFEATURES
    for _ in range(int(rng.integers(1, 4))):
        nout = int(rng.integers(32, 129))
        layers.append(Dense(nin, nout, ACTIVATIONS[int(rng.integers(3))], rng=rng))
        nin = nout
    layers.append(Dense(nin, NCLASSES, rng=rng))
    model = Sequential(*layers)
    for layer in model.layers():
        layer.to()
    return model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", default="numpy", choices=("numpy", "cupy"))
    parser.add_argument("--generations", type=int, default=3)
    parser.add_argument("--population", type=int, default=8)
    parser.add_argument("--batches", type=int, default=30, help="training batches per generation")
    args = parser.parse_args()
    B.use(args.backend)
    tinyevo.seed(0)
    rng = np.random.default_rng(0)

    xtrain, ytrain = make_data(8192, rng)
    xvalid, yvalid = make_data(1024, rng)
    xtrain, ytrain, xvalid, yvalid = (B.to_device(a) for a in (xtrain, ytrain, xvalid, yvalid))
    train = RepeatPartitionIterator(GpuIterator(ShuffleIterator((xtrain, ytrain), 64, rng)),
                                    args.batches, cycle=True)
    valid = [(xvalid[i:i + 256], yvalid[i:i + 256]) for i in range(0, 1024, 256)]
    timed = Timed(TrainThenFitness(train, logit_cross_entropy, Adam(1e-3), AccuracyFitness(valid)))

    nchildren = args.population - 2
    strategy = CombinedEvolution(
        EliteSelection(2), SusSelection(nchildren, EvolveCandidates(evolve_model(Mutate(rng)))))
    population = Population([CandidateModel(make_model(rng)) for _ in range(args.population)])

    total = 0.0
    for _ in range(args.generations):
        t0 = time.perf_counter()
        population = evolve(strategy, timed, population)
        total += time.perf_counter() - t0
        best = population.previous.best()
        print(f"generation {population.previous.generation}: best accuracy {best.fitness:.3f}, "
              f"mean {np.mean(population.previous.fitnesses()):.3f}")

    outside = total - timed.seconds
    print(f"backend {args.backend}: {args.generations} generations x {args.population} "
          f"candidates, {timed.calls} fitness evaluations")
    print(f"wall {total:.3f} s, training+validation {timed.seconds:.3f} s, outside "
          f"{outside * 1e3:.1f} ms = {100 * outside / total:.2f} % (aim < 5 %)")


if __name__ == "__main__":
    main()
