"""Pareto fronts: NSGA-II's non-dominated sorting and crowding distance, the selections built on
them, and an archive of every non-dominated candidate ever evaluated.

A candidate's fitness is a point: an :class:`~tinyevo.evolution.objectives.Objectives`' vector
(minimised objectives negated, so that every axis is maximised), or a plain number as a point
of one axis. ``a`` *dominates* ``b`` when it is at least as good on every axis and better on
one. NSGA-II (Deb et al., 2002) ranks a generation by fronts: the first front is the points no
other point dominates, the second those only the first dominates, and so on; within a front,
the *crowding distance* prefers points in sparse regions, which keeps the front spread out.

    >>> points = [(1.0, 0.0), (0.0, 1.0), (0.5, 0.5), (0.4, 0.4)]
    >>> nondominated_sort(points)
    [[0, 1, 2], [3]]
    >>> crowding_distance([points[i] for i in (0, 1, 2)])
    [inf, inf, 2.0]

:class:`ParetoEliteSelection` and :class:`ParetoTournamentSelection` are the
:class:`~tinyevo.evolution.EliteSelection` and :class:`~tinyevo.evolution.TournamentSelection`
of NSGA-II: they rank by (front, crowding) instead of by fitness, and compose with the other
strategies as those do. :class:`ParetoFront` keeps snapshots of the non-dominated candidates,
as the hall of fame keeps the best ones.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Sequence
from typing import Any

from tinyevo.evolution.candidate import FittedCandidate
from tinyevo.evolution.halloffame import Archive, snapshot
from tinyevo.evolution.objectives import Objectives
from tinyevo.evolution.strategies import EliteSelection, TournamentSelection, _fitness_of

__all__ = ["objective_point", "dominates", "nondominated_sort", "crowding_distance",
           "pareto_ranks", "ParetoEliteSelection", "ParetoTournamentSelection", "ParetoFront"]

Point = tuple[float, ...]


def objective_point(fitness: Any) -> Point:
    """``fitness`` as a point to maximise on every axis: an Objectives' :meth:`oriented`
    vector, a number as ``(number,)``; NaN is -inf (the worst).

        >>> objective_point(Objectives(0.9, ("acc", "params"), (0.9, 10), ("max", "min")))
        (0.9, -10.0)
    """
    if isinstance(fitness, Objectives):
        return fitness.oriented()
    if isinstance(fitness, numbers.Real) and not isinstance(fitness, bool):
        return (-math.inf if math.isnan(fitness) else float(fitness),)
    raise TypeError(f"a Pareto ranking needs a number or an Objectives as fitness, got "
                    f"{fitness!r}")


def dominates(a: Point, b: Point) -> bool:
    """Whether ``a`` is at least as good as ``b`` on every axis and better on one (all
    maximised)."""
    better = False
    for x, y in zip(a, b):
        if x < y:
            return False
        better = better or x > y
    return better


def nondominated_sort(points: Sequence[Point]) -> list[list[int]]:
    """The fronts of ``points``, best first, as lists of indices in input order (Deb's fast
    non-dominated sort, O(M N^2)). Equal points dominate neither each other: they share a
    front."""
    n = len(points)
    dominated: list[list[int]] = [[] for _ in range(n)]   # whom each point dominates
    count = [0] * n                                       # how many dominate each point
    for i in range(n):
        for j in range(i + 1, n):
            if dominates(points[i], points[j]):
                dominated[i].append(j)
                count[j] += 1
            elif dominates(points[j], points[i]):
                dominated[j].append(i)
                count[i] += 1
    fronts, front = [], [i for i in range(n) if count[i] == 0]
    while front:
        fronts.append(front)
        following = []
        for i in front:
            for j in dominated[i]:
                count[j] -= 1
                if count[j] == 0:
                    following.append(j)
        front = sorted(following)
    return fronts


def crowding_distance(points: Sequence[Point]) -> list[float]:
    """NSGA-II's crowding distance of each of ``points`` (one front): summed over the axes,
    the gap between a point's neighbours on that axis, as a share of the axis's range; the
    points at either end of an axis get infinity, so the extremes are kept.

    Ties are handled so that the result does not depend on the order of the points: points
    with the same value on an axis share their neighbours there (the next lower and the next
    higher value), all points at an extreme value are extremes, and an axis on which every
    point is equal counts for nothing. A point given more than once (a duplicate) is measured
    once: its first occurrence gets the distance, the others 0, so that copies of one point
    come last within their front. A lone point gets infinity.

        >>> crowding_distance([(0.0, 3.0), (1.0, 2.0), (1.0, 2.0), (3.0, 0.0)])
        [inf, 2.0, 0.0, inf]
    """
    if not points:
        return []
    distinct = list(dict.fromkeys(tuple(p) for p in points))
    if len(distinct) == 1:
        distance = {distinct[0]: math.inf}
    else:
        distance = dict.fromkeys(distinct, 0.0)
        for axis in range(len(distinct[0])):
            values = sorted({p[axis] for p in distinct})
            if len(values) == 1:
                continue
            span = values[-1] - values[0]
            if not math.isfinite(span):     # an infinite end: only the extremes are told apart
                for p in distinct:
                    if p[axis] in (values[0], values[-1]):
                        distance[p] = math.inf
                continue
            place = {v: i for i, v in enumerate(values)}
            for p in distinct:
                i = place[p[axis]]
                if i == 0 or i == len(values) - 1:
                    distance[p] = math.inf
                else:
                    distance[p] += (values[i + 1] - values[i - 1]) / span
    out, seen = [], set()
    for p in map(tuple, points):
        out.append(0.0 if p in seen else distance[p])
        seen.add(p)
    return out


def pareto_ranks(candidates: Sequence[Any]) -> list[tuple[int, float]]:
    """``(front, crowding distance)`` of each evaluated candidate: front 0 is the
    non-dominated one. What NSGA-II's crowded comparison orders by: the lower front first,
    then the larger distance."""
    points = [objective_point(_fitness_of(c)) for c in candidates]
    if len({len(p) for p in points}) > 1:
        raise ValueError("a Pareto ranking needs the same objectives for every candidate; "
                         f"got points of {sorted({len(p) for p in points})} objectives")
    ranks: list[tuple[int, float]] = [(0, 0.0)] * len(points)
    for rank, front in enumerate(nondominated_sort(points)):
        for i, d in zip(front, crowding_distance([points[i] for i in front])):
            ranks[i] = (rank, d)
    return ranks


def _crowded_keys(candidates: list) -> list[tuple[int, float]]:
    """Keys for NSGA-II's crowded comparison, higher is better: (-front, crowding)."""
    return [(-rank, d) for rank, d in pareto_ranks(candidates)]


class ParetoEliteSelection(EliteSelection):
    """ParetoEliteSelection(n, then=NoOpEvolution()): NSGA-II's survivors, the ``n`` first by
    front, then by crowding distance: the first front, cut by crowding where it has more than
    ``n`` points (its extremes first), completed from the next fronts where it has fewer.

    Ties (the same front and distance, e.g. two extremes) keep the input order. Elites are
    kept as they are, so they go on training.
    """

    def _ranking(self, candidates: list) -> list:
        return _crowded_keys(candidates)

    def __repr__(self) -> str:
        return f"ParetoEliteSelection({self.n})"


class ParetoTournamentSelection(TournamentSelection):
    """ParetoTournamentSelection(n, k, p, then, rng=None): ``n`` winners of tournaments of
    ``k`` by NSGA-II's crowded comparison (the lower front wins, then the larger crowding
    distance); as :class:`~tinyevo.evolution.TournamentSelection` otherwise, the same random
    draws included."""

    def _ranking(self, candidates: list) -> list:
        return _crowded_keys(candidates)

    def __repr__(self) -> str:
        return f"ParetoTournamentSelection({self.n}, {self.k}, {self.p}, {self.then!r})"


class ParetoFront(Archive):
    """ParetoFront(): snapshots of every non-dominated candidate ever evaluated, the hall of
    fame of a multi-objective search.

    ``update(population)`` takes a Population or any iterable of FittedCandidates. A member
    enters when no member of the front (or an earlier one of the same update) dominates its
    point, and members it dominates leave: so the front's points are always exactly the
    distinct non-dominated points of all the evaluations it was given. A point is held once:
    a candidate with the same objectives as a member replaces it only with a higher scalar
    fitness (for ``fit``, the more confident of two equally accurate models of one size, such
    as an elite trained on for another generation), else it does not enter (ties keep the
    first). Members whose fitness is missing or not finite on every objective (an invalid
    candidate) are skipped. With a plain number as fitness, the front is the best value ever
    seen (its first candidate).

    Entries are snapshots, as in :class:`~tinyevo.evolution.HallOfFame`: a FittedCandidate of
    a copy of the candidate (later training of the original does not reach it), its fitness
    and its generation. ``members`` are sorted by the first objective, best first (then by the
    next ones), so the order depends on the points alone.

        >>> front = ParetoFront(); front.update(population)        # doctest: +SKIP
        >>> [(c.fitness["accuracy"], c.fitness["params"]) for c in front]  # doctest: +SKIP
    """

    def __init__(self) -> None:
        self._members: list[FittedCandidate] = []
        self._points: list[Point] = []

    @property
    def members(self) -> list[FittedCandidate]:
        """The snapshots, sorted by the first objective, best first (a new list)."""
        return list(self._members)

    @property
    def names(self) -> tuple[str, ...] | None:
        """The objectives' names (None while empty; ``("fitness",)`` for plain numbers)."""
        return _names(self._members[0].fitness) if self._members else None

    def update(self, population: Iterable[Any]) -> int:
        """Take the non-dominated new points of ``population`` (snapshots) and drop the
        members they dominate; returns how many entered."""
        entries: list[tuple[Point, Any]] = list(zip(self._points, self._members))
        for c in population:
            fitness = getattr(c, "fitness", None)
            if fitness is None or isinstance(fitness, bool):
                continue
            point = objective_point(fitness)
            if not all(math.isfinite(v) for v in point):
                continue
            _check_objectives(entries, fitness)
            if any(dominates(q, point) for q, _ in entries):
                continue
            same = [e for q, e in entries if q == point]
            if same and not float(fitness) > float(same[0].fitness):
                continue          # the point is held, by a candidate at least as fit
            entries = [(q, e) for q, e in entries if q != point and not dominates(point, q)]
            entries.append((point, _New(c, fitness)))
        entries.sort(key=lambda e: e[0], reverse=True)
        self._points = [p for p, _ in entries]
        self._members = [e.snapshot() if isinstance(e, _New) else e for _, e in entries]
        return sum(isinstance(e, _New) for _, e in entries)

    def __repr__(self) -> str:
        names = f" of {', '.join(self.names)}" if self._members else ""
        return f"ParetoFront({len(self._members)} members{names})"


class _New:
    """A candidate about to enter the front: snapshotted only if it is still there at the end
    of the update."""

    def __init__(self, candidate: Any, fitness: Any) -> None:
        self.candidate, self.fitness = candidate, fitness

    def snapshot(self) -> FittedCandidate:
        c = self.candidate
        original = c.candidate if isinstance(c, FittedCandidate) else c
        return FittedCandidate(snapshot(original), self.fitness, getattr(c, "generation", None))


def _check_objectives(entries: list, fitness: Any) -> None:
    """A ValueError where ``fitness`` has other objectives than the front's ``entries``."""
    if entries and _senses(fitness) != _senses(entries[0][1].fitness):
        raise ValueError(f"ParetoFront: the front holds objectives "
                         f"{_senses(entries[0][1].fitness)}, got a candidate with "
                         f"{_senses(fitness)}")


def _names(fitness: Any) -> tuple[str, ...]:
    return fitness.names if isinstance(fitness, Objectives) else ("fitness",)


def _senses(fitness: Any) -> tuple[tuple[str, str], ...]:
    """The objectives as (name, sense) pairs."""
    if isinstance(fitness, Objectives):
        return tuple(zip(fitness.names, fitness.senses))
    return (("fitness", "max"),)
