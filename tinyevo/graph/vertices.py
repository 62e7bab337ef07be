"""Vertices of the mutable graph: graph inputs, layer vertices and merges (concat, add, mul).

A vertex knows its inputs *and* its outputs, so one vertex reaches the whole graph. Sizes are not
stored: ``v.nout`` is read from the layer (Dense/Conv/BatchNorm), from the inputs (pooling,
merges) or, for a graph input, from the fixed size it was made with. A size change made in the
deferred style (``change_nout(..., select=False)``) is held as a *pending* size until
:func:`tinyevo.graph.select_neurons` cuts and pads the parameters; ``nout_org`` is the size the
parameters have now (the seed's ``nout_org``).

    >>> inp = input_vertex("in", 3, "dense")
    >>> h = vertex(Dense(3, 4, "relu"), inp); h.nin, h.nout
    ([3], 4)
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from typing import Any

from tinyevo import backend as B
from tinyevo.layers import (
    BatchNorm,
    Conv,
    Dense,
    Dropout,
    Flatten,
    GlobalPool,
    Layer,
    MaxPool,
    MeanPool,
)
from tinyevo.layers._layout import from_cl, to_cl

__all__ = ["Vertex", "input_vertex", "vertex", "concat", "add", "mul", "detach", "KINDS",
           "TRAITS"]

KINDS = ("dense", "conv1d", "conv2d")
"""Kinds of data a vertex outputs: (N, F), (N, C, L) or (N, C, H, W)."""

TRAITS = ("immutable", "absorb", "invariant", "stack")
"""Size traits: fixed (graph input); nin and nout independent (Dense, Conv); nout == every nin
(BatchNorm, pooling, dropout, add, mul); nout == sum of nin (concat)."""

RANK = {"dense": 2, "conv1d": 3, "conv2d": 4}

MERGE_OPS = ("concat", "add", "mul")

# Bumped on every structural change anywhere; graphs cache their topological order against it.
_VERSION = [0]
_COUNTER = [itertools.count(1)]


def touch() -> None:
    """Record that some graph's structure changed (invalidates cached vertex orders)."""
    _VERSION[0] += 1


def name_counter() -> int:
    """The number the next automatically named vertex gets (saved with checkpoints so that a
    resumed run names new vertices as an uninterrupted one would)."""
    n = next(_COUNTER[0])
    _COUNTER[0] = itertools.count(n)
    return n


def set_name_counter(n: int) -> None:
    """Continue automatic vertex names from ``n``."""
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"set_name_counter expects a positive int, got {n!r}")
    _COUNTER[0] = itertools.count(n)


def structure_version() -> int:
    return _VERSION[0]


class Vertex:
    """One node of a :class:`~tinyevo.graph.CompGraph`: a graph input, a layer or a merge.

    Made with :func:`input_vertex`, :func:`vertex`, :func:`concat`, :func:`add`, :func:`mul`;
    changed only through the functions of :mod:`tinyevo.graph` so that sizes stay consistent.
    """

    __slots__ = ("name", "op", "layer", "kind", "shielded", "_inputs", "_outputs", "_size",
                 "_pending", "_deferred", "_is_output", "_successor", "__weakref__")

    def __init__(self, name: str, op: str, layer: Layer | None, inputs: list[Vertex],
                 kind: str, shielded: bool = False, size: int | None = None) -> None:
        self.name = name
        self.op = op
        self.layer = layer
        self.kind = kind
        self.shielded = bool(shielded)
        self._inputs = list(inputs)
        self._outputs: list[Vertex] = []
        self._size = size
        self._pending: int | None = None
        self._deferred: Any = None           # the selection a deferred resize solved for it
        self._is_output = False
        self._successor: Vertex | None = None
        for u in self._inputs:
            if self not in u._outputs:
                u._outputs.append(self)
        touch()

    # ------------------------------------------------------------------ structure
    @property
    def inputs(self) -> tuple[Vertex, ...]:
        """The vertices this one reads, in order (a vertex may appear twice)."""
        return tuple(self._inputs)

    @property
    def outputs(self) -> tuple[Vertex, ...]:
        """The vertices that read this one (each once)."""
        return tuple(self._outputs)

    @property
    def is_input(self) -> bool:
        return self.op == "input"

    @property
    def is_output(self) -> bool:
        """True for a vertex that is an output of the graph it was built into."""
        return self._is_output

    @property
    def trait(self) -> str:
        """The size trait: "immutable", "absorb", "invariant" or "stack" (see ``TRAITS``)."""
        op = self.op
        if op == "layer":
            return self.layer.SIZE_TRAIT
        if op == "input":
            return "immutable"
        return "stack" if op == "concat" else "invariant"

    @property
    def owns_size(self) -> bool:
        """True when the size lives in this vertex (input, or a layer with a fixed ``nout``)."""
        return self.op == "input" or (self.op == "layer" and self.layer.nout is not None)

    @property
    def has_params(self) -> bool:
        return self.layer is not None and bool(self.layer.params)

    # ------------------------------------------------------------------ sizes
    @property
    def nout(self) -> int:
        """Output neurons (features/channels), including a pending size change."""
        if self._pending is not None:
            return self._pending
        op = self.op
        if op == "input":
            return self._size
        if op == "layer":
            n = self.layer.nout
            return n if n is not None else self._inputs[0].nout
        if op == "concat":
            return sum(u.nout for u in self._inputs)
        return self._inputs[0].nout

    @property
    def nout_org(self) -> int:
        """Output neurons as the parameters have them now (ignores pending size changes)."""
        op = self.op
        if op == "input":
            return self._size
        if op == "layer":
            n = self.layer.nout
            return n if n is not None else self._inputs[0].nout_org
        if op == "concat":
            return sum(u.nout_org for u in self._inputs)
        return self._inputs[0].nout_org

    @property
    def nin(self) -> list[int]:
        """The size of each input, in order."""
        return [u.nout for u in self._inputs]

    @property
    def nin_org(self) -> list[int]:
        return [u.nout_org for u in self._inputs]

    @property
    def pending(self) -> bool:
        """True while a deferred size change waits for :func:`select_neurons`."""
        return self._pending is not None

    # ------------------------------------------------------------------ compute
    def forward(self, xs: list[Any], train: bool) -> tuple[Any, Callable]:
        """``y, back = v.forward(inputs, train)``; ``back(dy, need)`` returns one input gradient
        per input (``None`` where ``need`` says it is not wanted)."""
        op = self.op
        if op == "layer":
            y, back = self.layer.forward(xs[0], train=train)
            return y, lambda dy, need: [back(dy, need_dx=need[0])]
        if op == "concat":
            return _concat_forward(self, xs)
        if op == "add":
            return _add_forward(self, xs)
        if op == "mul":
            return _mul_forward(self, xs)
        raise RuntimeError(f"{self!r}: a graph input is not computed")

    def __repr__(self) -> str:
        what = repr(self.layer) if self.layer is not None else self.op
        return f"Vertex({self.name!r}, {what}, nout={self.nout})"


# ---------------------------------------------------------------------- constructors

def input_vertex(name: str, size: int, kind: str = "dense") -> Vertex:
    """A graph input of fixed ``size`` features/channels; ``kind`` "dense", "conv1d", "conv2d".

        >>> input_vertex("image", 3, "conv2d").nout
        3
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"input_vertex name must be a non-empty string, got {name!r}")
    if not isinstance(size, int) or isinstance(size, bool) or size < 1:
        raise ValueError(f"input_vertex {name!r}: size must be a positive int (features or "
                         f"channels), got {size!r}")
    _check_kind(kind, f"input_vertex {name!r}")
    return Vertex(name, "input", None, [], kind, shielded=True, size=size)


def vertex(layer: Layer, *inputs: Vertex, name: str | None = None,
           shielded: bool = False) -> Vertex:
    """A vertex computing ``layer`` on its one input.

        >>> inp = input_vertex("in", 3)
        >>> vertex(Dense(3, 5), inp, name="hidden").nout
        5
    """
    if not isinstance(layer, Layer):
        raise TypeError(f"vertex() takes a tinyevo layer, got {type(layer).__name__}; wrap "
                        "each layer of a Sequential in its own vertex")
    if len(inputs) != 1:
        raise ValueError(f"vertex({layer!r}): a layer vertex takes exactly one input, got "
                         f"{len(inputs)}; merge several with concat() or add() first")
    u = inputs[0]
    _check_vertex(u, f"vertex({layer!r})")
    name = _name(name, type(layer).__name__.lower())
    if u.pending:
        raise ValueError(f"vertex {name!r}: input {u.name!r} has a pending size change; apply it "
                         "with select_neurons(graph) before building on it")
    kind = layer_output_kind(layer, u.kind, name)
    if layer.nin is not None and layer.nin != u.nout:
        raise ValueError(f"vertex {name!r}: {layer!r} expects {layer.nin} inputs but "
                         f"{u.name!r} outputs {u.nout}; build the layer with nin={u.nout}")
    return Vertex(name, "layer", layer, [u], kind, shielded=shielded)


def concat(*vs: Vertex, name: str | None = None, shielded: bool = False) -> Vertex:
    """Concatenate features/channels (axis 1) of one or more vertices of the same kind.

        >>> a, b = input_vertex("a", 2), input_vertex("b", 3); concat(a, b).nout
        5
    """
    return _merge("concat", vs, name, shielded)


def add(*vs: Vertex, name: str | None = None, shielded: bool = False) -> Vertex:
    """Elementwise sum of vertices with equal sizes (a residual connection)."""
    return _merge("add", vs, name, shielded)


def mul(*vs: Vertex, name: str | None = None, shielded: bool = False) -> Vertex:
    """Elementwise product of vertices with equal sizes (gating)."""
    return _merge("mul", vs, name, shielded)


def detach(vertices: Sequence[Vertex]) -> None:
    """Unhook fresh ``vertices`` (read by nothing else, e.g. what a failed or discarded build
    made) from the vertices they read, so that the graph is as it was before they were made.

        >>> fresh = vertex(Dense(3, 4), inp); detach([fresh]); fresh in inp.outputs
        False
    """
    for v in reversed(vertices):
        for u in v._inputs:
            if v in u._outputs:
                u._outputs.remove(v)
    if vertices:
        touch()


def layer_output_kind(layer: Layer, in_kind: str, who: str = "vertex") -> str:
    """The kind of data ``layer`` outputs for ``in_kind`` input; raises if it cannot take it."""
    def need(ok: bool, expected: str, fix: str = "") -> None:
        if not ok:
            raise ValueError(f"{who}: {layer!r} needs {expected} input, got {in_kind!r} data"
                             + (f"; {fix}" if fix else ""))

    if isinstance(layer, Dense):
        need(in_kind == "dense", "'dense' (N, features)",
             "put GlobalPool (and Flatten) between conv and dense vertices")
        return "dense"
    if isinstance(layer, Conv):
        want = f"conv{layer.ndim}d"
        need(in_kind == want, f"{want!r}")
        return want
    if isinstance(layer, (MaxPool, MeanPool)):
        need(in_kind in ("conv1d", "conv2d"), "'conv1d' or 'conv2d'")
        if layer.ndim is not None:
            need(in_kind == f"conv{layer.ndim}d", f"'conv{layer.ndim}d'")
        return in_kind
    if isinstance(layer, GlobalPool):
        need(in_kind in ("conv1d", "conv2d"), "'conv1d' or 'conv2d'")
        return "dense"
    if isinstance(layer, Flatten):
        need(in_kind == "dense", "'dense'",
             "flattening conv data ties sizes to the spatial size; use GlobalPool instead")
        return "dense"
    if isinstance(layer, (BatchNorm, Dropout)):
        return in_kind
    return in_kind


# ---------------------------------------------------------------------- helpers

def _merge(op: str, vs: tuple, name: str | None, shielded: bool) -> Vertex:
    if len(vs) == 1 and isinstance(vs[0], (list, tuple)):
        vs = tuple(vs[0])
    if not vs:
        raise ValueError(f"{op}() needs at least one input vertex, got none")
    for v in vs:
        _check_vertex(v, f"{op}()")
    name = _name(name, op)
    kinds = {v.kind for v in vs}
    if len(kinds) != 1:
        raise ValueError(f"{op} {name!r}: inputs must all be the same kind of data, got "
                         + ", ".join(f"{v.name!r}: {v.kind}" for v in vs))
    if any(v.pending for v in vs):
        raise ValueError(f"{op} {name!r}: an input has a pending size change; apply it with "
                         "select_neurons(graph) first")
    if op != "concat" and len({v.nout for v in vs}) != 1:
        raise ValueError(f"{op} {name!r}: elementwise inputs must have equal sizes, got "
                         + ", ".join(f"{v.name!r}: {v.nout}" for v in vs)
                         + "; resize them with change_nout first")
    return Vertex(name, op, None, list(vs), vs[0].kind, shielded=shielded)


def _check_vertex(v: Any, who: str) -> None:
    if not isinstance(v, Vertex):
        raise TypeError(f"{who}: expected a Vertex as input, got {type(v).__name__}; make graph "
                        "inputs with input_vertex(name, size, kind)")


def _check_kind(kind: Any, who: str) -> None:
    if kind not in KINDS:
        raise ValueError(f"{who}: kind must be one of {KINDS}, got {kind!r}")


def _name(name: str | None, stem: str) -> str:
    if name is None:
        return f"{stem}_{next(_COUNTER[0])}"
    if not isinstance(name, str) or not name:
        raise ValueError(f"a vertex name must be a non-empty string, got {name!r}")
    return name


def _same_shapes(v: Vertex, xs: list[Any], axes: slice) -> None:
    shapes = [tuple(x.shape) for x in xs]
    ref = (shapes[0][0],) + shapes[0][axes]
    for s in shapes[1:]:
        if (s[0],) + s[axes] != ref:
            what = "(N, *spatial)" if v.op == "concat" else "shapes"
            raise ValueError(f"{v.op} {v.name!r}: inputs must have equal {what}, got {shapes}; "
                             "join only vertices with the same feature-map size")


def _concat_forward(v: Vertex, xs: list[Any]):
    if len(xs) == 1:
        return xs[0], lambda dy, need: [dy]
    _same_shapes(v, xs, slice(2, None))
    xp = B.get_array_module(*xs)
    sizes = [x.shape[1] for x in xs]
    bounds = list(itertools.accumulate(sizes, initial=0))
    if v.kind == "dense":
        y = xp.concatenate(xs, axis=1)

        def back(dy, need):
            return [dy[:, a:b] if n else None for a, b, n in zip(bounds, bounds[1:], need)]
        return y, back
    # Channels-last memory, handed out as a channels-first view (see tinyevo.layers.base).
    y = from_cl(xp.concatenate([to_cl(x) for x in xs], axis=-1))

    def back_cl(dy, need):
        dy_cl = to_cl(dy)
        return [from_cl(dy_cl[..., a:b]) if n else None
                for a, b, n in zip(bounds, bounds[1:], need)]
    return y, back_cl


def _add_forward(v: Vertex, xs: list[Any]):
    if len(xs) == 1:
        return xs[0], lambda dy, need: [dy]
    _same_shapes(v, xs, slice(1, None))
    if v.kind == "dense":
        y = xs[0] + xs[1]
        for x in xs[2:]:
            y += x
    else:
        y = to_cl(xs[0]) + to_cl(xs[1])
        for x in xs[2:]:
            y += to_cl(x)
        y = from_cl(y)
    # Every input gets the same gradient object; nothing downstream writes into it.
    return y, lambda dy, need: [dy if n else None for n in need]


def _mul_forward(v: Vertex, xs: list[Any]):
    if len(xs) == 1:
        return xs[0], lambda dy, need: [dy]
    _same_shapes(v, xs, slice(1, None))
    dense = v.kind == "dense"
    cl = xs if dense else [to_cl(x) for x in xs]
    y = cl[0] * cl[1]
    for x in cl[2:]:
        y *= x

    def back(dy, need):
        g = dy if dense else to_cl(dy)
        out = []
        for i, n in enumerate(need):
            if not n:
                out.append(None)
                continue
            others = [x for j, x in enumerate(cl) if j != i]
            d = g * others[0]
            for x in others[1:]:
                d *= x
            out.append(d if dense else from_cl(d))
        return out
    return (y if dense else from_cl(y)), back
