"""Population: the candidates of one generation, and their evaluation through an evaluator.

The evaluator contract: ``evaluator.evaluate(fitness, generation, members)`` returns one
:class:`FittedCandidate` per member, in order, each as :func:`evaluate_candidate` makes it (the
trained candidate, its fitness by ``fitness`` at ``generation``). The default evaluates in this
process with the built-in ``map``; :class:`MapEvaluator` turns any ``map(fn, items)`` into an
evaluator; ``tinyevo.app.make_evaluator`` gives seeded ones on processes or a Dask cluster.

    >>> from tinyevo.evolution import CandidateModel
    >>> from tinyevo.layers import Dense
    >>> pop = Population([CandidateModel(Dense(2, n)) for n in (3, 4)])
    >>> pop.generation, pop.evaluate(lambda c: c.graph().nout).best().fitness
    (1, 4)
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, Protocol, runtime_checkable

from tinyevo.evolution.candidate import FittedCandidate, _set_prior
from tinyevo.evolution.fitness import fitness_of

__all__ = ["Population", "Evaluator", "MapEvaluator", "evaluate_candidate"]


class Population:
    """Population(candidates, generation=1): the members of one generation.

    ``evaluate(fitness)`` gives the same generation with every member a FittedCandidate;
    ``evolve(strategy, fitness, population)`` evaluates, evolves and returns generation + 1, whose
    ``previous`` is the evaluated generation it came from (kept one level deep only).
    """

    def __init__(self, candidates: Iterable[Any], generation: int = 1,
                 previous: Population | None = None) -> None:
        self.members: list[Any] = list(candidates)
        if not isinstance(generation, int) or generation < 1:
            raise ValueError(f"generation must be a positive integer, got {generation!r}")
        self.generation = generation
        if previous is not None:
            previous = Population(previous.members, previous.generation)  # cut the chain
        self.previous = previous

    def evaluate(self, fitness: Any, evaluator: Evaluator | None = None,
                 reevaluate: bool = True) -> Population:
        """This generation with each member a FittedCandidate of its fitness by ``fitness``.

        As in the seed every member is evaluated each generation: training continues, so an elite
        kept from the last generation is trained and measured again. ``reevaluate=False`` keeps the
        fitness of members that already have one (for fitness functions that do not train).
        ``evaluator`` (an :class:`Evaluator`; default: the built-in ``map`` in this process) is
        the hook for parallel evaluation.
        """
        todo = self.members if reevaluate else [c for c in self.members
                                                if not isinstance(c, FittedCandidate)]
        evaluator = evaluator if evaluator is not None else _IN_PROCESS
        fitted = list(evaluator.evaluate(fitness, self.generation, todo))
        if len(fitted) != len(todo):
            raise ValueError(f"the evaluator {evaluator!r} returned {len(fitted)} results for "
                             f"{len(todo)} members")
        results = iter(fitted)
        members = [next(results) if reevaluate or not isinstance(c, FittedCandidate) else c
                   for c in self.members]
        return Population(members, self.generation, self.previous)

    @property
    def fitted(self) -> bool:
        """True when every member has a fitness."""
        return all(isinstance(c, FittedCandidate) for c in self.members)

    def fitnesses(self) -> list[Any]:
        """The members' fitness values (None for members not evaluated)."""
        return [getattr(c, "fitness", None) for c in self.members]

    def best_first(self) -> list[FittedCandidate]:
        """Evaluated members sorted by fitness, best first (stable: ties keep their order)."""
        fitted = [c for c in self.members if getattr(c, "fitness", None) is not None]
        if not fitted:
            raise ValueError(f"generation {self.generation} has no evaluated members: call "
                             "population.evaluate(fitness) first")
        return sorted(fitted, key=lambda c: c.fitness, reverse=True)

    def best(self) -> FittedCandidate:
        """The evaluated member with the highest fitness."""
        return self.best_first()[0]

    def __len__(self) -> int:
        return len(self.members)

    def __iter__(self) -> Iterator[Any]:
        return iter(self.members)

    def __getitem__(self, i: int) -> Any:
        return self.members[i]

    def __repr__(self) -> str:
        nfit = sum(isinstance(c, FittedCandidate) for c in self.members)
        return (f"Population(generation={self.generation}, {len(self.members)} members, "
                f"{nfit} evaluated)")


def evaluate_candidate(fitness: Any, generation: int, candidate: Any) -> FittedCandidate:
    """``FittedCandidate`` of ``candidate`` (unwrapped if already fitted) at ``generation``.

    The fitness sees the unwrapped candidate; an already fitted one's last fitness becomes its
    ``prior_fitness`` first (a child carries its parent's already), for ``EwmaFitness``.
    """
    inner = candidate
    if isinstance(candidate, FittedCandidate):
        inner = candidate.candidate
        if candidate.fitness is not None:
            _set_prior(inner, candidate.fitness)
    return FittedCandidate(inner, fitness_of(fitness, inner, generation), generation)


@runtime_checkable
class Evaluator(Protocol):
    """What evaluates a generation's members: the contract behind ``Population.evaluate``.

    ``evaluate(fitness, generation, members)`` returns one :class:`FittedCandidate` per member,
    in order, as ``evaluate_candidate(fitness, generation, member)`` returns it (the candidate
    trained, if the fitness trains). Where the members are evaluated (this process, a pool, a
    cluster) and in which order is the evaluator's business. An evaluator that evaluates on
    copies of ``fitness`` calls ``start_generation(fitness, generation)``
    (:mod:`tinyevo.evolution.fitness`) on each copy before its candidates, so that
    generation-aware data is the same on every copy.

        >>> class Reversed:  # evaluates the members last to first
        ...     def evaluate(self, fitness, generation, members):
        ...         done = [evaluate_candidate(fitness, generation, c) for c in members[::-1]]
        ...         return done[::-1]
        >>> isinstance(Reversed(), Evaluator)
        True
    """

    def evaluate(self, fitness: Any, generation: int,
                 members: Sequence[Any]) -> list[FittedCandidate]: ...


class MapEvaluator:
    """MapEvaluator(map_fn=map): the evaluator of a ``map`` function.

    ``map_fn(fn, members)`` runs ``fn = partial(evaluate_candidate, fitness, generation)`` (which
    pickles) on each member: the built-in ``map``, ``pool.map`` of a ``multiprocessing`` pool or
    of any ``concurrent.futures.Executor``. Nothing else is done: the fitness is sent with every
    task as it is in this process, and generation-aware data advances where a candidate first
    uses it (``tinyevo.app``'s evaluators keep copies in step and seed each candidate).

        >>> MapEvaluator().evaluate(lambda c: c * 2, 1, [1, 2])[1].fitness
        4
    """

    def __init__(self, map_fn: Callable = map) -> None:
        if not callable(map_fn):
            raise TypeError(f"MapEvaluator: expected a map function map_fn(fn, items), got "
                            f"{type(map_fn).__name__}")
        self.map_fn = map_fn

    def evaluate(self, fitness: Any, generation: int,
                 members: Sequence[Any]) -> list[FittedCandidate]:
        return list(self.map_fn(functools.partial(evaluate_candidate, fitness, generation),
                                members))

    def close(self) -> None:
        """Nothing to release (the map function's owner shuts its pool down)."""

    def __enter__(self) -> MapEvaluator:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"MapEvaluator({getattr(self.map_fn, '__qualname__', self.map_fn)})"


_IN_PROCESS = MapEvaluator()
