"""The application's defaults: search space, mutation, crossover and selection per data kind.

They follow the seed's AutoFlux ImageClassifier (see docs/fit.md for where and why they differ):
conv blocks of {conv, conv->BN, BN->conv} units (3x3 or 5x5) in plain, forked (inception-like)
and residual arrangements, each block followed by a 2x2 max pooling; then global pooling, 0-2
dense layers and a shielded dense output. Selection keeps 2 elites and fills the rest with
best-of-2 tournament winners, which go through crossover (p 0.3) and mutation (p 0.8).
With ``batch_size_search``, each candidate also trains in batches of its own size, which its
children inherit, mutate (p 0.1) and swap in crossover (p 0.2), as AutoFlux does.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from tinyevo import backend as B
from tinyevo.app.config import ELITES, WIDTHS
from tinyevo.evolution.candidate import CandidateDataIterMap
from tinyevo.evolution.crossover import (
    CrossoverSwap,
    IteratorMapCrossover,
    LearningRateCrossover,
    OptimizerCrossover,
    VertexCrossover,
    evolve_crossover,
)
from tinyevo.evolution.iterators import BatchSizeIteratorMap
from tinyevo.evolution.mutation import (
    ActivationFunctionMutation,
    AddEdgeMutation,
    AddVertexMutation,
    HighUtilityMutationProbability,
    KernelSizeMutation,
    LearningRateMutation,
    LowUtilityMutationProbability,
    MapCandidate,
    MutationChain,
    MutationProbability,
    NoutMutation,
    OptimizerMutation,
    RemoveEdgeMutation,
    RemoveVertexMutation,
    TrainBatchSizeMutation,
    VertexMutation,
)
from tinyevo.evolution.pareto import ParetoEliteSelection, ParetoTournamentSelection
from tinyevo.evolution.population import Population
from tinyevo.evolution.strategies import (
    CombinedEvolution,
    CrossoverThenMutate,
    EliteSelection,
    EvolutionChain,
    EvolveCandidates,
    PairCandidates,
    TournamentSelection,
    evolve_model,
)
from tinyevo.graph import select_neurons, value_cache
from tinyevo.optimizers import Adam, AdamW, Momentum, NAdam, Nesterov, RMSProp
from tinyevo.search import (
    ArchSpace,
    ArchSpaceChain,
    BatchNormSpace,
    ConvSpace,
    DenseSpace,
    ForkArchSpace,
    GlobalPoolSpace,
    MutationShield,
    PoolSpace,
    RepeatArchSpace,
    ResidualArchSpace,
    VertexSpace,
)

__all__ = ["ACTIVATIONS", "default_search_space", "default_mutation", "default_crossover",
           "default_strategy", "default_optimizer", "OPTIMIZER_CHOICES", "GraphMutation",
           "stem_halvings"]
__all__ += ["batch_size_choices", "with_batch_sizes", "batch_size_operators"]

ACTIVATIONS = ("identity", "relu", "elu", "selu")
# Kernel sizes of the initial conv layers. The seed's also include 1: a block of 1x1 convs sees
# no neighbourhood, and on 8x8 digits such draws trained to worse models (docs/fit.md). Kernel
# size mutations still reach 1 and 7.
KERNEL_SIZES = (3, 5)
OPTIMIZER_CHOICES = (Adam, AdamW, NAdam, RMSProp, Momentum, Nesterov)
# Batch sizes of batch_size_search, as powers of 2 times fit's batch_size: the initial draws
# (AutoFlux: 64 +- 2 power-of-2 steps) and what mutations may reach (AutoFlux: 8..1024).
INITIAL_BATCH_STEPS = range(-2, 3)
BATCH_STEPS = range(-3, 5)


def default_search_space(kind: str, nclasses: int, widths: tuple[int, int] = WIDTHS,
                         sample_shape: tuple[int, ...] | None = None,
                         task: str = "classification") -> Any:
    """The architecture space ``fit`` draws initial models from, for "dense", "conv1d" or
    "conv2d" data. ``widths`` bounds the first conv block's channels; the second block draws
    up to twice as many (the seed: 8-256 then 32-512; smaller here so that a CPU run of minutes
    trains many generations). ``sample_shape`` (channels, *spatial), where given, sizes the
    stem: inputs wider than 16 pixels (MNIST's 28, CIFAR's 32) first go through a 3x3 conv,
    a BatchNorm and a 2x2 max pooling per halving that takes them to 16 or below, so that the
    blocks run at digits-like resolutions (without it, a 28x28 model of this space trained
    ~10x slower per sample than a hand-written two-block CNN; docs/fit.md). For
    ``task="regression"``, ``nclasses`` is the number of targets and the output layer keeps
    its identity activation (a relu there would cut off negative predictions)."""
    head = _head(nclasses, task)
    if kind == "dense":
        hidden = VertexSpace(DenseSpace(range(16, 257), ACTIVATIONS))
        return ArchSpaceChain(RepeatArchSpace(hidden, range(1, 4)), head)
    if kind not in ("conv1d", "conv2d"):
        raise ValueError(f"unknown data kind {kind!r}: expected 'dense', 'conv1d' or 'conv2d'")
    nd = 1 if kind == "conv1d" else 2
    lo, hi = widths
    blocks = [_conv_block(nd, range(lo, hi + 1)), _conv_block(nd, range(lo, 2 * hi + 1))]
    features = ArchSpaceChain(*(ArchSpaceChain(b, _downsample(nd)) for b in blocks))
    stems = stem_halvings(sample_shape)
    if stems:
        stem = ArchSpaceChain(
            VertexSpace(ConvSpace(nd, range(lo, hi + 1), "identity", kernelsizes=3)),
            VertexSpace(BatchNormSpace("relu")), _downsample(nd))
        features = ArchSpaceChain(*([stem] * stems), features)
    return ArchSpaceChain(features, GlobalPoolSpace(), head)


def stem_halvings(sample_shape: tuple[int, ...] | None, largest: int = 16) -> int:
    """How many 2x2 poolings take the smallest spatial side of ``sample_shape`` (channels,
    *spatial) to ``largest`` or below: 0 for digits' 8x8, 1 for MNIST's 28x28 and CIFAR's
    32x32, 2 for 64x64."""
    if sample_shape is None or len(sample_shape) < 2:
        return 0
    side, n = min(int(s) for s in sample_shape[1:]), 0
    while side > largest:
        side, n = side // 2, n + 1
    return n


def _head(nclasses: int, task: str = "classification") -> Any:
    dense = VertexSpace(DenseSpace(range(16, 257), ("relu", "elu", "selu")))
    # The output keeps its size; only a classifier's activation may change (the seed's shield).
    out = VertexSpace(DenseSpace(nclasses, "identity"),
                      shielded=True if task == "regression"
                      else MutationShield(allow=(ActivationFunctionMutation,)))
    return ArchSpaceChain(RepeatArchSpace(dense, range(0, 3)), out)


def _conv_block(nd: int, widths: range) -> Any:
    conv = VertexSpace(ConvSpace(nd, widths, ACTIVATIONS, kernelsizes=KERNEL_SIZES))
    bn = VertexSpace(BatchNormSpace(ACTIVATIONS))
    unit = ArchSpace(conv, ArchSpaceChain(conv, bn), ArchSpaceChain(bn, conv))
    rep = RepeatArchSpace(unit, range(1, 3))
    arrangement = ArchSpace(rep, ForkArchSpace(rep, range(1, 4)), ResidualArchSpace(rep))
    return RepeatArchSpace(arrangement, range(1, 3))


def _downsample(nd: int) -> Any:
    # The seed also draws mean pooling and strided convs here; on small images max pooling
    # alone gave better models (see docs/fit.md).
    return VertexSpace(PoolSpace(nd, 2, 2, poolfuns="max"))


def default_mutation(kind: str, nclasses: int, max_params: float = 2e8,
                     max_macs: float | None = None,
                     sample_shape: tuple[int, ...] | None = None) -> Any:
    """Per-vertex graph mutations with the seed's probabilities (a child is mutated with p 0.8):
    output size +-20 % (0.05), low-value shrink (0.05), add a layer where values are high
    (0.005), add a downsampling (0.01), remove a layer (0.01, graphs over 5 vertices), kernel
    size +-2 (0.02), activation (0.005), add and remove an edge (0.02 each). Graphs over
    ``max_params`` parameters get only the non-growing ones. With ``max_macs`` (and the
    ``sample_shape`` (channels, *spatial) it is counted for), so do graphs over that many
    multiply-adds a sample, and a mutation that takes a graph over it is undone."""
    nd = {"conv1d": 1, "conv2d": 2}.get(kind)
    if nd is None:
        addspace = VertexSpace(DenseSpace(range(16, 257), ACTIVATIONS))
    else:
        addspace = ArchSpace(VertexSpace(ConvSpace(nd, range(8, 129), ACTIVATIONS,
                                                   kernelsizes=(1, 3, 5))),
                             VertexSpace(BatchNormSpace(ACTIVATIONS)))

    def vm(m: Any, p: float) -> Any:
        return VertexMutation(MutationProbability(m, p))

    shrinking = [VertexMutation(LowUtilityMutationProbability(NoutMutation(-0.2, 0.0), 0.05)),
                 vm(RemoveEdgeMutation(), 0.02),
                 vm(ActivationFunctionMutation(ACTIVATIONS), 0.005)]
    growing = [vm(NoutMutation(-0.2, 0.2), 0.05),
               VertexMutation(HighUtilityMutationProbability(AddVertexMutation(addspace), 0.005)),
               vm(AddEdgeMutation(), 0.02)]
    if nd is not None:
        growing.append(vm(AddVertexMutation(VertexSpace(PoolSpace(nd, 2, 2, "max"))), 0.01))
        shrinking.append(vm(KernelSizeMutation(2, 7), 0.02))
    spatial = tuple(sample_shape[1:]) if sample_shape is not None else ()
    return GraphMutation(MutationChain(*growing), MutationChain(*shrinking),
                         vm(RemoveVertexMutation(), 0.01), max_params, max_macs, spatial)


class GraphMutation:
    """The default mutation of a graph: ``growing`` only for graphs under ``max_params``
    parameters (and ``max_macs`` multiply-adds a sample of ``spatial`` size, where given),
    ``other`` always, ``remove`` only for graphs of more than 5 vertices; then the deferred
    size changes are applied in one neuron selection. A mutation that takes a graph from under
    ``max_macs`` to over it is undone: the call returns the graph as it was (a copy)."""

    def __init__(self, growing: Any, other: Any, remove: Any, max_params: float,
                 max_macs: float | None = None, spatial: tuple[int, ...] = ()) -> None:
        self.growing, self.other, self.remove = growing, other, remove
        self.max_params, self.max_macs, self.spatial = max_params, max_macs, tuple(spatial)

    def __call__(self, graph: Any) -> Any:
        before = None
        if self.max_macs is not None and graph.macs(self.spatial) <= self.max_macs:
            before = graph.copy()        # copy-on-write: costs no array copies
        # Nothing trains while a graph is mutated: each layer's weight-norm value is computed
        # once for all the passes and selections below (until surgery replaces its arrays).
        with value_cache():
            if graph.nparams() < self.max_params and (before is not None
                                                      or self.max_macs is None):
                self.growing(graph)
            self.other(graph)
            if len(graph.vertices) > 5:
                self.remove(graph)
            select_neurons(graph)
        if before is not None and graph.macs(self.spatial) > self.max_macs:
            return before
        return graph

    def __repr__(self) -> str:
        macs = "" if self.max_macs is None else f", max_macs={self.max_macs:g}"
        return (f"GraphMutation({self.growing!r}, {self.other!r}, {self.remove!r}, "
                f"max_params={self.max_params:g}{macs})")


def default_crossover(itermap_crossover: Any = None) -> Any:
    """Crossover of a pair (p 0.3 in the strategy): swap graph segments between matched vertices
    (p 0.05 each), swap learning rates (p 0.4) and optimiser types (p 0.3), and, where given,
    cross the candidates' iterator maps over with ``itermap_crossover``."""
    return evolve_crossover(
        VertexCrossover(MutationProbability(CrossoverSwap(), 0.05)),
        MutationChain(MutationProbability(LearningRateCrossover(), 0.4),
                      MutationProbability(OptimizerCrossover(), 0.3)),
        itermap_crossover=itermap_crossover)


def default_strategy(population_size: int, mutation: Any, crossover: Any,
                     elites: int = ELITES, pairwise: bool = False,
                     itermap_mutation: Any = None, pareto: bool = False) -> Any:
    """Elites unchanged; the rest are best-of-2 tournament winners, crossed over with p 0.3
    and mutated with p 0.8 (the learning rate is always nudged, the optimiser type changed with
    p 0.1; the candidates' iterator maps, where they carry one, go through ``itermap_mutation``
    if given). Children never share a model with their parent.

    ``pareto=True`` selects as NSGA-II does, for fitness values with objectives: the elites
    are the first by front and crowding distance (:class:`ParetoEliteSelection`), the
    tournaments compare the same way (:class:`ParetoTournamentSelection`); the children are
    made alike.

    ``pairwise=True`` crosses and mutates pair by pair (:class:`CrossoverThenMutate`): the same
    kind of children with one copy of each crossed model instead of two, the random draws in
    another order (so other results for a seed than the default)."""
    elites = min(elites, population_size - 1)
    opt_mutation = MutationChain(LearningRateMutation(),
                                 MutationProbability(OptimizerMutation(OPTIMIZER_CHOICES), 0.1))
    cross = MutationProbability(crossover, 0.3)
    if itermap_mutation is None:
        mutate = evolve_model(MutationProbability(mutation, 0.8), opt_mutation)
    else:         # an evolve_model that mutates the iterator maps too
        mutate = MapCandidate(MutationProbability(mutation, 0.8), opt_mutation, itermap_mutation)
    if pairwise:      # pair by pair, a crossed model copied once instead of twice
        children = CrossoverThenMutate(cross, mutate)
    else:
        children = EvolutionChain(PairCandidates(EvolveCandidates(cross)),
                                  EvolveCandidates(mutate))
    if pareto:
        winners = ParetoTournamentSelection(population_size - elites, 2, 1.0, then=children)
        return CombinedEvolution(ParetoEliteSelection(elites), winners)
    winners = TournamentSelection(population_size - elites, 2, 1.0, then=children)
    return CombinedEvolution(EliteSelection(elites), winners)


def default_optimizer(rng: np.random.Generator | None = None) -> Any:
    """The initial optimiser of a candidate: Adam with a learning rate log-uniform in
    [3e-4, 3e-3]. (The seed starts from plain SGD with lr ~ U(0.01, 0.11); on a CPU budget of
    minutes Adam gets far sooner to where selection means something.)"""
    lr = float(np.exp(B.rng(rng).uniform(np.log(3e-4), np.log(3e-3))))
    return Adam(learning_rate=lr)


def batch_size_choices(batch_size: int, steps: range = BATCH_STEPS) -> tuple[int, ...]:
    """``batch_size`` times 2 to the power of each of ``steps``, rounded, at least 1.

        >>> batch_size_choices(32, range(-2, 3))
        (8, 16, 32, 64, 128)
    """
    return tuple(sorted({max(1, round(batch_size * 2.0 ** k)) for k in steps}))


def with_batch_sizes(population: Population, batch_size: int,
                     rng: np.random.Generator | None = None) -> Population:
    """``population`` with each member training in batches of its own size (a
    CandidateDataIterMap of a BatchSizeIteratorMap), drawn uniformly from ``batch_size`` x
    2^-2..2 with ``rng`` (else the library generator)."""
    sizes, gen = batch_size_choices(batch_size, INITIAL_BATCH_STEPS), B.rng(rng)
    return Population([CandidateDataIterMap(BatchSizeIteratorMap(sizes[gen.integers(len(sizes))]),
                                            c) for c in population.members],
                      population.generation)


def batch_size_operators(batch_size: int | None) -> tuple[Any, Any]:
    """``(mutation, crossover)`` of the candidates' batch sizes, AutoFlux's: a step of up to 2
    powers of 2 (``TrainBatchSizeMutation(-0.2, 0.2)`` over ``batch_size`` x 2^-3..4) with p
    0.1, a swap with p 0.2; ``(None, None)`` for None (no batch size search)."""
    if batch_size is None:
        return None, None
    steps = TrainBatchSizeMutation(-0.2, 0.2, batch_size_choices(batch_size))
    return (MutationProbability(steps, 0.1), MutationProbability(IteratorMapCrossover(), 0.2))
