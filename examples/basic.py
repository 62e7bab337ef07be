"""The seed's "very basic example": evolve small dense models on dummy data.

    python examples/basic.py
"""

from __future__ import annotations

import argparse

import numpy as np

import tinyevo as te


def main(argv: list[str] | None = None) -> te.Population:
    args = argparse.ArgumentParser(description=__doc__).parse_args(argv)
    del args
    te.seed(0)
    nlabels, ninputs = 3, 5

    # Step 1: initial models. 1-3 dense layers of width 3-10, then a shielded output layer.
    layerspace = te.VertexSpace(te.DenseSpace(range(3, 11), ["identity", "relu", "elu", "selu"]))
    initial_hidden = te.RepeatArchSpace(layerspace, range(1, 4))
    outlayer = te.VertexSpace(te.DenseSpace(nlabels, "identity"), shielded=True)
    searchspace = te.ArchSpaceChain(initial_hidden, outlayer)

    def model() -> te.CompGraph:
        inp = te.input_vertex("input", ninputs, "dense")
        return te.CompGraph(inp, searchspace(inp))

    population = te.Population([te.CandidateModel(model()) for _ in range(5)])
    print("vertices per model:", [len(c.graph().vertices) for c in population])

    # Step 2: fitness: train one pass over the training data, then validation accuracy.
    rng = np.random.default_rng(0)
    batchsize = 4
    train = [(rng.standard_normal((batchsize, ninputs), dtype=np.float32),
              rng.integers(0, nlabels, batchsize))]
    valid = [(rng.standard_normal((batchsize, ninputs), dtype=np.float32),
              rng.integers(0, nlabels, batchsize))]
    fitness = te.TrainThenFitness(dataiter=train, defaultloss=te.losses.logit_cross_entropy,
                                  defaultopt=te.optimizers.Adam(),
                                  fitstrat=te.AccuracyFitness(valid))

    # Step 3: new candidates: keep the 2 best, mutate 3 picked in proportion to fitness.
    def mp(m, p):
        return te.VertexMutation(te.MutationProbability(m, p))

    mutation = te.MutationChain(mp(te.RemoveVertexMutation(), 0.4),
                                mp(te.AddVertexMutation(layerspace), 0.4))
    selection = te.CombinedEvolution(
        te.EliteSelection(2), te.SusSelection(3, te.EvolveCandidates(te.evolve_model(mutation))))

    # Step 4: evolve.
    for _ in range(2):
        population = te.evolve(selection, fitness, population)
        print(f"generation {population.generation}: best fitness of the last one "
              f"{population.previous.best().fitness:.2f}")
    return population


if __name__ == "__main__":
    main()
