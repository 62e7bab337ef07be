"""Hall of fame: the best candidates ever evaluated, kept as they were when measured.

Training goes on every generation and mutation changes children, so a member's fitness may fall
and the model that scored best may be gone by the end of a run. Like DEAP's ``HallOfFame``, a
separate object handed the evaluated populations keeps a snapshot of each of the ``size`` best
evaluations: a copy of the model (arrays shared copy-on-write, so later training of the original
does not reach it), of its optimiser with the state it had, its fitness and its generation.

    >>> hof = HallOfFame(5); hof.update(population)                    # doctest: +SKIP
    >>> hof.best().fitness, hof.best().generation                      # doctest: +SKIP
"""

from __future__ import annotations

import copy
import math
import numbers
import weakref
from collections.abc import Iterable, Iterator
from typing import Any

from tinyevo.evolution._births import same_candidate
from tinyevo.evolution.candidate import (
    FittedCandidate,
    copy_model,
    graph,
    is_model,
    new_candidate,
    opt,
)
from tinyevo.evolution.objectives import Objectives
from tinyevo.optimizers import Optimizer

__all__ = ["HallOfFame", "snapshot"]


class Archive:
    """The snapshots an archive holds (``_members``), best first: ``len``, iteration (over a
    copy, so an update while iterating is safe) and indexing. HallOfFame and ParetoFront are
    archives."""

    _members: list

    def __len__(self) -> int:
        return len(self._members)

    def __iter__(self) -> Iterator[FittedCandidate]:
        return iter(list(self._members))

    def __getitem__(self, i: int) -> FittedCandidate:
        return self._members[i]


class HallOfFame(Archive):
    """HallOfFame(size=5): snapshots of the ``size`` best evaluated candidates, best first.

    ``update(population)`` stores each member whose fitness is a finite number and ranks within
    the best ``size`` seen so far; members with no fitness, a non-finite one or a non-numeric one
    (a tuple) are skipped. Ties keep the earlier entry ahead. The same evaluation (the same
    candidate in the same generation) is stored once, however often it is presented.

        >>> hof = HallOfFame(3); hof.update(evaluated_population)      # doctest: +SKIP
        >>> best = hof.best(); best.predict(x_test)                    # doctest: +SKIP
    """

    def __init__(self, size: int = 5) -> None:
        if isinstance(size, bool) or not isinstance(size, numbers.Integral) or size < 1:
            raise ValueError(f"HallOfFame(size=...) takes a positive int, the number of "
                             f"candidates to keep, got {size!r}")
        self._size = int(size)
        self._members: list[FittedCandidate] = []
        self._sources: list[tuple[Any, Any]] = []   # (weakref to the original, generation)

    @property
    def size(self) -> int:
        """The most candidates kept."""
        return self._size

    @property
    def members(self) -> list[FittedCandidate]:
        """The snapshots, best first (a new list; the snapshots themselves are shared)."""
        return list(self._members)

    def update(self, population: Iterable[Any]) -> int:
        """Store snapshots of the members of ``population`` (a Population or any iterable of
        FittedCandidates) that rank among the best ``size``; returns how many entered."""
        seen = [(ref(), generation) for ref, generation in self._sources]
        new = []                                   # (fitness, None, original, generation)
        for c in population:
            fitness = getattr(c, "fitness", None)
            if not finite_number(fitness):
                continue
            original = c.candidate if isinstance(c, FittedCandidate) else c
            generation = getattr(c, "generation", None)
            if any(o is original and g == generation for o, g in seen):
                continue                           # this evaluation is stored already
            seen.append((original, generation))
            # An Objectives is a float already, and keeps its vector for Pareto code.
            value = fitness if isinstance(fitness, Objectives) else float(fitness)
            new.append((value, None, original, generation))
        held = [(m.fitness, m, ref, g) for m, (ref, g) in zip(self._members, self._sources)]
        # Stable: held entries stay ahead of new ones as fit, new ones keep their order. Only
        # the new ones that made it are copied.
        top = sorted(held + new, key=lambda e: e[0], reverse=True)[:self._size]
        self._members = [m if m is not None else FittedCandidate(snapshot(src), f, g)
                         for f, m, src, g in top]
        self._sources = [(src if m is not None else _reference(src), g) for _, m, src, g in top]
        return sum(m is None for _, m, _, _ in top)

    def best(self) -> FittedCandidate:
        """The snapshot with the highest fitness."""
        if not self._members:
            raise ValueError("the hall of fame is empty: call update(population) with an "
                             "evaluated population first")
        return self._members[0]

    def __getstate__(self) -> dict:
        # Weak references do not pickle; a copy remembers no original (none is in it either).
        return {**self.__dict__, "_sources": [(_gone, g) for _, g in self._sources]}

    def __repr__(self) -> str:
        best = f", best {self._members[0].fitness:.4g}" if self._members else ""
        return f"HallOfFame(size={self._size}, {len(self._members)} members{best})"


def snapshot(candidate: Any) -> Any:
    """A copy of ``candidate`` that later training of the original does not change: its model
    copied (copy-on-write), its optimiser a copy holding the state the original's held for the
    model (moments shared copy-on-write where the backend allows, else copied), other fields
    deep-copied. It is the same candidate to a lineage (the same id)."""
    out = same_candidate(new_candidate(candidate, _copy_field), candidate)
    model, original = graph(out), graph(candidate)
    src, dst = opt(candidate), opt(out)
    if isinstance(src, Optimizer) and isinstance(dst, Optimizer) and is_model(model):
        # On NumPy the copy shares the original's parameter arrays, so inherit finds their
        # state; CuPy arrays are copied at once, so the state goes across as arrays instead.
        if dst.inherit(model, src) == 0:
            state = src.state_arrays(original)
            if state:
                dst.load_state_arrays(model, state)
    return out


def _copy_field(x: Any) -> Any:
    if is_model(x):
        return copy_model(x)
    if isinstance(x, Optimizer):
        return x.copy()
    return copy.deepcopy(x)


def finite_number(x: Any) -> bool:
    """Whether ``x`` is a real number (not a bool) that a float holds and that is finite: not
    NaN, not an infinity, not an int too large for a float (``10**400``)."""
    if not isinstance(x, numbers.Real) or isinstance(x, bool):
        return False
    try:
        return math.isfinite(x)
    except OverflowError:
        return False


def _reference(x: Any) -> Any:
    """A weak reference to ``x``: the hall of fame must not keep replaced models alive. An object
    that takes none is remembered by a reference that matches nothing."""
    try:
        return weakref.ref(x)
    except TypeError:
        return _gone


def _gone() -> None:
    """The reference to an original that is not known: it matches nothing."""
    return None
