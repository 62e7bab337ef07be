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
"""

from __future__ import annotations

import inspect
import logging
import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np

from tinyevo import backend as B
from tinyevo.graph import (
    PROBES,
    CompGraph,
    Snapshot,
    Vertex,
    add_edge,
    apply_pending,
    change_kernel_size,
    component,
    connected,
    flush_pending,
    insert_after,
    insert_merge_before,
    insertion_keeps_shapes,
    mean_values,
    neuron_value,
    removal_keeps_shapes,
    remove_edge,
    remove_vertex,
    resize,
    resize_fresh,
    set_activation,
    toposort,
    trace,
    value_cache,
)
from tinyevo.graph import vertex as layer_vertex
from tinyevo.layers import Conv, Layer
from tinyevo.optimizers import OPTIMIZERS, Optimizer

try:                                    # the search package's shields and inits, when present
    from tinyevo.search.shield import is_shielded as _search_is_shielded
except ImportError:                     # pragma: no cover - before tinyevo.search exists
    _search_is_shielded = None
try:
    from tinyevo.search.weightinit import IdentityWeightInit
except ImportError:                     # pragma: no cover
    IdentityWeightInit = None

__all__ = [
    "AbstractMutation", "VertexMutation", "MutationProbability", "WeightedMutationProbability",
    "HighUtilityMutationProbability", "LowUtilityMutationProbability", "MutationChain",
    "MutationFilter", "PostMutation", "LogMutation", "NeuronSelectMutation", "neuronselect",
    "NoutMutation", "RemoveVertexMutation", "AddVertexMutation", "RemoveEdgeMutation",
    "AddEdgeMutation", "KernelSizeMutation", "ActivationFunctionMutation", "OptimizerMutation",
    "LearningRateMutation", "allow_mutation", "leaves",
]

logger = logging.getLogger("tinyevo.mutation")

Rng = np.random.Generator | None
ValueFn = Callable[[Vertex], Any]


# ====================================================================== base and utilities

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
        _check_callable(m, "VertexMutation", "m")
        if filter is not None:
            _check_callable(filter, "VertexMutation", "filter")
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


class MutationProbability(AbstractMutation):
    """MutationProbability(m, p, rng=None): apply ``m`` to each element with probability ``p``.

        >>> VertexMutation(MutationProbability(NoutMutation(-0.5, 0.5), 0.1))  # doctest: +SKIP
    """

    def __init__(self, m: Callable, p: float, rng: Rng = None) -> None:
        _check_callable(m, "MutationProbability", "m")
        if not (isinstance(p, (int, float)) and 0.0 <= p <= 1.0):
            raise ValueError(f"MutationProbability: p must be a probability in [0, 1], got {p!r}")
        self.m, self.p, self.rng = m, float(p), rng

    def probability(self, x: Any) -> float:
        return self.p

    def mutate(self, x: Any) -> Any:
        return self.m(x) if self._gen().random() < self.probability(x) else x

    def mutate_all(self, xs: list) -> list:
        gen = self._gen()
        chosen = [x for x in xs if gen.random() < self.probability(x)]
        if chosen:
            self.m(chosen)
        return xs

    def children(self) -> tuple:
        return (self.m,)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.m!r}, {self.p})"


class WeightedMutationProbability(MutationProbability):
    """WeightedMutationProbability(m, pfun, rng=None): probability ``pfun(x)`` per element."""

    def __init__(self, m: Callable, pfun: Callable[[Any], float], rng: Rng = None) -> None:
        _check_callable(pfun, "WeightedMutationProbability", "pfun")
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
            _check_callable(m, "MutationChain", f"mutation {i}")
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


class MutationFilter(AbstractMutation):
    """MutationFilter(pred, m): apply ``m`` only to the elements where ``pred(x)`` is true.

        >>> VertexMutation(MutationFilter(lambda v: v.nout < 8, RemoveVertexMutation()))
    """

    def __init__(self, pred: Callable[[Any], bool], m: Callable) -> None:
        _check_callable(pred, "MutationFilter", "pred")
        _check_callable(m, "MutationFilter", "m")
        self.pred, self.m = pred, m

    def mutate(self, x: Any) -> Any:
        return self.m(x) if self.pred(x) else x

    def mutate_all(self, xs: list) -> list:
        chosen = [x for x in xs if self.pred(x)]
        if chosen:
            self.m(chosen)
        return xs

    def children(self) -> tuple:
        return (self.m,)

    def __repr__(self) -> str:
        return f"MutationFilter({self.pred!r}, {self.m!r})"


class PostMutation(AbstractMutation):
    """PostMutation(m, *actions): after ``y = m(x)`` call ``action(self, y)`` for each action.

        >>> PostMutation(VertexMutation(NeuronSelectMutation(NoutMutation(-0.2, 0.2))),
        ...              neuronselect)  # doctest: +SKIP
    """

    def __init__(self, m: Callable, *actions: Callable[[Any, Any], Any]) -> None:
        _check_callable(m, "PostMutation", "m")
        for i, a in enumerate(actions):
            _check_callable(a, "PostMutation", f"action {i}")
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
        _check_callable(msgfun, "LogMutation", "msgfun")
        _check_callable(m, "LogMutation", "m")
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


class NeuronSelectMutation(AbstractMutation):
    """NeuronSelectMutation(m, value_fn=None, rng=None): remember what ``m`` mutates, so that
    :meth:`select` (or :func:`neuronselect`) later applies the deferred size changes there.

    The seed's deferred neuron selection: size changes (``NoutMutation``) only record the new
    sizes; ``select`` then cuts and pads the parameters, keeping the neurons of highest
    ``value_fn`` (default :func:`~tinyevo.graph.neuron_value`), one solve per set of tied vertices.
    """

    def __init__(self, m: Callable, value_fn: ValueFn | None = None, rng: Rng = None) -> None:
        _check_callable(m, "NeuronSelectMutation", "m")
        self.m, self.value_fn, self.rng = m, value_fn, rng
        self.mutated: list[Any] = []

    def mutate(self, x: Any) -> Any:
        self.mutated.append(x)
        return self.m(x)

    def mutate_all(self, xs: list) -> list:
        self.mutated.extend(xs)
        self.m(xs)
        return xs

    def select(self, graph: CompGraph | None = None) -> bool:
        """Apply every pending size change of ``graph`` (or, without one, of the graphs of the
        vertices mutated since the last call). Returns False if some could not be applied; those
        are dropped and the sizes fall back to the parameters'."""
        if isinstance(graph, CompGraph):
            vertices = graph.pending()
        else:
            seen: dict[Vertex, None] = {}
            for x in self.mutated:
                if isinstance(x, CompGraph):
                    seen.update(dict.fromkeys(x.pending()))
                elif isinstance(x, Vertex) and _alive(x):
                    seen.update(dict.fromkeys(u for u in component([x]) if u.pending))
            vertices = list(seen)
        self.mutated = []
        return apply_pending(vertices, self.value_fn, self.rng)

    def children(self) -> tuple:
        return (self.m,)

    def __repr__(self) -> str:
        return f"NeuronSelectMutation({self.m!r})"


def neuronselect(m: Any, graph: Any = None) -> None:
    """Run :meth:`NeuronSelectMutation.select` for every NeuronSelectMutation inside ``m``.

    Fits :class:`PostMutation` as an action: ``PostMutation(mutation, neuronselect)``.
    """
    for nsm in _find(m, NeuronSelectMutation):
        nsm.select(graph if isinstance(graph, CompGraph) else None)


# ====================================================================== graph mutations

class _VertexLeaf(AbstractMutation):
    """A basic mutation of one vertex; inputs, shielded and removed vertices are skipped."""

    def mutate(self, v: Any) -> Any:
        if not isinstance(v, Vertex):
            raise TypeError(f"{type(self).__name__} mutates vertices, got {type(v).__name__}; "
                            f"wrap it as VertexMutation({type(self).__name__}(...)) to mutate a "
                            "graph")
        if self._applies(v):
            self.mutate_vertex(v)
        return v

    def mutate_all(self, xs: list) -> list:
        for v in xs:
            self.mutate(v)
        return xs

    def _applies(self, v: Vertex) -> bool:
        return _alive(v) and allow_mutation(v, self)

    def mutate_vertex(self, v: Vertex) -> None:
        raise NotImplementedError


class NoutMutation(_VertexLeaf):
    """NoutMutation(lo, hi=None, rng=None): change each vertex's output size by
    ``ceil(|x| * nout) * sign(x)``, ``x ~ U(lo, hi)`` (``NoutMutation(l)`` is ``(min(0, l),
    max(0, l))``); sizes stay >= 1.

    The changes of one call are solved together (one problem per set of tied vertices, graph
    outputs held at their size) and recorded as pending sizes: ``v.nout`` is the new size,
    ``v.nout_org`` the parameters' until :func:`~tinyevo.graph.select_neurons`,
    :func:`neuronselect` or a structural edit applies them.
    """

    def __init__(self, lo: float, hi: float | None = None, rng: Rng = None,
                 value_fn: ValueFn | None = None) -> None:
        if hi is None:
            lo, hi = min(0.0, lo), max(0.0, lo)
        if not (math.isfinite(lo) and math.isfinite(hi) and lo <= hi):
            raise ValueError(f"NoutMutation: expected finite lo <= hi, got ({lo}, {hi})")
        self.lo, self.hi, self.rng, self.value_fn = float(lo), float(hi), rng, value_fn

    def mutate_vertex(self, v: Vertex) -> None:
        self.mutate_all([v])

    def mutate_all(self, xs: list) -> list:
        gen = self._gen()
        deltas: dict[Vertex, int] = {}
        for v in xs:
            if not isinstance(v, Vertex):
                raise TypeError(f"NoutMutation mutates vertices, got {type(v).__name__}")
            if not self._applies(v):
                continue
            x = gen.uniform(self.lo, self.hi)
            d = int(math.ceil(abs(x) * v.nout)) * int(np.sign(x))
            d = max(d, 1 - v.nout)
            if d:
                deltas[v] = d
        if deltas:
            resize({v: v.nout + d for v, d in deltas.items()}, self.value_fn, gen, select=False)
        return xs

    def __repr__(self) -> str:
        return f"NoutMutation({self.lo}, {self.hi})"


class RemoveVertexMutation(_VertexLeaf):
    """RemoveVertexMutation(value_fn=None, rng=None): remove the vertex; its input takes its
    place (sizes aligned as :func:`~tinyevo.graph.remove_vertex`). Vertices whose removal would
    break the feature-map shapes of the graph (a pooling layer inside a fork) stay."""

    def __init__(self, value_fn: ValueFn | None = None, rng: Rng = None) -> None:
        self.value_fn, self.rng = value_fn, rng

    def mutate_vertex(self, v: Vertex) -> None:
        flush_pending(v, self.value_fn, self._gen())
        if not removal_keeps_shapes(v):
            logger.info("RemoveVertexMutation(%r): kept, feature-map shapes would not match",
                        v.name)
            return
        remove_vertex(v, value_fn=self.value_fn, rng=self._gen())

    def __repr__(self) -> str:
        return "RemoveVertexMutation()"


class AddVertexMutation(_VertexLeaf):
    """AddVertexMutation(space, weightinit=IdentityWeightInit(), rng=None): insert what
    ``space`` draws after the vertex.

    ``space(v, rng=..., weightinit=...)`` (keywords passed where it takes them; ``outsize=v.nout``
    too) returns the new output vertex built on ``v``, a layer, or a factory ``v -> vertex``.
    With an identity init and a drawn size equal to ``v``'s the network's output is unchanged.
    A drawn size that differs is cut/padded to ``v.nout``. ``weightinit`` may also be the
    strings "identity" or "default".
    """

    def __init__(self, space: Callable, weightinit: Any = None, rng: Rng = None) -> None:
        _check_callable(space, "AddVertexMutation", "space")
        self.space, self.rng = space, rng
        self.weightinit = _weightinit(weightinit)
        self._kwargs = _accepted_kwargs(space)

    def mutate_vertex(self, v: Vertex) -> None:
        gen = self._gen()
        flush_pending(v, None, gen)

        def factory(u: Vertex) -> Vertex:
            new = self._draw(u, gen)
            if isinstance(new, Vertex) and new is not u:
                if new.nout != u.nout and not resize_fresh(new, u.nout, u, gen):
                    raise ValueError(f"the drawn vertex has nout {new.nout} and cannot be resized "
                                     f"to {u.nout} without changing {u.name!r}")
                if not insertion_keeps_shapes(u, new):
                    raise ValueError("feature-map shapes would not match")
            return new

        try:
            insert_after(v, factory)
        except ValueError as e:
            logger.info("AddVertexMutation(%r): not added, %s", v.name, e)

    def _draw(self, u: Vertex, gen: np.random.Generator) -> Any:
        kw = {}
        if "rng" in self._kwargs:
            kw["rng"] = gen
        if "weightinit" in self._kwargs:
            kw["weightinit"] = self.weightinit
        if "outsize" in self._kwargs:
            kw["outsize"] = u.nout
        new = self.space(u, **kw)
        if isinstance(new, Layer):
            new = layer_vertex(new, u)
        elif callable(new) and not isinstance(new, Vertex):
            new = new(u)
            if isinstance(new, Layer):
                new = layer_vertex(new, u)
        return new

    def __repr__(self) -> str:
        return f"AddVertexMutation({self.space!r}, {self.weightinit!r})"


class RemoveEdgeMutation(_VertexLeaf):
    """RemoveEdgeMutation(value_fn=None, rng=None): a merge vertex (concat/add with two inputs
    or more) stops reading one of its inputs, chosen at random among those that stay read."""

    def __init__(self, value_fn: ValueFn | None = None, rng: Rng = None) -> None:
        self.value_fn, self.rng = value_fn, rng

    def mutate_vertex(self, v: Vertex) -> None:
        if v.layer is not None or len(v.inputs) < 2:
            return
        gen = self._gen()
        flush_pending(v, self.value_fn, gen)
        ins = list(dict.fromkeys(v.inputs))
        for k in gen.permutation(len(ins)):
            if remove_edge(ins[k], v, value_fn=self.value_fn, rng=gen):
                return

    def __repr__(self) -> str:
        return "RemoveEdgeMutation()"


class AddEdgeMutation(_VertexLeaf):
    """AddEdgeMutation(p=0.5, pconcat=0.5, filter=None, value_fn=None, rng=None): connect the
    vertex to a later vertex whose output has the same kind and feature-map shape.

    Candidates are visited nearest first and each is taken with probability ``p`` (else a
    uniform pick). A merge target (concat/add) gets the edge directly; a one-input target gets
    a new concat (probability ``pconcat``, function kept: its readers get zero weights for the
    new channels) or add vertex in front of it, as the seed. ``filter(target)`` may narrow the
    candidates.
    """

    def __init__(self, p: float = 0.5, pconcat: float = 0.5,
                 filter: Callable[[Vertex], bool] | None = None,
                 value_fn: ValueFn | None = None, rng: Rng = None) -> None:
        for name, val in (("p", p), ("pconcat", pconcat)):
            if not (isinstance(val, (int, float)) and 0.0 <= val <= 1.0):
                raise ValueError(f"AddEdgeMutation: {name} must be in [0, 1], got {val!r}")
        self.p, self.pconcat, self.filter = float(p), float(pconcat), filter
        self.value_fn, self.rng = value_fn, rng

    def mutate_vertex(self, v: Vertex) -> None:
        self.mutate_all([v])

    def mutate_all(self, xs: list) -> list:
        vs = [v for v in xs if isinstance(v, Vertex) and self._applies(v)]
        if not vs:
            return xs
        gen = self._gen()
        flush_pending(vs[0], self.value_fn, gen)
        order, shapes, pos = _traced(vs[0])
        for v in vs:
            if not _alive(v):
                continue
            if v not in pos:                     # another graph in the same list
                order, shapes, pos = _traced(v)
            self._add_one(v, order[pos[v] + 1:], shapes, gen)
        return xs

    def _add_one(self, v: Vertex, later: list[Vertex], shapes: list[dict],
                 gen: np.random.Generator) -> None:
        readers = set(v.outputs)
        cands = [t for t in later
                 if t not in readers and t.kind == v.kind and _alive(t) and not t.is_input
                 and allow_mutation(t, self) and all(s.get(t) == s.get(v) for s in shapes)
                 and (t.op in ("concat", "add") or t.layer is not None)
                 and (self.filter is None or self.filter(t))]
        if not cands:
            return
        target = None
        for t in cands:
            if gen.random() < self.p:
                target = t
                break
        if target is None:
            target = cands[int(gen.integers(len(cands)))]
        op = "concat" if gen.random() < self.pconcat else "add"
        if target.layer is None:
            if add_edge(v, target, value_fn=self.value_fn, rng=gen):
                return
            logger.info("AddEdgeMutation(%r -> %r): not added", v.name, target.name)
            return
        snap = Snapshot(connected(target))
        try:
            merge = insert_merge_before(target, op)
        except ValueError as e:
            snap.restore()
            logger.info("AddEdgeMutation(%r -> %r): not added, %s", v.name, target.name, e)
            return
        if not add_edge(v, merge, value_fn=self.value_fn, rng=gen):
            snap.restore()
            logger.info("AddEdgeMutation(%r -> %r): not added", v.name, target.name)

    def __repr__(self) -> str:
        return f"AddEdgeMutation({self.p})"


class KernelSizeMutation(_VertexLeaf):
    """KernelSizeMutation(delta=2, maxsize=7, rng=None): add ``d`` drawn from ``-delta..delta``
    (or from the sequence ``delta``) to each kernel dimension of a convolution, kept in
    ``1..maxsize``. Weights are kept, padded or cropped around the centre."""

    def __init__(self, delta: int | Sequence[int] = 2, maxsize: int | None = 7,
                 rng: Rng = None) -> None:
        if isinstance(delta, (int, np.integer)):
            if delta < 0:
                raise ValueError(f"KernelSizeMutation: delta must be >= 0, got {delta}")
            choices = tuple(range(-int(delta), int(delta) + 1))
        else:
            choices = tuple(int(d) for d in delta)
        if not choices:
            raise ValueError("KernelSizeMutation: no kernel size changes to choose from")
        if maxsize is not None and maxsize < 1:
            raise ValueError(f"KernelSizeMutation: maxsize must be >= 1, got {maxsize}")
        self.choices, self.maxsize, self.rng = choices, maxsize, rng

    def mutate_vertex(self, v: Vertex) -> None:
        layer = v.layer
        if not isinstance(layer, Conv):
            return
        gen = self._gen()
        hi = self.maxsize or 1 << 30
        ks = tuple(min(max(k + self.choices[int(gen.integers(len(self.choices)))], 1), hi)
                   for k in layer.kernel_size)
        if ks != layer.kernel_size:
            change_kernel_size(v, ks)

    def __repr__(self) -> str:
        return f"KernelSizeMutation({self.choices}, maxsize={self.maxsize})"


class ActivationFunctionMutation(_VertexLeaf):
    """ActivationFunctionMutation(activations=("identity", "relu", "elu", "selu"), rng=None):
    give the vertex's layer (Dense, Conv, BatchNorm) another activation from ``activations``."""

    def __init__(self, activations: Sequence[str] = ("identity", "relu", "elu", "selu"),
                 rng: Rng = None) -> None:
        if isinstance(activations, str):
            activations = (activations,)
        from tinyevo.layers import activations as acts
        for a in activations:
            acts.get(a)
        if not activations:
            raise ValueError("ActivationFunctionMutation: no activations to choose from")
        self.activations, self.rng = tuple(activations), rng

    def mutate_vertex(self, v: Vertex) -> None:
        if v.layer is None or not v.layer.params:
            return
        others = [a for a in self.activations if a != v.layer.activation] or self.activations
        set_activation(v, others[int(self._gen().integers(len(others)))])

    def __repr__(self) -> str:
        return f"ActivationFunctionMutation({self.activations})"


# ====================================================================== optimiser mutations

DEFAULT_OPTIMIZERS = ("SGD", "Momentum", "Nesterov", "Adam", "NAdam", "AdaGrad")


class OptimizerMutation(AbstractMutation):
    """OptimizerMutation(choices=DEFAULT_OPTIMIZERS, rng=None): a new optimiser of another type
    from ``choices`` (classes, class names, or callables ``lr -> optimiser``), with the same
    learning rate.

        >>> OptimizerMutation([Adam, Momentum])(SGD(0.05)).learning_rate
        0.05
    """

    def __init__(self, choices: Iterable[Any] = DEFAULT_OPTIMIZERS, rng: Rng = None) -> None:
        made = []
        for c in choices:
            if isinstance(c, str):
                if c not in OPTIMIZERS:
                    raise ValueError(f"OptimizerMutation: unknown optimiser {c!r}; expected one "
                                     f"of {sorted(OPTIMIZERS)}")
                c = OPTIMIZERS[c]
            _check_callable(c, "OptimizerMutation", "choice")
            made.append(c)
        if not made:
            raise ValueError("OptimizerMutation: no optimisers to choose from")
        self.choices, self.rng = tuple(made), rng

    def mutate(self, o: Optimizer) -> Optimizer:
        if not isinstance(o, Optimizer):
            raise TypeError(f"OptimizerMutation mutates optimisers, got {type(o).__name__}")
        others = [c for c in self.choices if c is not type(o)] or list(self.choices)
        c = others[int(self._gen().integers(len(others)))]
        if isinstance(c, type) and issubclass(c, Optimizer):
            return c(learning_rate=o.learning_rate)
        return c(o.learning_rate)

    def __repr__(self) -> str:
        names = [getattr(c, "__name__", repr(c)) for c in self.choices]
        return f"OptimizerMutation({names})"


class LearningRateMutation(AbstractMutation):
    """LearningRateMutation(nudge=0.3, lo=1e-6, hi=1.0, rng=None): ``lr <- clamp(lr * (1 +
    nudge * (u - 0.5)), lo, hi)``, ``u ~ U(0, 1)``; changes the optimiser in place."""

    def __init__(self, nudge: float = 0.3, lo: float = 1e-6, hi: float = 1.0,
                 rng: Rng = None) -> None:
        if not (0 < lo <= hi):
            raise ValueError(f"LearningRateMutation: expected 0 < lo <= hi, got ({lo}, {hi})")
        self.nudge, self.lo, self.hi, self.rng = float(nudge), float(lo), float(hi), rng

    def mutate(self, o: Optimizer) -> Optimizer:
        if not isinstance(o, Optimizer):
            raise TypeError(f"LearningRateMutation mutates optimisers, got {type(o).__name__}")
        u = self._gen().random()
        o.learning_rate = min(max(o.learning_rate * (1 + self.nudge * (u - 0.5)), self.lo),
                              self.hi)
        return o

    def __repr__(self) -> str:
        return f"LearningRateMutation({self.nudge})"


# ====================================================================== helpers

def _check_callable(x: Any, who: str, what: str) -> None:
    if not callable(x):
        raise TypeError(f"{who}: {what} must be callable, got {type(x).__name__}")


def _alive(v: Vertex) -> bool:
    """False for a vertex that a RemoveVertexMutation took out of its graph."""
    return v.is_input or bool(v.inputs)


def _find(m: Any, cls: type) -> list:
    out, stack = [], [m]
    while stack:
        x = stack.pop()
        if isinstance(x, cls):
            out.append(x)
        if isinstance(x, AbstractMutation):
            stack.extend(reversed(x.children()))
    return out


def _weightinit(w: Any) -> Any:
    if w is None:
        w = "identity"
    if isinstance(w, str):
        if w not in ("identity", "default"):
            raise ValueError(f"AddVertexMutation: weightinit must be 'identity', 'default' or "
                             f"a WeightInit, got {w!r}")
        if IdentityWeightInit is not None:
            from tinyevo.search.weightinit import DefaultWeightInit
            return IdentityWeightInit() if w == "identity" else DefaultWeightInit()
    return w


def _accepted_kwargs(fn: Callable) -> set[str]:
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return set()
    params = sig.parameters.values()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return {"rng", "weightinit"}
    return {p.name for p in params} & {"rng", "weightinit", "outsize"}


def _traced(v: Vertex) -> tuple[list[Vertex], list[dict], dict[Vertex, int]]:
    """The topological order of ``v``'s graph, its spatial shapes at each probe size, and each
    vertex's position in the order."""
    order = toposort(connected(v))
    return order, [trace(order, p) for p in PROBES], {u: i for i, u in enumerate(order)}
