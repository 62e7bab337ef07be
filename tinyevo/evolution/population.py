"""Population: the candidates of one generation, and their evaluation.

    >>> from tinyevo.evolution import CandidateModel
    >>> from tinyevo.layers import Dense
    >>> pop = Population([CandidateModel(Dense(2, n)) for n in (3, 4)])
    >>> pop.generation, pop.evaluate(lambda c: c.graph().nout).best().fitness
    (1, 4)
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from tinyevo.evolution.candidate import FittedCandidate, _set_prior
from tinyevo.evolution.fitness import fitness_of

__all__ = ["Population"]


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

    def evaluate(self, fitness: Any, mapper: Callable | None = None,
                 reevaluate: bool = True) -> Population:
        """This generation with each member a FittedCandidate of its fitness by ``fitness``.

        As in the seed every member is evaluated each generation: training continues, so an elite
        kept from the last generation is trained and measured again. ``reevaluate=False`` keeps the
        fitness of members that already have one (for fitness functions that do not train).
        ``mapper(fn, members)`` replaces the built-in ``map``: the hook for parallel evaluation
        (``fn`` is picklable; it returns the FittedCandidate, trained model included).
        """
        todo = self.members if reevaluate else [c for c in self.members
                                                if not isinstance(c, FittedCandidate)]
        fn = functools.partial(evaluate_candidate, fitness, self.generation)
        fitted = iter(list((mapper or map)(fn, todo)))
        members = [next(fitted) if reevaluate or not isinstance(c, FittedCandidate) else c
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
