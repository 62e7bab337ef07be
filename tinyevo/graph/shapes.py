"""Feature-map shapes: the graph's one topological order and one shape tracer.

A vertex outputs ``nout`` features or channels and, for conv data, a spatial size that only
convolutions and pooling change (global pooling drops it). :func:`trace` pushes spatial sizes
from where they are known (the graph inputs, or any vertex) through vertices in topological order
(:func:`toposort`). An edit must keep the shapes consistent for *any* input size, so the checks
trace at probe sizes instead: two by default, an even and an odd one, so that floor/ceil
differences between pooling and strided "same" convolutions show up.

    >>> inp = input_vertex("in", 3, "conv2d")
    >>> pool = vertex(MaxPool(2), vertex(Conv(3, 4, 3, padding="same"), inp))
    >>> [trace(toposort([pool]), p)[pool] for p in PROBES]
    [(32, 32), (22, 22)]
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from tinyevo.graph.surgery import connected
from tinyevo.graph.vertices import RANK, Vertex
from tinyevo.layers import Conv, GlobalPool, Layer, MaxPool, MeanPool

__all__ = ["PROBES", "toposort", "layer_spatial", "trace", "shapes_kept", "shape_change",
           "removal_keeps_shapes", "insertion_keeps_shapes"]

PROBES = (64, 45)
"""Spatial sizes (per dimension) at which edits are checked to keep feature-map shapes."""

Spatial = tuple[int, ...]


def toposort(roots: Iterable[Vertex]) -> list[Vertex]:
    """``roots`` and every vertex they read, each after its inputs: depth first through the
    inputs, from each root in turn. Raises ``ValueError`` on a cycle.

        >>> [v.name for v in toposort([h])]
        ['in', 'h']
    """
    order: list[Vertex] = []
    state: dict[Vertex, int] = {}                      # 1 on the stack, 2 done
    for root in roots:
        if root in state:
            continue
        stack = [(root, iter(root._inputs))]
        state[root] = 1
        while stack:
            v, it = stack[-1]
            for u in it:
                s = state.get(u)
                if s == 1:
                    raise ValueError(f"the graph has a cycle through {u.name!r}")
                if s is None:
                    state[u] = 1
                    stack.append((u, iter(u._inputs)))
                    break
            else:
                stack.pop()
                state[v] = 2
                order.append(v)
    return order


def layer_spatial(layer: Layer | None, spatial: Sequence[int]) -> Spatial:
    """The spatial size ``layer`` outputs for input of spatial size ``spatial``: convolutions and
    pooling compute it, global pooling drops it, any other layer (or a merge: ``None``) keeps it.

        >>> layer_spatial(MaxPool(2), (9, 8))
        (4, 4)
    """
    if isinstance(layer, (Conv, MaxPool, MeanPool)):
        return tuple(int(n) for n in layer.output_shape(spatial))
    if isinstance(layer, GlobalPool):
        return ()
    return tuple(spatial)


def trace(order: Sequence[Vertex], known: int | Mapping[Vertex, Spatial], *,
          replace: Mapping[Vertex, Vertex] | None = None, readers: set | None = None,
          strict: bool = True) -> dict[Vertex, Spatial | None]:
    """Each vertex's spatial output size, for the vertices of ``order`` (topological).

    ``known`` gives the spatial sizes to start from: {vertex: size}, or a probe ``p`` that every
    graph input gets in each spatial dimension. ``strict`` gives ``None`` where the shapes stop
    making sense (a merge of different shapes, a window larger than its input, anything after
    them); ``strict=False`` checks nothing (a merge takes its first input's shape), as
    :meth:`CompGraph.shapes` does.

    ``replace`` {old: new} traces the graph as if ``readers`` (default: every vertex) read
    ``new`` in place of ``old``; a ``new`` that ``order`` lacks (a fresh piece built on ``old``)
    is traced on the way, from what it reads.
    """
    probe = not isinstance(known, Mapping)
    s: dict[Vertex, Spatial | None] = {} if probe else dict(known)

    def fill(v: Vertex, ins: Sequence[Vertex]) -> None:
        s[v] = _spatial(v, [s.get(u) for u in ins], strict)

    for v in order:
        if v in s:
            continue
        if v.op == "input" and probe:
            s[v] = (known,) * (RANK[v.kind] - 2)
            continue
        ins = v._inputs
        if replace and (readers is None or v in readers):
            ins = [replace.get(u, u) for u in ins]
            for new in ins:
                if new not in s:
                    for w in toposort([new]):
                        if w not in s:
                            fill(w, w._inputs)
        fill(v, ins)
    return s


def shapes_kept(vertices: Sequence[Vertex], replace: Mapping[Vertex, Vertex],
                readers: set | None = None, probes: Sequence[int] = PROBES) -> bool:
    """True when tracing the graph of ``vertices`` with ``replace`` (as :func:`trace`) keeps
    every merge's inputs of equal shape and the graph outputs' shapes as they are, at each probe
    (probes where the graph is already broken are skipped)."""
    order = toposort(vertices)
    for p in probes:
        now = trace(order, p)
        if any(x is None for x in now.values()):
            continue
        then = trace(order, p, replace=replace, readers=readers)
        if any(x is None for x in then.values()):
            return False
        if any(now[o] != then.get(o) for o in vertices if o.is_output):
            return False
    return True


def removal_keeps_shapes(v: Vertex, probes: Sequence[int] = PROBES) -> bool:
    """True when removing ``v`` (its input taking its place) keeps the graph's feature-map shapes:
    ``v`` does not change spatial sizes, or the graph traced without it stays consistent (False
    for a pooling layer inside one path of a fork)."""
    nd = 1 if v.kind == "conv1d" else 2
    if all(_spatial(v, [(p,) * nd], True) == (p,) * nd for p in probes):
        return True
    return not v._inputs or shapes_kept(connected(v), {v: v._inputs[0]}, probes=probes)


def insertion_keeps_shapes(u: Vertex, new: Vertex, probes: Sequence[int] = PROBES) -> bool:
    """True when inserting the fresh piece ending in ``new`` (built on ``u``, not yet read by
    anything else) after ``u`` keeps the graph's feature-map shapes: dense data, a piece that
    keeps spatial sizes, or a graph that, traced with ``u``'s readers reading ``new``, stays
    consistent."""
    if u.kind == "dense":
        return True
    piece = _piece(u, new)
    nd = 1 if u.kind == "conv1d" else 2
    if all(trace(piece, {u: (p,) * nd})[new] == (p,) * nd for p in probes):
        return True
    fresh = set(piece)
    return shapes_kept([w for w in connected(u) if w not in fresh], {u: new},
                       readers=set(u._outputs) - fresh, probes=probes)


def shape_change(start: Vertex, end: Vertex,
                 probes: Mapping[str, Sequence[Spatial]]) -> tuple | None:
    """How the path from ``start`` to ``end`` (each vertex the first input of the next) maps the
    data ``start`` reads: (kind in, kind out, the spatial size out for each of ``probes[kind
    in]``). None where ``end`` does not reach ``start`` that way or ``start`` reads nothing.

        >>> shape_change(c, pool, {"conv2d": [(64, 64), (67, 71)]})
        ('conv2d', 'conv2d', ((32, 32), (34, 36)))
    """
    path = [end]
    v = end
    while v is not start:
        if not v._inputs:
            return None
        v = v._inputs[0]
        path.append(v)
    if not start._inputs:
        return None
    kind = start._inputs[0].kind
    out = []
    for sp in probes[kind]:
        for w in reversed(path):
            sp = layer_spatial(w.layer, sp)
        out.append(sp)
    return kind, end.kind, tuple(out)


# ---------------------------------------------------------------------- helpers

def _spatial(v: Vertex, ins: list[Any], strict: bool) -> Spatial | None:
    """``v``'s spatial output size from its inputs' (see :func:`trace` for ``strict``)."""
    if not strict:
        return layer_spatial(v.layer, ins[0])
    if not ins or any(x is None for x in ins):
        return None
    if v.layer is None:
        return ins[0] if all(x == ins[0] for x in ins) else None
    try:
        out = layer_spatial(v.layer, ins[0])
    except (ValueError, TypeError):
        return None
    return out if all(n >= 1 for n in out) else None


def _piece(u: Vertex, end: Vertex) -> list[Vertex]:
    """The fresh vertices from ``u`` (exclusive) to ``end``, inputs first."""
    order: list[Vertex] = []
    seen: set[Vertex] = {u}

    def visit(w: Vertex) -> None:
        if w in seen:
            return
        seen.add(w)
        for x in w._inputs:
            visit(x)
        order.append(w)

    visit(end)
    return order
