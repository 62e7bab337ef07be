"""Regression: evolve dense models that fit y = sin(3 x1) + x2^2 with a mean-squared-error
fitness (the seed's users asked for a regression path; ``LossFitness`` is it).

    python examples/regression.py
    python examples/regression.py --smoke
"""

from __future__ import annotations

import argparse

import numpy as np

import tinyevo as te


def data(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1, 1, (n, 2)).astype(np.float32)
    y = (np.sin(3 * x[:, 0]) + x[:, 1] ** 2).astype(np.float32)[:, None]
    return x, y


def main(argv: list[str] | None = None) -> float:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--smoke", action="store_true", help="tiny settings for a quick check")
    args = p.parse_args(argv)
    te.seed(0)
    gens, popsize = (2, 4) if args.smoke else (15, 10)
    x, y = data(512, 0)
    xv, yv = data(256, 1)
    train = te.BatchIterator((x, y), 32, shuffle=True)
    hidden = te.VertexSpace(te.DenseSpace(range(8, 65), ["relu", "elu", "selu"]))
    out = te.VertexSpace(te.DenseSpace(1, "identity"), shielded=True)
    space = te.ArchSpaceChain(te.RepeatArchSpace(hidden, range(1, 3)), out)

    def model() -> te.CompGraph:
        inp = te.input_vertex("x", 2, "dense")
        return te.CompGraph(inp, space(inp))

    population = te.Population([
        te.CandidateOptModel(te.optimizers.Adam(learning_rate=3e-3), model())
        for _ in range(popsize)])
    # Train one pass, then fitness = 1 / (1 + validation MSE): higher is better.
    fitness = te.TrainThenFitness(dataiter=train, defaultloss=te.losses.mse,
                                  defaultopt=te.optimizers.Adam(),
                                  fitstrat=te.LossFitness([(xv, yv)], te.losses.mse))

    def vm(m, p):
        return te.VertexMutation(te.MutationProbability(m, p))

    mutation = te.PostMutation(te.MutationChain(vm(te.NoutMutation(-0.2, 0.2), 0.2),
                                                vm(te.AddVertexMutation(hidden), 0.05),
                                                vm(te.RemoveVertexMutation(), 0.05)),
                               lambda m, g: te.select_neurons(g))
    strategy = te.CombinedEvolution(
        te.EliteSelection(2),
        te.TournamentSelection(popsize - 2, 2, 1.0, then=te.EvolveCandidates(
            te.evolve_model(mutation, te.LearningRateMutation()))))
    for _ in range(gens):
        population = te.evolve(strategy, fitness, population)
        best = population.previous.best()
        print(f"generation {population.previous.generation}: validation MSE "
              f"{1 / best.fitness - 1:.4f}")
    mse = 1 / best.fitness - 1
    return mse


if __name__ == "__main__":
    main()
