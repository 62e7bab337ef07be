"""Evolution strategies: from the candidates of one generation to those of the next.

A strategy is called with a list of candidates that have a precomputed ``fitness`` (evaluated
members of a Population, or anything with a ``fitness`` attribute) and returns a list of new
candidates, whose number may differ. ``evolve`` applies one to a Population or a list:

    >>> from tinyevo.evolution import CandidateModel, SizeFitness
    >>> from tinyevo.layers import Dense
    >>> population = Population([CandidateModel(Dense(2, n)) for n in (1, 2, 3)])
    >>> children = SusSelection(2, EvolveCandidates(evolve_model(lambda model: model)))
    >>> strategy = CombinedEvolution(EliteSelection(1), children)
    >>> population = evolve(strategy, SizeFitness(), population)
    >>> population.generation, len(population), population.previous.best().fitness
    (2, 3, 9)

Random choices use ``rng`` (anything with ``random()``, ``integers()``, ``permutation()``, e.g. a
``numpy.random.Generator``) or, when None, the library generator at the time of the draw.
"""

from __future__ import annotations

import bisect
import copy
import functools
import itertools
import math
from collections.abc import Callable
from typing import Any

import numpy as np

from tinyevo import backend as B
from tinyevo.evolution import _births as births
from tinyevo.evolution.candidate import copy_model, inherit_optimizer_state, is_model, new_candidate
from tinyevo.evolution.candidate import graph as graph_of
from tinyevo.evolution.population import Evaluator, Population

__all__ = [
    "evolve", "AbstractEvolution", "NoOpEvolution", "EliteSelection", "SusSelection",
    "TournamentSelection", "EvolveCandidates", "CombinedEvolution", "EvolutionChain",
    "AfterEvolution", "PairCandidates", "ShuffleCandidates", "CrossoverThenMutate",
    "evolve_model",
]


def evolve(strategy: Any, *args: Any, evaluator: Evaluator | None = None) -> Any:
    """``evolve(strategy, population)`` or ``evolve(strategy, fitness, population)``.

    With a fitness, the population is evaluated first (every member, each generation, as in the
    seed), by ``evaluator`` where given (see ``Population.evaluate``). A Population gives a
    Population of generation + 1 (its ``previous`` is the evaluated one); a list of candidates
    gives a list.

        >>> from tinyevo.evolution import FittedCandidate
        >>> evolve(EliteSelection(1), [FittedCandidate("a", 1), FittedCandidate("b", 3)])[0].fitness
        3
    """
    if len(args) == 1:
        (population,) = args
        if isinstance(population, Population):
            return Population(_apply(strategy, population.members),
                              population.generation + 1, previous=population)
        return _apply(strategy, list(population))
    if len(args) == 2:
        fitness, population = args
        if not isinstance(population, Population):
            population = Population(population)
        fitted = population.evaluate(fitness, evaluator)
        return Population(_apply(strategy, fitted.members), fitted.generation + 1,
                          previous=fitted)
    raise TypeError(f"evolve takes (strategy, population) or (strategy, fitness, population), "
                    f"got {1 + len(args)} arguments")


def _apply(strategy: Any, candidates: list) -> list:
    if not callable(strategy):
        raise TypeError(f"an evolution strategy must be callable on a list of candidates, got "
                        f"{type(strategy).__name__}")
    return list(strategy(candidates))


class AbstractEvolution:
    """Base class: ``__call__(self, candidates: list) -> list``."""

    def __call__(self, candidates: list) -> list:
        raise NotImplementedError


class NoOpEvolution(AbstractEvolution):
    """Returns the candidates unchanged (the default ``then`` of the selections)."""

    def __call__(self, candidates: list) -> list:
        return list(candidates)

    def __repr__(self) -> str:
        return "NoOpEvolution()"


class EliteSelection(AbstractEvolution):
    """EliteSelection(n, then=NoOpEvolution()): the ``n`` fittest, best first, passed to ``then``.

    Ties keep the input order. Elites are kept as they are (same candidate, same model), so they
    go on training in the next generation.
    """

    def __init__(self, n: int, then: Any = None) -> None:
        self.n, self.then = _check_n(n, "EliteSelection"), then or NoOpEvolution()

    def __call__(self, candidates: list) -> list:
        keys = self._ranking(candidates)
        ranked = sorted(range(len(candidates)), key=keys.__getitem__, reverse=True)
        return _apply(self.then, [candidates[i] for i in ranked[:self.n]])

    def _ranking(self, candidates: list) -> list:
        """One key per candidate, higher is better: its fitness (Pareto selections rank by
        front and crowding instead)."""
        return [_fitness_of(c) for c in candidates]

    def __repr__(self) -> str:
        return f"EliteSelection({self.n})"


class SusSelection(AbstractEvolution):
    """SusSelection(n, then, rng=None): ``n`` candidates by stochastic universal sampling.

    One random offset, then ``n`` equally spaced pointers over the cumulative fitness: selection
    is proportional to fitness with minimal spread. Fitness must be a number >= 0; when all are
    0 (e.g. all invalid) the choice is uniform. The selected go to ``then`` (e.g. EvolveCandidates).
    """

    def __init__(self, n: int, then: Any = None, rng: Any = None) -> None:
        self.n, self.then, self.rng = _check_n(n, "SusSelection"), then or NoOpEvolution(), rng

    def __call__(self, candidates: list) -> list:
        if not candidates:
            raise ValueError("SusSelection: no candidates to select from")
        values = [_scalar_fitness(c, "SusSelection") for c in candidates]
        rng = _rng(self.rng)
        cumulative = list(itertools.accumulate(values))
        total = cumulative[-1]
        if total <= 0:
            cumulative = list(range(1, len(candidates) + 1))
            total = len(candidates)
        spacing = total / self.n
        start = rng.random() * spacing
        # First index whose cumulative fitness reaches the pointer (the seed's findfirst(>=)).
        picks = [min(bisect.bisect_left(cumulative, start + i * spacing), len(candidates) - 1)
                 for i in range(self.n)]
        return _apply(self.then, [candidates[i] for i in picks])

    def __repr__(self) -> str:
        return f"SusSelection({self.n}, {self.then!r})"


class TournamentSelection(AbstractEvolution):
    """TournamentSelection(n, k, p, then, rng=None): ``n`` winners of tournaments of ``k``.

    Each tournament draws ``k`` distinct candidates (all of them when fewer) and ranks them by
    fitness; the best wins with probability ``p``, the second with ``p(1-p)``, and so on, the last
    takes what remains. Fitness may be anything that orders (numbers, tuples).
    """

    def __init__(self, n: int, k: int, p: float, then: Any = None, rng: Any = None) -> None:
        self.n, self.k = _check_n(n, "TournamentSelection"), _check_n(k, "TournamentSelection k")
        if not 0 < p <= 1:
            raise ValueError(f"TournamentSelection: p must be in (0, 1], got {p}")
        self.p, self.then, self.rng = float(p), then or NoOpEvolution(), rng

    def __call__(self, candidates: list) -> list:
        if not candidates:
            raise ValueError("TournamentSelection: no candidates to select from")
        rng = _rng(self.rng)
        k = min(self.k, len(candidates))
        keys = self._ranking(candidates)
        winners = []
        for _ in range(self.n):
            players = sorted(rng.permutation(len(candidates))[:k], key=keys.__getitem__,
                             reverse=True)
            place = 0
            while place < k - 1 and rng.random() >= self.p:
                place += 1
            winners.append(candidates[players[place]])
        return _apply(self.then, winners)

    def _ranking(self, candidates: list) -> list:
        """One key per candidate, higher is better: its fitness (Pareto selections rank by
        front and crowding instead)."""
        return [_fitness_of(c) for c in candidates]

    def __repr__(self) -> str:
        return f"TournamentSelection({self.n}, {self.k}, {self.p}, {self.then!r})"


class EvolveCandidates(AbstractEvolution):
    """EvolveCandidates(fun): each candidate mapped to ``fun(candidate)`` (e.g. a mutated child).

    ``fun`` works on candidates; :func:`evolve_model` turns a model mutation into one.
    """

    def __init__(self, fun: Callable[[Any], Any]) -> None:
        if not callable(fun):
            raise TypeError(f"EvolveCandidates needs a callable, got {type(fun).__name__}")
        self.fun = fun

    def __call__(self, candidates: list) -> list:
        return [self.fun(c) for c in candidates]

    def __repr__(self) -> str:
        return f"EvolveCandidates({self.fun!r})"


class CombinedEvolution(AbstractEvolution):
    """CombinedEvolution(*strategies): every strategy on the same candidates, results
    concatenated (e.g. elites plus mutated children)."""

    def __init__(self, *strategies: Any) -> None:
        if not strategies:
            raise ValueError("CombinedEvolution needs at least one strategy")
        self.strategies = strategies

    def __call__(self, candidates: list) -> list:
        return [c for s in self.strategies for c in _apply(s, candidates)]

    def __repr__(self) -> str:
        return f"CombinedEvolution({', '.join(map(repr, self.strategies))})"


class EvolutionChain(AbstractEvolution):
    """EvolutionChain(*strategies): the strategies one after the other."""

    def __init__(self, *strategies: Any) -> None:
        self.strategies = strategies

    def __call__(self, candidates: list) -> list:
        for s in self.strategies:
            candidates = _apply(s, candidates)
        return list(candidates)

    def __repr__(self) -> str:
        return f"EvolutionChain({', '.join(map(repr, self.strategies))})"


class AfterEvolution(AbstractEvolution):
    """AfterEvolution(strategy, fun): ``fun(new_candidates)`` on the strategy's whole result
    (e.g. to log, or to align something across the new population)."""

    def __init__(self, strategy: Any, fun: Callable[[list], Any]) -> None:
        self.strategy, self.fun = strategy, fun

    def __call__(self, candidates: list) -> list:
        return list(self.fun(_apply(self.strategy, candidates)))

    def __repr__(self) -> str:
        return f"AfterEvolution({self.strategy!r}, {self.fun!r})"


class PairCandidates(AbstractEvolution):
    """PairCandidates(then): candidates as consecutive pairs ``(c1, c2), (c3, c4), ...`` to
    ``then`` (e.g. ``EvolveCandidates(crossover)`` mapping a pair to a pair), flattened after.

    With an odd count the last is paired with the first and only its child is kept, so as many
    candidates come out as went in.
    """

    def __init__(self, then: Any) -> None:
        self.then = then

    def __call__(self, candidates: list) -> list:
        n = len(candidates)
        if n < 2:
            return list(candidates)
        out = [c for pair in _apply(self.then, _pairs(candidates)) for c in pair]
        return out[:n]

    def __repr__(self) -> str:
        return f"PairCandidates({self.then!r})"


class CrossoverThenMutate(AbstractEvolution):
    """CrossoverThenMutate(crossover, mutate): consecutive pairs crossed over, then every child
    mutated: what ``EvolutionChain(PairCandidates(EvolveCandidates(crossover)),
    EvolveCandidates(mutate))`` gives (same pairing, odd one out and lone candidate), with one
    copy of each crossed model instead of two.

    ``crossover`` maps a pair of candidates to a pair (e.g. ``MutationProbability(
    evolve_crossover(...), 0.3)``, which may give the pair back); ``mutate`` is an
    :class:`evolve_model`. A child whose model the crossover made is nobody else's, so it is
    mutated in place; any other child is copied first, as ``mutate`` always does (a copy of a
    20 M-parameter graph is 80 MB). Pairs are crossed and mutated one after the other, so the
    random draws come in another order than the chain's.
    """

    def __init__(self, crossover: Callable[[tuple], tuple], mutate: evolve_model) -> None:
        if not callable(crossover):
            raise TypeError(f"CrossoverThenMutate needs a callable crossover, got "
                            f"{type(crossover).__name__}")
        if not isinstance(mutate, evolve_model):
            raise TypeError(f"CrossoverThenMutate needs an evolve_model as mutate, got "
                            f"{type(mutate).__name__}; wrap a model mutation m as "
                            "evolve_model(m)")
        self.crossover, self.mutate = crossover, mutate

    def __call__(self, candidates: list) -> list:
        n = len(candidates)
        if n < 2:                      # nobody to pair with: only mutated, as in the chain
            return [self.mutate(c) for c in candidates]
        held = {id(graph_of(c)) for c in candidates}
        out: list = []
        for pair in _pairs(candidates):   # the odd one out keeps only its first child
            children = self.crossover(pair)
            if not (isinstance(children, (tuple, list)) and len(children) == 2):
                raise TypeError(f"{self.crossover!r} must return a pair of candidates, got "
                                f"{type(children).__name__}")
            for child in children[:n - len(out)]:
                g = graph_of(child)
                own = g is not None and id(g) not in held
                if g is not None:
                    held.add(id(g))    # a model given twice is mutated in place only once
                out.append(self.mutate(child, in_place=own))
        return out

    def __repr__(self) -> str:
        return f"CrossoverThenMutate({self.crossover!r}, {self.mutate!r})"


class ShuffleCandidates(AbstractEvolution):
    """ShuffleCandidates(then=NoOpEvolution(), rng=None): a random order, then ``then``."""

    def __init__(self, then: Any = None, rng: Any = None) -> None:
        self.then, self.rng = then or NoOpEvolution(), rng

    def __call__(self, candidates: list) -> list:
        order = _rng(self.rng).permutation(len(candidates))
        return _apply(self.then, [candidates[i] for i in order])

    def __repr__(self) -> str:
        return f"ShuffleCandidates({self.then!r})"


class evolve_model:  # noqa: N801 - a function-like callable object, picklable unlike a closure
    """evolve_model(mutation, opt_mutation=None, map_others=copy.deepcopy): candidate -> child.

    The child is ``new_candidate(c, ...)`` with a COPY of the model (``model.copy()`` or a deep
    copy, so trained parameters are inherited) passed through ``mutation(model)``. ``mutation``
    mutates its argument in place; if it returns a model, that one is used. The candidate's
    optimiser becomes a fresh ``opt.copy()`` (same hyperparameters), mutated by
    ``opt_mutation`` when given, that inherits the parent optimiser's state (if any was kept) for
    the parameters the mutation left as they were; other fields go through ``map_others``. A
    mutation acting on whole candidates needs no adapter: pass it to EvolveCandidates directly.

        >>> from tinyevo.evolution import CandidateModel
        >>> from tinyevo.layers import Dense, Sequential
        >>> parent = CandidateModel(Sequential(Dense(2, 2)))
        >>> child = evolve_model(lambda m: m)(parent)
        >>> child.model is not parent.model
        True
    """

    def __init__(self, mutation: Callable[[Any], Any], opt_mutation: Callable | None = None,
                 map_others: Callable[[Any], Any] = copy.deepcopy) -> None:
        if not callable(mutation):
            raise TypeError(f"evolve_model needs a callable mutation, got "
                            f"{type(mutation).__name__}")
        self.mutation, self.opt_mutation, self.map_others = mutation, opt_mutation, map_others

    def __call__(self, candidate: Any, in_place: bool = False) -> Any:
        """The child of ``candidate``. ``in_place=True`` mutates the candidate's own model
        instead of a copy: only for a model that nothing else holds (a crossover's child)."""
        child = new_candidate(candidate, functools.partial(self._map_field, in_place=in_place))
        return inherit_optimizer_state(child, candidate)

    def _map_field(self, x: Any, in_place: bool = False) -> Any:
        from tinyevo.optimizers import Optimizer

        if is_model(x):
            model = x if in_place else copy_model(x)
            return births.edit(model, self._mutate_model, _name(self.mutation))
        if isinstance(x, Optimizer):
            o = x.copy()
            if self.opt_mutation is not None:
                result = self.opt_mutation(o)
                o = result if isinstance(result, Optimizer) else o
            return o
        return self.map_others(x)

    def _mutate_model(self, model: Any) -> Any:
        result = self.mutation(model)
        return result if result is not None and is_model(result) else model

    def __repr__(self) -> str:
        return f"evolve_model({self.mutation!r})"


# --------------------------------------------------------------------- helpers
def _pairs(candidates: list) -> list[tuple]:
    """Consecutive pairs ``(c1, c2), (c3, c4), ...``; an odd one out is paired with the first."""
    pairs = [(candidates[i], candidates[i + 1]) for i in range(0, len(candidates) - 1, 2)]
    if len(candidates) % 2:
        pairs.append((candidates[-1], candidates[0]))
    return pairs


def _name(f: Any) -> str:
    """A callable's name for a lineage: a function's, else its class's."""
    return getattr(f, "__name__", None) or type(f).__name__


def _fitness_of(c: Any) -> Any:
    f = getattr(c, "fitness", None)
    if f is None:
        raise ValueError(f"candidate {c!r} has no fitness: evolution strategies need evaluated "
                         "candidates; use evolve(strategy, fitness, population)")
    return f


def _scalar_fitness(c: Any, who: str) -> float:
    f = _fitness_of(c)
    try:
        value = float(f)
    except (TypeError, ValueError):
        raise ValueError(f"{who}: fitness must be a number, got {f!r}; map it to one with "
                         "MapFitness") from None
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{who}: fitness must be a finite number >= 0, got {value}; map it "
                         "with MapFitness or use TournamentSelection, which only compares")
    return value


def _rng(rng: Any) -> Any:
    return B.rng() if rng is None else rng


def _check_n(n: Any, who: str) -> int:
    if not isinstance(n, (int, np.integer)) or isinstance(n, bool) or n < 1:
        raise ValueError(f"{who}: expected a positive integer, got {n!r}")
    return int(n)

