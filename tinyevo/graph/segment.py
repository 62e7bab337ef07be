"""Segments: cut a run of vertices out of one graph and implant it into another, sizes kept.

A *segment* is the vertices from a start ``s`` to an end ``e`` such that cutting the inputs of
``s`` and the outputs of ``e`` isolates them: inside, every vertex reads only from the segment
(``s`` alone reads from outside) and is read only within it (``e`` alone is read from outside).
A residual block as a whole, a fork from its source to its concat and any run of a chain are
segments; graph inputs and outputs never belong to one. :func:`separable_starts` lists the
starts of the segments that end at a vertex.

:meth:`Segment.cut` takes a segment out of its graph and remembers its *place*: what the start
read, who read the end (at which input slots), and the sizes and neuron values there.
:func:`implant` connects another segment in that place. Their sizes need not agree: where they
differ, a temporary zero-initialised adapter (a 1x1 conv or dense layer) changes the size, which
keeps the graph consistent; the graph's size solver then resizes around the adapter until it
reads as many neurons as it gives (the segment adapts to what now feeds it, the readers adapt to
what the segment now gives), and :func:`bypass` takes the adapter out. Growing gives readers zero
weights for their new inputs, so the graph computes with the parameters it got; shrinking keeps
the most valuable neurons (an adapter carries the values of the neurons it stands in for).
:func:`swap_segments` does both halves of a crossover: it exchanges a segment of each of two
graphs, on copies unless told otherwise.

    >>> seg1, seg2 = (g1["a"], g1["b"]), (g2["x"], g2["y"])  # doctest: +SKIP
    >>> (child1, end1), (child2, end2) = swap_segments(g1, seg1, g2, seg2, rng)  # doctest: +SKIP
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np

from tinyevo.graph.compgraph import CompGraph
from tinyevo.graph.edit import bypass, change_nout, select_neurons
from tinyevo.graph.selection import solve_selection
from tinyevo.graph.surgery import Snapshot, apply_selection, connected
from tinyevo.graph.value import neuron_value
from tinyevo.graph.vertices import Vertex, concat, touch, vertex
from tinyevo.layers import Conv, Dense

__all__ = ["Segment", "separable_starts", "implant", "swap_segments", "regraph", "SWAP_PROBES"]

logger = logging.getLogger("tinyevo.graph.segment")

# Spatial sizes at which two segments must change the feature-map shape the same way to take
# each other's place (tinyevo.graph.shape_change). Odd and even sizes both, so that strided
# layers with different paddings are told apart.
SWAP_PROBES = {"dense": ((),), "conv1d": ((64,), (67,), (101,)),
           "conv2d": ((64, 64), (67, 71), (101, 96))}


def separable_starts(end: Vertex) -> list[Vertex]:
    """Every ``s`` such that cutting the inputs of ``s`` and the outputs of ``end`` isolates the
    vertices from ``s`` to ``end`` (the seed's ``separablefrom``), in topological order with
    ``end`` last. Graph inputs and outputs are never part of a segment.

        >>> [v.name for v in separable_starts(graph["l3"])]  # doctest: +SKIP
        ['l1', 'l2', 'l3']
    """
    if end.is_input or end.is_output or not end.outputs:
        return []
    # Ancestors of `end` in topological order (postorder DFS over inputs; `end` comes last).
    order: list[Vertex] = []
    index: dict[Vertex, int] = {}
    onstack: set[Vertex] = {end}
    stack = [(end, iter(end._inputs))]
    while stack:
        v, it = stack[-1]
        for u in it:
            if u not in index and u not in onstack:
                onstack.add(u)
                stack.append((u, iter(u._inputs)))
                break
        else:
            stack.pop()
            index[v] = len(order)
            order.append(v)
    n = len(order)
    bad = 0            # vertices that may not be inside a segment (or read from outside it)
    inmask = [0] * n
    for k, v in enumerate(order):
        for u in v._inputs:
            inmask[k] |= 1 << index[u]
        if v.is_input or v.is_output or (v is not end and any(o not in index
                                                              for o in v._outputs)):
            bad |= 1 << k
    down = [0] * n     # each vertex and what it reaches within the ancestors
    for k in range(n - 1, -1, -1):
        m = 1 << k
        for o in order[k]._outputs:
            if o in index:
                m |= down[index[o]]
        down[k] = m
    starts = []
    for k, s in enumerate(order):
        seg = down[k]
        if s.is_input or seg & bad:
            continue
        rest, ok = seg & ~(1 << k), True
        while rest:
            low = rest & -rest
            if inmask[low.bit_length() - 1] & ~seg:
                ok = False
                break
            rest ^= low
        if ok:
            starts.append(s)
    return starts


@dataclass
class Segment:
    """A segment cut out of its graph, and the place it was cut from.

        >>> seg = Segment.cut(graph["l1"], graph["l3"])  # doctest: +SKIP
    """

    start: Vertex
    end: Vertex
    ins: list[Vertex]                         # what start read, in order
    outs: list[tuple[Vertex, list[int]]]      # who read end, at which input slots
    in_sizes: list[int]                       # sizes start read
    in_values: list[Any]                      # neuron values of what start read (or None)
    out_size: int                             # size end gave
    out_value: Any                            # neuron values of end (what readers saw)
    start_nout: int                           # size start gave

    @classmethod
    def cut(cls, start: Vertex, end: Vertex) -> Segment:
        """Disconnect the segment ``start..end`` (see :func:`separable_starts`) from its graph,
        which is left with a hole until a segment is implanted there: ``start`` reads nothing,
        nothing is listed as reading ``end``, and the readers keep their input slots for
        :func:`implant` to fill."""
        ins = list(start._inputs)
        outs = [(o, [k for k, u in enumerate(o._inputs) if u is end]) for o in end._outputs]
        seg = cls(start, end, ins, outs, [u.nout for u in ins], [_value(u) for u in ins],
                  end.nout, _value(end), start.nout)
        for u in dict.fromkeys(ins):
            u._outputs.remove(start)
        start._inputs = []
        end._outputs = []
        touch()
        return seg


def implant(host: CompGraph, place: Segment, seg: Segment, rng: np.random.Generator) -> bool:
    """Connect ``seg`` where ``place`` was cut from ``host``, aligning sizes (module docstring).

    A layer start that now reads several inputs reads them through a new concat
    (``<start>.merge``); a merge start with as many inputs as before keeps its slots. Returns
    False when the sizes cannot be aligned or the segment does not fit; ``host`` is then left
    half-changed (work on a copy or a :class:`~tinyevo.graph.surgery.Snapshot`).
    """
    s, e = seg.start, seg.end
    ins = place.ins
    adapters: list[tuple[Vertex, Vertex]] = []          # (adapter, what it reads)
    values: dict[Vertex, Any] = {}

    def adapt(feed: Vertex, size: int, value: Any, name: str) -> Vertex:
        if feed.nout == size:
            return feed
        a = vertex(_adapter_layer(feed, size), feed, name=name)
        adapters.append((a, feed))
        if value is not None:
            values[a] = value
        return a

    try:
        if s.op != "layer" and len(ins) == len(seg.ins):
            # A merge start keeps its arity: input k of the place feeds slot k.
            s._inputs = [adapt(u, n, val, f"{s.name}.adapter{k}") for k, (u, n, val)
                         in enumerate(zip(ins, seg.in_sizes, seg.in_values))]
        else:
            feed = ins[0] if len(ins) == 1 else concat(*ins, name=f"{s.name}.merge")
            if s.op == "layer":
                size, value = seg.in_sizes[0], seg.in_values[0]
            else:                                    # a merge start with one (merged) input
                size, value = seg.start_nout, None
            s._inputs = [adapt(feed, size, value, f"{s.name}.adapter")]
        for u in dict.fromkeys(s._inputs):
            u._outputs.append(s)
        out = adapt(e, place.out_size, place.out_value, f"{e.name}.adapter")
        for o, slots in place.outs:
            for k in slots:
                o._inputs[k] = out
            if o not in out._outputs:
                out._outputs.append(o)
        touch()
        if adapters and not _align(host, adapters, out, values, rng):
            logger.info("segment: sizes around %r..%r cannot be aligned", s.name, e.name)
            return False
        for a, _ in adapters:
            bypass(a)
    except ValueError as err:                        # a structural misfit
        logger.info("segment: %r..%r does not fit: %s", s.name, e.name, err)
        return False
    return True


def swap_segments(g1: CompGraph, seg1: tuple[Vertex, Vertex], g2: CompGraph,
                  seg2: tuple[Vertex, Vertex], rng: np.random.Generator,
                  in_place: tuple[bool, bool] = (False, False)) -> tuple:
    """Exchange the segment ``seg1 = (start, end)`` of ``g1`` with ``seg2`` of ``g2``.

    Returns ``(side1, side2)``: ``side1`` is ``(child1, end1)``, ``g1`` with ``g2``'s segment
    and that segment's end in it, or None where that child cannot be made (and likewise
    ``side2``). The graphs are copied first (names kept), unless ``in_place`` says a graph may be
    changed itself: then a failure on either side restores both graphs (a graph changed in place
    shares its moved segment with the other side) and gives ``(None, None)``. Pending size
    changes are resolved first (:func:`~tinyevo.graph.select_neurons`).

        >>> (c1, e1), (c2, e2) = swap_segments(g1, (a, b), g2, (x, y), rng)  # doctest: +SKIP
    """
    order1, order2 = g1.vertices, g2.vertices
    if seg1[1] not in order1 or seg2[1] not in order2:
        raise ValueError("swap_segments: each segment must end at a vertex of its graph")
    own1, own2 = in_place
    w1, m1 = _working(g1, order1, own1)
    w2, m2 = _working(g2, order2, own2)
    snap = Snapshot([*(order1 if own1 else ()), *(order2 if own2 else ())]) \
        if own1 or own2 else None
    if (w1.pending() and not select_neurons(w1, rng=rng)) or \
            (w2.pending() and not select_neurons(w2, rng=rng)):
        if snap is not None:
            snap.restore()
        return None, None
    cut1 = Segment.cut(m1[seg1[0]], m1[seg1[1]])
    cut2 = Segment.cut(m2[seg2[0]], m2[seg2[1]])
    ok1 = implant(w1, cut1, cut2, rng)           # g2's segment into g1's place
    ok2 = implant(w2, cut2, cut1, rng)
    child1 = _finish(w1) if ok1 else None
    child2 = _finish(w2) if ok2 else None
    logger.debug("swap_segments: %s..%s <-> %s..%s: %s, %s", seg1[0].name, seg1[1].name,
                 seg2[0].name, seg2[1].name, child1 is not None, child2 is not None)
    if snap is not None and (child1 is None or child2 is None):
        snap.restore()
        return None, None
    return (None if child1 is None else (child1, cut2.end),
            None if child2 is None else (child2, cut1.end))


def regraph(v: Vertex, like: CompGraph | None = None) -> CompGraph:
    """The graph that ``v`` belongs to: its connected graph inputs and outputs (the seed's
    ``regraph``). ``like`` orders several inputs/outputs by the names of that graph's.

        >>> child1 = regraph(CrossoverSwap()((v1, v2))[0])  # doctest: +SKIP
    """
    if not isinstance(v, Vertex):
        raise TypeError(f"regraph takes a Vertex, got {type(v).__name__}")
    vs = connected(v)
    ins = [u for u in vs if u.is_input]
    outs = [u for u in vs if u.is_output]
    if like is not None:
        ins = _order_like(ins, [u.name for u in like.inputs])
        outs = _order_like(outs, [u.name for u in like.outputs])
    return CompGraph(ins, outs)


# ====================================================================== helpers

def _align(host: CompGraph, adapters: list[tuple[Vertex, Vertex]], out: Vertex,
           values: dict[Vertex, Any], rng: np.random.Generator) -> bool:
    """Make every adapter's nout equal its nin so that it can be removed.

    First the segment adapts to what feeds it and the readers to what it gives (the seed's
    AlignNinToNout), each solved as a size change; where sizes are tied around the segment
    (a residual connection over it) one joint solve makes them equal.
    """
    def value_fn(v: Vertex) -> Any:
        val = values.get(v)
        if val is not None and len(val) == v.nout_org:
            return val
        return neuron_value(v)

    ins = [(a, f) for a, f in adapters if a is not out]
    if ins:
        change_nout(host, {a: f.nout - a.nout for a, f in ins}, value_fn=value_fn, rng=rng)
    if any(a is out for a, _ in adapters):
        feed = out._inputs[0]
        if out.nout != feed.nout:
            change_nout(host, {out: feed.nout - out.nout}, value_fn=value_fn, rng=rng)
    if all(a.nout == f.nout for a, f in adapters):
        return True
    sel = solve_selection({}, value_fn, equal=[(f, a) for a, f in adapters])
    if sel is None:
        return False
    apply_selection(sel, rng)
    return all(a.nout == f.nout for a, f in adapters)


def _finish(g: CompGraph) -> CompGraph | None:
    """``g`` as a new graph, or None where it does not validate."""
    try:
        child = CompGraph(g.inputs, g.outputs)      # checks order and every size
    except ValueError as err:
        logger.info("segment: child does not validate: %s", err)
        return None
    return child


def _working(g: CompGraph, order: list[Vertex], own: bool):
    """The graph to work on and the map from ``g``'s vertices to it: ``g`` itself when it may be
    changed in place, else a copy."""
    if own:
        return g, {v: v for v in order}
    c = g.copy()
    return c, dict(zip(order, c.vertices))


def _adapter_layer(feed: Vertex, size: int):
    """A zero-initialised size-changing layer for ``feed``'s kind of data (removed again)."""
    dtype = _dtype_near(feed)
    if feed.kind == "dense":
        return Dense(feed.nout, size, init="zeros", bias=False, dtype=dtype)
    nd = 1 if feed.kind == "conv1d" else 2
    return Conv(feed.nout, size, 1, ndim=nd, init="zeros", bias=False, dtype=dtype)


def _dtype_near(v: Vertex) -> Any:
    for u in connected(v):
        if u.layer is not None and u.layer.params:
            return next(iter(u.layer.params.values())).dtype.type
    return None


def _value(v: Vertex) -> Any:
    try:
        return neuron_value(v)
    except Exception:  # noqa: BLE001 - a value is a hint; a layer without one gives none
        return None


def _order_like(vs: list[Vertex], names: list[str]) -> list[Vertex]:
    rank = {name: k for k, name in enumerate(names)}
    return sorted(vs, key=lambda u: rank.get(u.name, len(names)))
