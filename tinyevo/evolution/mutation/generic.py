"""How mutations compose: the base class and the decorators that choose what a mutation changes.

A mutation ``m`` is called on one entity and returns the result; called on a *list* it mutates
every element and returns the list. The decorators here (:class:`MutationProbability`,
:class:`MutationFilter`, :class:`MutationChain`, ...) decide per element first and then call the
wrapped mutation once with the chosen sublist; :class:`VertexMutation` hands it every eligible
vertex of a graph. They wrap crossovers of pairs just as well.

    >>> VertexMutation(MutationProbability(NoutMutation(-0.5, 0.5), 0.1))  # doctest: +SKIP
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import numpy as np

from tinyevo import backend as B
from tinyevo.graph import CompGraph, Vertex, mean_values, neuron_value, value_cache

try:                                    # the search package's shields, when present
    from tinyevo.search.shield import is_shielded as _search_is_shielded
except ImportError:                     # pragma: no cover - before tinyevo.search exists
    _search_is_shielded = None

__all__ = [
    "AbstractMutation", "VertexMutation", "MutationProbability", "WeightedMutationProbability",
    "HighUtilityMutationProbability", "LowUtilityMutationProbability", "MutationChain",
    "MutationFilter", "PostMutation", "LogMutation", "allow_mutation", "leaves",
]

logger = logging.getLogger("tinyevo.mutation")

Rng = np.random.Generator | None
ValueFn = Callable[[Vertex], Any]


class AbstractMutation:
    """Base class: ``m(x)`` mutates ``x`` and returns the result; ``m([x, ...])`` every element.

    Subclasses implement :meth:`mutate` (one entity) and, where the elements of a list should
    be handled together, :meth:`mutate_all`. ``children()`` lists wrapped mutations (so that
    :func:`neuronselect` and shields can look inside).
    """

    rng: Rng = None

    def __call__(self, x: Any) -> Any:
        if isinstance(x, list):
            return self.mutate_all(x)
        return self.mutate(x)

    def mutate(self, x: Any) -> Any:
        raise NotImplementedError

    def mutate_all(self, xs: list) -> list:
        for x in xs:
            self.mutate(x)
        return xs

    def children(self) -> tuple[AbstractMutation, ...]:
        return ()

    def _gen(self) -> np.random.Generator:
        return B.rng(self.rng)


def leaves(m: Any) -> list:
    """The basic mutations inside ``m`` (``m`` itself when it wraps nothing)."""
    kids = m.children() if isinstance(m, AbstractMutation) else ()
    if not kids:
        return [m]
    return [leaf for k in kids for leaf in leaves(k)]


def allow_mutation(v: Vertex, m: Any = None) -> bool:
    """True when ``m`` may change ``v``: never for graph inputs, never for shielded vertices
    unless their ``MutationShield`` allows ``m`` (or, for a composite ``m``, one of its leaves)."""
    if v.is_input:
        return False
    if not v.shielded:
        return True
    if m is None or _search_is_shielded is None:
        return False
    return any(not _search_is_shielded(v, leaf) for leaf in leaves(m))


class VertexMutation(AbstractMutation):
    """VertexMutation(m, filter=None): apply ``m`` to every eligible vertex of a graph at once.

    Eligible: not a graph input, not shielded against ``m``, and ``filter(v)`` true. ``m`` is
    called once with the list of eligible vertices in topological order.

        >>> VertexMutation(NoutMutation(-0.5, 0.5))(graph)  # doctest: +SKIP
    """

    def __init__(self, m: Callable, filter: Callable[[Vertex], bool] | None = None) -> None:
        check_callable(m, "VertexMutation", "m")
        if filter is not None:
            check_callable(filter, "VertexMutation", "filter")
        self.m, self.filter = m, filter

    def mutate(self, graph: CompGraph) -> CompGraph:
        if not isinstance(graph, CompGraph):
            raise TypeError(f"VertexMutation mutates a CompGraph, got {type(graph).__name__}")
        vs = [v for v in graph.vertices
              if allow_mutation(v, self.m) and (self.filter is None or self.filter(v))]
        if vs:
            with value_cache():                 # no training within one pass
                self.m(vs)
        return graph

    def children(self) -> tuple:
        return (self.m,)

    def __repr__(self) -> str:
        return f"VertexMutation({self.m!r})"


class _Choosing(AbstractMutation):
    """Applies ``self.m`` to the elements that ``chooses(x)`` picks: to one element, or to the
    chosen ones of a list at once (in their order, each asked once)."""

    m: Callable

    def chooses(self, x: Any) -> bool:
        raise NotImplementedError

    def mutate(self, x: Any) -> Any:
        return self.m(x) if self.chooses(x) else x

    def mutate_all(self, xs: list) -> list:
        chosen = [x for x in xs if self.chooses(x)]
        if chosen:
            self.m(chosen)
        return xs

    def children(self) -> tuple:
        return (self.m,)


class MutationProbability(_Choosing):
    """MutationProbability(m, p, rng=None): apply ``m`` to each element with probability ``p``.

        >>> VertexMutation(MutationProbability(NoutMutation(-0.5, 0.5), 0.1))  # doctest: +SKIP
    """

    def __init__(self, m: Callable, p: float, rng: Rng = None) -> None:
        check_callable(m, "MutationProbability", "m")
        if not (isinstance(p, (int, float)) and 0.0 <= p <= 1.0):
            raise ValueError(f"MutationProbability: p must be a probability in [0, 1], got {p!r}")
        self.m, self.p, self.rng = m, float(p), rng

    def probability(self, x: Any) -> float:
        return self.p

    def chooses(self, x: Any) -> bool:
        return self._gen().random() < self.probability(x)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.m!r}, {self.p})"


class WeightedMutationProbability(MutationProbability):
    """WeightedMutationProbability(m, pfun, rng=None): probability ``pfun(x)`` per element."""

    def __init__(self, m: Callable, pfun: Callable[[Any], float], rng: Rng = None) -> None:
        check_callable(pfun, "WeightedMutationProbability", "pfun")
        super().__init__(m, 0.0, rng)
        self.pfun = pfun

    def probability(self, x: Any) -> float:
        return float(self.pfun(x))

    def __repr__(self) -> str:
        return f"WeightedMutationProbability({self.m!r}, {self.pfun!r})"


class HighUtilityMutationProbability(MutationProbability):
    """Probability ``pbase ** (r ** -spread)`` for a vertex whose mean neuron value is ``r``
    times the graph's mean: valuable vertices are mutated more (e.g. where to add a layer).

    A vertex without a neuron value of its own gets ``pbase``.
    """

    _sign = -1.0

    def __init__(self, m: Callable, pbase: float, spread: float = 0.5, rng: Rng = None,
                 value_fn: ValueFn | None = None) -> None:
        super().__init__(m, pbase, rng)
        self.spread = float(spread)
        self.value_fn = value_fn or neuron_value
        self._mean: float | None = None
        self._means: dict[Vertex, float | None] | None = None

    def probability(self, v: Any) -> float:
        if not isinstance(v, Vertex):
            return self.p
        if self._means is not None and v in self._means:
            means, mean = self._means, self._mean
        else:
            means, mean = mean_values(v, self.value_fn)
        value = means[v]
        if value is None or mean is None or mean <= 0:
            return self.p
        r = min(max(value / mean, 1e-3), 1e3)
        return float(self.p ** (r ** (self._sign * self.spread)))

    def mutate_all(self, xs: list) -> list:
        # Every probability is drawn before anything is mutated: each vertex's mean value is
        # computed once, for itself and for the graph's mean.
        vs = [x for x in xs if isinstance(x, Vertex)]
        if vs:
            self._means, self._mean = mean_values(vs[0], self.value_fn)
        try:
            return super().mutate_all(xs)
        finally:
            self._mean = self._means = None

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.m!r}, {self.p}, spread={self.spread})"


class LowUtilityMutationProbability(HighUtilityMutationProbability):
    """Probability ``pbase ** (r ** spread)``: vertices of low value relative to the graph are
    mutated more (e.g. which to shrink or remove)."""

    _sign = 1.0


class MutationChain(AbstractMutation):
    """MutationChain(*ms): apply each mutation in turn (to the same entity or list)."""

    def __init__(self, *ms: Callable) -> None:
        for i, m in enumerate(ms):
            check_callable(m, "MutationChain", f"mutation {i}")
        self.ms = ms

    def mutate(self, x: Any) -> Any:
        for m in self.ms:
            x = m(x)
        return x

    def mutate_all(self, xs: list) -> list:
        for m in self.ms:
            m(xs)
        return xs

    def children(self) -> tuple:
        return tuple(self.ms)

    def __repr__(self) -> str:
        return f"MutationChain({', '.join(map(repr, self.ms))})"


class MutationFilter(_Choosing):
    """MutationFilter(pred, m): apply ``m`` only to the elements where ``pred(x)`` is true.

        >>> VertexMutation(MutationFilter(lambda v: v.nout < 8, RemoveVertexMutation()))
    """

    def __init__(self, pred: Callable[[Any], bool], m: Callable) -> None:
        check_callable(pred, "MutationFilter", "pred")
        check_callable(m, "MutationFilter", "m")
        self.pred, self.m = pred, m

    def chooses(self, x: Any) -> bool:
        return bool(self.pred(x))

    def __repr__(self) -> str:
        return f"MutationFilter({self.pred!r}, {self.m!r})"


class PostMutation(AbstractMutation):
    """PostMutation(m, *actions): after ``y = m(x)`` call ``action(self, y)`` for each action.

        >>> PostMutation(VertexMutation(NeuronSelectMutation(NoutMutation(-0.2, 0.2))),
        ...              neuronselect)  # doctest: +SKIP
    """

    def __init__(self, m: Callable, *actions: Callable[[Any, Any], Any]) -> None:
        check_callable(m, "PostMutation", "m")
        for i, a in enumerate(actions):
            check_callable(a, "PostMutation", f"action {i}")
        self.m, self.actions = m, actions

    def mutate(self, x: Any) -> Any:
        y = self.m(x)
        for action in self.actions:
            action(self, y)
        return y

    def mutate_all(self, xs: list) -> list:
        self.m(xs)
        for action in self.actions:
            action(self, xs)
        return xs

    def children(self) -> tuple:
        return (self.m,)

    def __repr__(self) -> str:
        return f"PostMutation({self.m!r}, {', '.join(map(repr, self.actions))})"


class LogMutation(AbstractMutation):
    """LogMutation(msgfun, m, level=logging.INFO, logger=None): log ``msgfun(x)`` for each
    element, then apply ``m``."""

    def __init__(self, msgfun: Callable[[Any], str], m: Callable, level: int = logging.INFO,
                 logger: logging.Logger | None = None) -> None:
        check_callable(msgfun, "LogMutation", "msgfun")
        check_callable(m, "LogMutation", "m")
        self.msgfun, self.m, self.level = msgfun, m, level
        self.logger = logger or globals()["logger"]

    def mutate(self, x: Any) -> Any:
        self.logger.log(self.level, "%s", self.msgfun(x))
        return self.m(x)

    def mutate_all(self, xs: list) -> list:
        for x in xs:
            self.logger.log(self.level, "%s", self.msgfun(x))
        self.m(xs)
        return xs

    def children(self) -> tuple:
        return (self.m,)

    def __repr__(self) -> str:
        return f"LogMutation({self.msgfun!r}, {self.m!r})"


def check_callable(x: Any, who: str, what: str) -> None:
    """Raise TypeError unless ``x`` is callable (``who``'s argument ``what``)."""
    if not callable(x):
        raise TypeError(f"{who}: {what} must be callable, got {type(x).__name__}")

