"""Candidate-level mutation and crossover: one callable that maps every part of a candidate.

:class:`MapCandidate` is the seed's: it takes operators of different kinds (of models, of
optimisers, of iterator maps), finds out which kind each one acts on, and applies each to the
matching part of a candidate (a mutation) or of a pair of candidates (a crossover), copying the
rest:

    >>> double = MapCandidate(TrainBatchSizeMutation(1.0, 1.0))
    >>> child = double(CandidateDataIterMap(BatchSizeIteratorMap(16), parent))  # doctest: +SKIP
    >>> child.itermap().batch_size  # doctest: +SKIP
    32
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

from tinyevo.evolution.crossover import evolve_crossover
from tinyevo.evolution.iterators import AbstractIteratorMap
from tinyevo.evolution.mutation.generic import check_callable, leaves
from tinyevo.evolution.strategies import evolve_model

__all__ = ["MapCandidate"]

KINDS = ("model", "optimizer", "itermap")


class MapCandidate(evolve_model):
    """MapCandidate(*operators, map_others=copy.deepcopy): a candidate to a child, or a pair of
    candidates to a pair of children, through ``operators`` of different kinds (the seed's
    MapCandidate).

    Each operator acts on models, optimisers or iterator maps: what its basic operators say
    (``acts_on``: "optimizer" for OptimizerMutation, LearningRateMutation, OptimizerCrossover
    and LearningRateCrossover, "itermap" for TrainBatchSizeMutation and IteratorMapCrossover,
    models for anything else), at most one operator per kind. Called on a candidate, the
    operators mutate a copy of its model, of its optimiser and of its iterator map, as
    :class:`~tinyevo.evolution.strategies.evolve_model` does (it is one, so
    ``CrossoverThenMutate`` takes it); called on a pair, they cross the parents' models,
    optimisers and maps over, as :class:`~tinyevo.evolution.crossover.evolve_crossover` does.
    Other fields go through ``map_others``.

        >>> mutate = MapCandidate(VertexMutation(NoutMutation(-0.2, 0.2)), LearningRateMutation(),
        ...                       MutationProbability(TrainBatchSizeMutation(-0.2, 0.2), 0.1))
        >>> cross = MapCandidate(VertexCrossover(CrossoverSwap()), IteratorMapCrossover())
        >>> child1, child2 = cross((parent1, parent2))   # doctest: +SKIP
    """

    def __init__(self, *operators: Callable, map_others: Callable[[Any], Any] = copy.deepcopy
                 ) -> None:
        ops = _by_kind(operators)
        super().__init__(ops["model"] or _unchanged, ops["optimizer"],
                         _OnIteratorMaps(ops["itermap"], map_others))
        self.operators = operators
        self.pairs = evolve_crossover(ops["model"], ops["optimizer"], map_others, ops["itermap"])

    def __call__(self, x: Any, in_place: bool = False) -> Any:
        """The child of candidate ``x``, or the children of the pair ``x``. ``in_place``: see
        :class:`~tinyevo.evolution.strategies.evolve_model` (candidates only)."""
        if isinstance(x, (tuple, list)):
            return self.pairs(x)
        return super().__call__(x, in_place)

    def __repr__(self) -> str:
        return f"MapCandidate({', '.join(map(repr, self.operators))})"


class _OnIteratorMaps:
    """``map_others`` for :class:`MapCandidate`'s mutation: an iterator map goes through
    ``others`` (a copy), then through ``mutation``; anything else through ``others``."""

    def __init__(self, mutation: Callable | None, others: Callable[[Any], Any]) -> None:
        self.mutation, self.others = mutation, others

    def __call__(self, x: Any) -> Any:
        out = self.others(x)
        if self.mutation is None or not isinstance(x, AbstractIteratorMap):
            return out
        result = self.mutation(out)
        return result if isinstance(result, AbstractIteratorMap) else out


def _by_kind(operators: tuple) -> dict[str, Any]:
    """The operators by the kind they act on; a ValueError for two of a kind or a mix."""
    ops: dict[str, Any] = dict.fromkeys(KINDS)
    for op in operators:
        check_callable(op, "MapCandidate", "an operator")
        kind = acts_on(op)
        if ops[kind] is not None:
            raise ValueError(f"MapCandidate: {ops[kind]!r} and {op!r} both act on {kind}s; "
                             "give one operator per kind (chain them with MutationChain)")
        ops[kind] = op
    return ops


def acts_on(op: Any) -> str:
    """What ``op`` acts on: "model", "optimizer" or "itermap", from its basic operators'
    ``acts_on`` ("model" where they have none); a ValueError where they disagree.

        >>> acts_on(MutationProbability(LearningRateMutation(), 0.5))  # doctest: +SKIP
        'optimizer'
    """
    kinds = {getattr(leaf, "acts_on", "model") for leaf in leaves(op)}
    if len(kinds) != 1 or not kinds <= set(KINDS):
        raise ValueError(f"MapCandidate: {op!r} acts on {sorted(kinds)}; an operator must act "
                         f"on one of {KINDS}: give one operator per kind")
    return kinds.pop()


def _unchanged(model: Any) -> Any:
    return model
