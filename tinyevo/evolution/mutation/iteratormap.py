"""Mutations of an iterator map: the training batch size a candidate searches.

A candidate that carries an iterator map (``CandidateDataIterMap``) trains on what the map makes
of the generation's batches; :class:`TrainBatchSizeMutation` changes the size of a
``BatchSizeIteratorMap``, as the seed's does:

    >>> TrainBatchSizeMutation(0.5, 0.5)(BatchSizeIteratorMap(32))
    BatchSizeIteratorMap(batch_size=48)

``MapCandidate`` applies it to a candidate's map, and ``IteratorMapCrossover`` swaps maps
between two candidates.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np

from tinyevo import backend as B
from tinyevo.evolution._births import note
from tinyevo.evolution.iterators import AbstractIteratorMap, BatchSizeIteratorMap
from tinyevo.evolution.mutation.generic import AbstractMutation, Rng

__all__ = ["TrainBatchSizeMutation", "mutate_batch_size"]


class TrainBatchSizeMutation(AbstractMutation):
    """TrainBatchSizeMutation(l1, l2, quantizeto=int, rng=None): a new training batch size for
    a ``BatchSizeIteratorMap``, a random relative change between ``l1`` and ``l2`` (in either
    order) of the old one (the seed's TrainBatchSizeMutation).

    With ``quantizeto=int`` the new size is ``max(1, round((1 + x) * size))``, ``x ~ U(l1,
    l2)``. With a sequence of sizes (e.g. powers of 2) it is ``quantizeto[j + round(x * n)]``
    (clamped to the sequence), where ``j`` indexes the size closest to the old one and ``n`` is
    the sequence's length: a step of up to ``max(|l1|, |l2|) * n`` places along it. Other maps
    are returned unchanged. The map is not changed in place: a new one is returned.

        >>> m = TrainBatchSizeMutation(-0.2, 0.2, [2**k for k in range(3, 11)])
        >>> m(BatchSizeIteratorMap(64)).batch_size in (16, 32, 64, 128, 256)
        True
    """

    acts_on = "itermap"      # what MapCandidate applies it to

    def __init__(self, l1: float, l2: float, quantizeto: Any = int, rng: Rng = None) -> None:
        lo, hi = sorted((_real(l1, "l1"), _real(l2, "l2")))
        if lo <= -1:
            raise ValueError(f"TrainBatchSizeMutation: a relative change must be > -1 (a size "
                             f"above 0), got {lo}")
        if quantizeto is not int:
            quantizeto = _sizes(quantizeto)
        self.minrel, self.maxrel, self.quantizeto, self.rng = lo, hi, quantizeto, rng

    def mutate(self, m: Any) -> Any:
        if not isinstance(m, AbstractIteratorMap):
            raise TypeError(f"TrainBatchSizeMutation mutates iterator maps (BatchSizeIteratorMap), "
                            f"got {type(m).__name__}")
        if not isinstance(m, BatchSizeIteratorMap):
            return m
        size = mutate_batch_size(self.quantizeto, m.batch_size, self.minrel, self.maxrel,
                                 self._gen())
        if size != m.batch_size:
            note(f"{type(self).__name__} {m.batch_size}->{size}")
        return dataclasses.replace(m, batch_size=size)

    def __repr__(self) -> str:
        sizes = "int" if self.quantizeto is int else list(self.quantizeto)
        return f"TrainBatchSizeMutation({self.minrel}, {self.maxrel}, {sizes})"


def mutate_batch_size(quantizeto: Any, batch_size: int, minrel: float, maxrel: float,
                      rng: Rng = None) -> int:
    """The new size :class:`TrainBatchSizeMutation` draws for ``batch_size`` (one draw of
    ``rng``, else the library generator): try it to see what ``l1``, ``l2`` and ``quantizeto``
    do.

        >>> mutate_batch_size(int, 16, 0.25, 0.25), mutate_batch_size((8, 16, 32), 16, 0.4, 0.4)
        (20, 32)
    """
    x = minrel + B.rng(rng).random() * (maxrel - minrel)
    if quantizeto is int:
        return max(1, int(round((1 + x) * batch_size)))
    sizes = _sizes(quantizeto)
    j = int(np.argmin([abs(batch_size - s) for s in sizes]))
    step = int(round(len(sizes) * (1 + x))) - len(sizes)
    return sizes[min(max(j + step, 0), len(sizes) - 1)]


def _real(x: Any, name: str) -> float:
    number = isinstance(x, (int, float, np.integer, np.floating)) and not isinstance(x, bool)
    if not (number and np.isfinite(x)):
        raise ValueError(f"TrainBatchSizeMutation: {name} must be a finite number, got {x!r}")
    return float(x)


def _sizes(quantizeto: Any) -> tuple[int, ...]:
    """``quantizeto`` as a tuple of positive int sizes, else a ValueError."""
    sizes = tuple(quantizeto) if isinstance(quantizeto, (Sequence, np.ndarray)) else None
    if not sizes or not all(isinstance(s, (int, np.integer)) and not isinstance(s, bool)
                            and s >= 1 for s in sizes):
        raise ValueError(f"TrainBatchSizeMutation: quantizeto must be int or a non-empty "
                         f"sequence of positive int sizes, got {quantizeto!r}")
    return tuple(int(s) for s in sizes)
