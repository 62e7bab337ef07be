"""Mutations of a graph: change a vertex's size, add or remove vertices and edges, change a
kernel or an activation; and the deferred neuron selection that applies size changes.

Each operator is a thin layer over the graph's own edits (:mod:`tinyevo.graph`): it draws what to
change with the mutation's ``rng`` and leaves the vertex as it was where the graph refuses the
edit (a size that cannot be solved, an edge that would close a cycle, a shape that would stop
matching). Graph inputs, removed vertices and shielded ones are skipped.

    >>> mp = lambda m, p: VertexMutation(MutationProbability(m, p))
    >>> mutation = MutationChain(mp(RemoveVertexMutation(), 0.4), mp(AddVertexMutation(space), 0.4))
    >>> mutation(graph)  # doctest: +SKIP
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from tinyevo.evolution._births import note, what
from tinyevo.evolution.mutation.generic import (
    AbstractMutation,
    Rng,
    ValueFn,
    allow_mutation,
    check_callable,
    logger,
)
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
    removal_keeps_shapes,
    remove_edge,
    remove_vertex,
    resize,
    resize_fresh,
    set_activation,
    toposort,
    trace,
)
from tinyevo.graph import vertex as layer_vertex
from tinyevo.layers import Conv, Layer

try:                                    # the search package's weight inits, when present
    from tinyevo.search.weightinit import IdentityWeightInit
except ImportError:                     # pragma: no cover - before tinyevo.search exists
    IdentityWeightInit = None

__all__ = [
    "NeuronSelectMutation", "neuronselect", "NoutMutation", "RemoveVertexMutation",
    "AddVertexMutation", "RemoveEdgeMutation", "AddEdgeMutation", "KernelSizeMutation",
    "ActivationFunctionMutation",
]


class NeuronSelectMutation(AbstractMutation):
    """NeuronSelectMutation(m, value_fn=None, rng=None): remember what ``m`` mutates, so that
    :meth:`select` (or :func:`neuronselect`) later applies the deferred size changes there.

    The seed's deferred neuron selection: size changes (``NoutMutation``) only record the new
    sizes; ``select`` then cuts and pads the parameters, keeping the neurons of highest
    ``value_fn`` (default :func:`~tinyevo.graph.neuron_value`), one solve per set of tied vertices.
    """

    def __init__(self, m: Callable, value_fn: ValueFn | None = None, rng: Rng = None) -> None:
        check_callable(m, "NeuronSelectMutation", "m")
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
            before = {v: v.nout for v in deltas}
            resize({v: v.nout + d for v, d in deltas.items()}, self.value_fn, gen, select=False)
            for v, n in before.items():
                if v.nout != n:
                    note(f"{type(self).__name__} {v.name} {n}->{v.nout}")
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
        text = f"{type(self).__name__} {v.name} {what(v)}"
        if remove_vertex(v, value_fn=self.value_fn, rng=self._gen()):
            note(text)

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
        check_callable(space, "AddVertexMutation", "space")
        self.space, self.rng = space, rng
        self.weightinit = _weightinit(weightinit)
        self._kwargs = _accepted_kwargs(space)

    def mutate_vertex(self, v: Vertex) -> None:
        gen = self._gen()
        flush_pending(v, None, gen)
        made: list = []
        before = set(connected(v))

        def factory(u: Vertex) -> Vertex:
            new = self._draw(u, gen)
            made.append(new)
            if isinstance(new, Vertex) and new is not u:
                if new.nout != u.nout and not resize_fresh(new, u.nout, u, gen):
                    raise ValueError(f"the drawn vertex has nout {new.nout} and cannot be resized "
                                     f"to {u.nout} without changing {u.name!r}")
                if not insertion_keeps_shapes(u, new):
                    raise ValueError("feature-map shapes would not match")
            return new

        try:
            if insert_after(v, factory):      # every vertex added (a chain space adds several)
                added = [u for u in toposort([made[-1]]) if u not in before]
                note(f"{type(self).__name__} after {v.name}: "
                     + ", ".join(f"{u.name} {what(u)}" for u in added))
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
                note(f"{type(self).__name__} {ins[k].name} -> {v.name}")
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
                note(f"{type(self).__name__} {v.name} -> {target.name}")
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
            return
        note(f"{type(self).__name__} {v.name} -> {target.name} via new {op} {merge.name}")

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
        old = layer.kernel_size
        if ks != old and change_kernel_size(v, ks):
            note(f"{type(self).__name__} {v.name} {_size(old)}->{_size(ks)}")

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
        old = v.layer.activation
        others = [a for a in self.activations if a != old] or self.activations
        new = others[int(self._gen().integers(len(others)))]
        if set_activation(v, new) and new != old:
            note(f"{type(self).__name__} {v.name} {old}->{new}")

    def __repr__(self) -> str:
        return f"ActivationFunctionMutation({self.activations})"


# ====================================================================== helpers

def _alive(v: Vertex) -> bool:
    """False for a vertex that a RemoveVertexMutation took out of its graph."""
    return v.is_input or bool(v.inputs)


def _size(kernel: Sequence[int]) -> str:
    return "x".join(map(str, kernel))


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
