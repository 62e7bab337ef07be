"""Mutation operators: small callables that change a graph, a vertex or an optimiser.

A mutation ``m`` is called on one entity and returns the result: ``m(vertex)``, ``m(graph)``,
``m(optimiser)`` (or a pair, for crossover). Called on a *list* it mutates every element and
returns the list; decorators (:class:`MutationProbability`, :class:`MutationFilter`, ...) decide
per element first and then call the wrapped mutation once with the chosen sublist, so that
:class:`NoutMutation` solves all the size changes of one :class:`VertexMutation` pass jointly.

    >>> mp = lambda m, p: VertexMutation(MutationProbability(m, p))
    >>> mutation = MutationChain(mp(RemoveVertexMutation(), 0.4), mp(AddVertexMutation(space), 0.4))
    >>> mutation(graph)  # doctest: +SKIP

Shielded vertices (``vertex.shielded``, optionally with a ``MutationShield`` allow-list) and
graph inputs are never mutated. A mutation that cannot be applied to a vertex (a size that cannot
be solved, an edge that would close a cycle, a shape that would stop matching) leaves it as it
was. Every random choice uses the mutation's ``rng``, else the library generator.

The operators live in modules as in the seed: :mod:`~tinyevo.evolution.mutation.generic`
(the base class and the decorators), :mod:`~tinyevo.evolution.mutation.graph` (the mutations of
a graph and the deferred neuron selection), :mod:`~tinyevo.evolution.mutation.optimizer`,
:mod:`~tinyevo.evolution.mutation.iteratormap` (the training batch size) and
:mod:`~tinyevo.evolution.mutation.candidate` (``MapCandidate``: all of a candidate at once).
"""

from tinyevo.evolution.mutation.candidate import MapCandidate
from tinyevo.evolution.mutation.generic import (
    AbstractMutation,
    HighUtilityMutationProbability,
    LogMutation,
    LowUtilityMutationProbability,
    MutationChain,
    MutationFilter,
    MutationProbability,
    PostMutation,
    VertexMutation,
    WeightedMutationProbability,
    allow_mutation,
    leaves,
)
from tinyevo.evolution.mutation.graph import (
    ActivationFunctionMutation,
    AddEdgeMutation,
    AddVertexMutation,
    KernelSizeMutation,
    NeuronSelectMutation,
    NoutMutation,
    RemoveEdgeMutation,
    RemoveVertexMutation,
    neuronselect,
)
from tinyevo.evolution.mutation.iteratormap import TrainBatchSizeMutation, mutate_batch_size
from tinyevo.evolution.mutation.optimizer import LearningRateMutation, OptimizerMutation

__all__ = [
    "AbstractMutation", "VertexMutation", "MutationProbability", "WeightedMutationProbability",
    "HighUtilityMutationProbability", "LowUtilityMutationProbability", "MutationChain",
    "MutationFilter", "PostMutation", "LogMutation", "NeuronSelectMutation", "neuronselect",
    "NoutMutation", "RemoveVertexMutation", "AddVertexMutation", "RemoveEdgeMutation",
    "AddEdgeMutation", "KernelSizeMutation", "ActivationFunctionMutation", "OptimizerMutation",
    "LearningRateMutation", "allow_mutation", "leaves",
]
__all__ += ["TrainBatchSizeMutation", "mutate_batch_size", "MapCandidate"]
