"""Edits of a graph that keep sizes consistent and weights inherited.

Every edit returns True on success. When an edit cannot be made for structural reasons (a size
that cannot be solved, an edge that would make a cycle, a vertex that cannot be removed) it
returns False and leaves the graph exactly as it was; wrong argument types raise.

    >>> change_nout(graph, {hidden: +2})      # grow; new neurons read by zero weights
    True
    >>> insert_after(hidden, lambda v: vertex(Dense(v.nout, v.nout, init="identity"), v))
    True
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from tinyevo.graph.compgraph import CompGraph, check_sizes
from tinyevo.graph.resizing import align, apply_pending, resize
from tinyevo.graph.selection import Pin, ValueFn, solve_selection
from tinyevo.graph.surgery import Snapshot, apply_selection, connected, resize_kernel
from tinyevo.graph.value import neuron_value
from tinyevo.graph.vertices import MERGE_OPS, Vertex, add, concat, touch
from tinyevo.layers import Conv

__all__ = ["change_nout", "select_neurons", "insert_after", "insert_merge_before",
           "remove_vertex", "bypass", "add_edge", "remove_edge", "change_kernel_size",
           "set_activation"]

logger = logging.getLogger("tinyevo.graph")

Rng = np.random.Generator | None


def change_nout(graph: CompGraph, deltas: dict[Vertex, int], *, select: bool = True,
                value_fn: ValueFn | None = None, rng: Rng = None) -> bool:
    """Change the output size of vertices by ``deltas`` ({vertex: +/- neurons}), all at once.

    Every vertex tied to a changed one (through invariant vertices, concat, add) follows; the
    neurons kept are the most valuable by ``value_fn(vertex) -> values`` (default
    :func:`~tinyevo.graph.neuron_value`). An exact solution is tried first, then a relaxed one
    (sizes as close as possible, each requested vertex changed by at least one); if neither
    exists nothing changes and the result is False.

    With ``select=False`` only the sizes change (``v.nout``; ``v.nout_org`` keeps the old one),
    the seed's deferred style: make several changes, then :func:`select_neurons` cuts and pads
    the parameters for all of them in one solve.

        >>> change_nout(graph, {graph["hidden"]: -2})
        True
    """
    if not isinstance(graph, CompGraph):
        raise TypeError(f"change_nout: expected a CompGraph, got {type(graph).__name__}")
    if not isinstance(deltas, dict):
        raise TypeError(f"change_nout: deltas must be a dict {{vertex: int}}, got "
                        f"{type(deltas).__name__}")
    members = set(graph.vertices)
    requests = {}
    for v, d in deltas.items():
        if not isinstance(v, Vertex) or v not in members:
            raise ValueError(f"change_nout: {v!r} is not a vertex of this graph")
        if not isinstance(d, (int, np.integer)) or isinstance(d, bool):
            raise TypeError(f"change_nout: the change for {v.name!r} must be an int, got {d!r}")
        if d == 0:
            continue
        if v.is_input:
            logger.info("change_nout: %r is a graph input; its size is fixed", v.name)
            return False
        if v.nout + d < 1:
            logger.info("change_nout: %r would have %d neurons", v.name, v.nout + d)
            return False
        requests[v] = v.nout + int(d)
    if not requests:
        return True
    return not resize(requests, value_fn, rng, select=select, jointly=True)


def select_neurons(graph: CompGraph, value_fn: ValueFn | None = None, rng: Rng = None) -> bool:
    """Apply every pending size change of ``graph`` (the seed's ``Δoutputs``) in one solve.

    Returns True when done (or nothing was pending). If no selection exists the pending changes
    are dropped, the graph keeps its original sizes, and the result is False.
    """
    if not isinstance(graph, CompGraph):
        raise TypeError(f"select_neurons: expected a CompGraph, got {type(graph).__name__}")
    return apply_pending(graph.vertices, value_fn, rng, jointly=True)


def insert_after(v: Vertex, factory: Callable[[Vertex], Vertex]) -> bool:
    """Insert what ``factory(v)`` builds between ``v`` and the vertices that read it.

    ``factory`` gets ``v`` and returns the new vertex (possibly the end of a chain it built on
    ``v``); it must output the same kind of data and ``v.nout`` neurons (else ``ValueError``,
    with the graph left as it was). With an identity-initialised layer the network's output
    does not change. If ``v`` is a graph output, the new vertex becomes the output.

        >>> insert_after(h, lambda u: vertex(Dense(u.nout, u.nout, init="identity"), u))
        True
    """
    _check_vertex(v, "insert_after")
    if not callable(factory):
        raise TypeError(f"insert_after: factory must be callable (vertex -> new vertex), got "
                        f"{type(factory).__name__}")
    apply_pending(connected(v), jointly=True)
    existing = connected(v)
    snap = Snapshot(existing)
    old = list(v._outputs)
    try:
        new = factory(v)
    except Exception:
        snap.restore()
        raise
    existing_set = set(existing)
    problem = None
    if not isinstance(new, Vertex):
        problem = f"the factory must return a Vertex, got {type(new).__name__}"
    elif new in existing_set:
        problem = "the factory must return a new vertex built on its argument"
    elif not _reads(new, v, existing_set):
        problem = f"the new vertex {new.name!r} must read {v.name!r}"
    elif new.kind != v.kind:
        problem = (f"the new vertex outputs {new.kind} data but {v.name!r}'s readers take "
                   f"{v.kind}")
    elif new.nout != v.nout:
        problem = (f"the new vertex has nout {new.nout} but {v.name!r} has {v.nout}; build it "
                   f"with nout={v.nout}")
    if problem:
        snap.restore()
        raise ValueError(f"insert_after({v.name!r}): {problem}")
    for o in old:
        o._inputs = [new if x is v else x for x in o._inputs]
        if o not in new._outputs:
            new._outputs.append(o)
    v._outputs = [x for x in v._outputs if x not in old]
    if v._is_output:
        v._is_output, new._is_output, v._successor = False, True, new
    touch()
    return True


def insert_merge_before(target: Vertex, op: str = "concat") -> Vertex:
    """Put a new one-input ``op`` vertex ("concat" or "add") between the layer vertex ``target``
    and its input, for ``target`` alone (the input's other readers keep reading it), and return
    it: a merge that :func:`add_edge` can then connect more vertices into (the seed's
    ``insert!`` with an output selection). The function is unchanged.

        >>> merge = insert_merge_before(out, "concat"); add_edge(h2, merge)
        True
    """
    _check_vertex(target, "insert_merge_before")
    if target.op != "layer":
        raise ValueError(f"insert_merge_before: {target.name!r} is not a layer vertex (a merge "
                         "takes more inputs itself: add_edge)")
    if op not in ("concat", "add"):
        raise ValueError(f"insert_merge_before: op must be 'concat' or 'add', got {op!r}")
    u = target._inputs[0]
    merge = (concat if op == "concat" else add)(u)
    target._inputs = [merge if x is u else x for x in target._inputs]
    if u not in target._inputs:
        u._outputs.remove(target)
    merge._outputs.append(target)
    touch()
    return merge


def remove_vertex(v: Vertex, *, value_fn: ValueFn | None = None, rng: Rng = None) -> bool:
    """Remove the one-input vertex ``v``; its input takes its place.

    When ``v`` changes the size (a Dense or Conv with nin != nout) the two sides are aligned
    first, as the seed: grow the smaller side exactly, else shrink the bigger, else let both
    move; if none works, or the removal would tie a size to itself (a size cycle), nothing
    changes and the result is False. Graph inputs and outputs are not removed.
    """
    _check_vertex(v, "remove_vertex")
    why = None
    if v.is_input:
        why = "it is a graph input"
    elif v._is_output:
        why = "it is a graph output"
    elif len(v._inputs) != 1:
        why = f"it has {len(v._inputs)} inputs (only one-input vertices can be removed)"
    elif not v._outputs:
        why = "nothing reads it"
    elif v._inputs[0].kind != v.kind:
        why = f"its readers take {v.kind} data but its input gives {v._inputs[0].kind}"
    if why:
        logger.info("remove_vertex(%r): not removed, %s", v.name, why)
        return False
    apply_pending(connected(v), jointly=True)
    snap = Snapshot(connected(v))
    u = v._inputs[0]
    if u.nout != v.nout and not align(u, v, value_fn, rng):
        snap.restore()
        logger.info("remove_vertex(%r): sizes %d and %d cannot be aligned", v.name, u.nout,
                    v.nout)
        return False
    bypass(v)
    return _commit(snap, u, f"remove_vertex({v.name!r})")


def bypass(v: Vertex) -> None:
    """Take out ``v``, which reads one vertex and gives as many neurons as it reads: its readers
    read that vertex instead. Sizes are not checked (that is the caller's part)."""
    feed = v._inputs[0]
    for o in v._outputs:
        o._inputs = [feed if x is v else x for x in o._inputs]
        if o not in feed._outputs:
            feed._outputs.append(o)
    feed._outputs.remove(v)
    v._inputs, v._outputs = [], []
    touch()


def add_edge(src: Vertex, dst: Vertex, *, value_fn: ValueFn | None = None,
             rng: Rng = None) -> bool:
    """Make the merge vertex ``dst`` (concat, add or mul) also read ``src``.

    Into a concat the function is kept: ``dst`` grows by ``src.nout`` and whatever reads it gets
    zero weights for the new neurons (vertices tied to ``dst`` grow to match). Into add/mul the
    sizes are aligned first (as :func:`remove_vertex`). Returns False, changing nothing, for a
    ``dst`` that is not a merge, data of another kind, an edge that would close a cycle, or
    sizes that cannot be aligned.
    """
    _check_vertex(src, "add_edge")
    _check_vertex(dst, "add_edge")
    why = None
    if dst.op not in MERGE_OPS:
        why = (f"{dst.name!r} is not a merge vertex (layers take one input; add a concat or add "
               "vertex and connect that)")
    elif src is dst:
        why = "an edge from a vertex to itself"
    elif src.kind != dst.kind:
        why = f"{src.name!r} gives {src.kind} data but {dst.name!r} takes {dst.kind}"
    elif _downstream(dst, src):
        why = f"{src.name!r} reads {dst.name!r}: the edge would close a cycle"
    if why:
        logger.info("add_edge(%r, %r): %s", src.name, dst.name, why)
        return False
    around = connected(src)
    apply_pending(around, jointly=True)
    if dst not in around:                           # two graphs
        apply_pending(connected(dst), jointly=True)
        around = list({**dict.fromkeys(around), **dict.fromkeys(connected(dst))})
    snap = Snapshot(around)
    if dst.op == "concat":
        size, extra = dst.nout, src.nout
        new = np.zeros(size, dtype=np.int64)
        new[-1] = extra
        sel = solve_selection({}, value_fn or neuron_value,
                              pins={dst: Pin(np.ones(size, dtype=bool), new)})
        if sel is None:
            snap.restore()
            logger.info("add_edge(%r, %r): vertices tied to %r cannot grow", src.name, dst.name,
                        dst.name)
            return False
        apply_selection(sel, rng)
    elif src.nout != dst.nout and not align(src, dst, value_fn, rng):
        snap.restore()
        logger.info("add_edge(%r, %r): sizes cannot be aligned", src.name, dst.name)
        return False
    dst._inputs.append(src)
    if dst not in src._outputs:
        src._outputs.append(dst)
    touch()
    return _commit(snap, dst, f"add_edge({src.name!r}, {dst.name!r})")


def remove_edge(src: Vertex, dst: Vertex, *, value_fn: ValueFn | None = None,
                rng: Rng = None) -> bool:
    """Stop the merge vertex ``dst`` from reading ``src``.

    From a concat, the neurons that came from ``src`` are cut wherever they are read (and from
    vertices tied to ``dst``). Returns False, changing nothing, when ``dst`` does not read
    ``src``, is not a merge, would be left without inputs, or ``src`` would be left unread.
    """
    _check_vertex(src, "remove_edge")
    _check_vertex(dst, "remove_edge")
    why = None
    if src not in dst._inputs:
        why = f"{dst.name!r} does not read {src.name!r}"
    elif dst.op not in MERGE_OPS:
        why = f"{dst.name!r} is a layer vertex; it needs its one input"
    elif len(dst._inputs) < 2:
        why = f"{dst.name!r} would have no inputs left"
    elif dst._inputs.count(src) == 1 and src._outputs == [dst] and not src._is_output:
        why = f"nothing else reads {src.name!r}; it would be left dangling"
    if why:
        logger.info("remove_edge(%r, %r): %s", src.name, dst.name, why)
        return False
    apply_pending(connected(dst), jointly=True)
    snap = Snapshot(connected(dst))
    k = len(dst._inputs) - 1 - dst._inputs[::-1].index(src)
    if dst.op == "concat":
        sizes = dst.nin
        start = sum(sizes[:k])
        keep = np.ones(dst.nout, dtype=bool)
        keep[start:start + sizes[k]] = False
        sel = solve_selection({}, value_fn or neuron_value,
                              pins={dst: Pin(keep, np.zeros(dst.nout, dtype=np.int64))})
        if sel is None:
            snap.restore()
            logger.info("remove_edge(%r, %r): vertices tied to %r cannot shrink", src.name,
                        dst.name, dst.name)
            return False
        apply_selection(sel, rng)
    del dst._inputs[k]
    if src not in dst._inputs:
        src._outputs.remove(dst)
    touch()
    return _commit(snap, dst, f"remove_edge({src.name!r}, {dst.name!r})")


def change_kernel_size(v: Vertex, kernel_size: int | Sequence[int]) -> bool:
    """Give the convolution of ``v`` a new kernel size, keeping the centre weights.

    Growing adds zero taps around the old kernel (the output does not change); shrinking crops
    to the centre. Returns False, changing nothing, for a vertex without a Conv or a change
    that would alter the output's spatial size (explicit padding that cannot absorb it).
    """
    _check_vertex(v, "change_kernel_size")
    layer = v.layer
    if not isinstance(layer, Conv):
        logger.info("change_kernel_size(%r): not a convolution", v.name)
        return False
    ks = (kernel_size,) * layer.ndim if isinstance(kernel_size, (int, np.integer)) \
        else tuple(kernel_size)
    if len(ks) != layer.ndim or not all(isinstance(k, (int, np.integer)) and k >= 1
                                        for k in ks):
        raise ValueError(f"change_kernel_size({v.name!r}): expected a positive int or "
                         f"{layer.ndim} positive ints, got {kernel_size!r}")
    return resize_kernel(layer, ks)


def set_activation(v: Vertex, activation: str) -> bool:
    """Set the activation of ``v``'s layer (Dense, Conv, BatchNorm); False for other vertices.
    An unknown name raises ``ValueError`` listing the known ones."""
    _check_vertex(v, "set_activation")
    layer = v.layer
    if layer is None or not layer.params:
        logger.info("set_activation(%r): no layer with an activation", v.name)
        return False
    layer.activation = activation
    return True


# ---------------------------------------------------------------------- helpers

def _commit(snap: Snapshot, anchor: Vertex, what: str) -> bool:
    """Keep the edit if every size around ``anchor`` agrees, else roll back."""
    problem = check_sizes(connected(anchor))
    if problem:
        snap.restore()
        logger.info("%s: undone, it would leave %s", what, problem)
        return False
    return True


def _reads(new: Vertex, v: Vertex, existing: set) -> bool:
    """True when ``new`` reads ``v`` through vertices made after ``existing``."""
    stack, seen = [new], set()
    while stack:
        u = stack.pop()
        for w in u._inputs:
            if w is v:
                return True
            if w not in existing and w not in seen:
                seen.add(w)
                stack.append(w)
    return False


def _downstream(start: Vertex, target: Vertex) -> bool:
    """True when ``target`` is ``start`` or reads it, directly or not."""
    stack, seen = [start], {start}
    while stack:
        u = stack.pop()
        if u is target:
            return True
        for w in u._outputs:
            if w not in seen:
                seen.add(w)
                stack.append(w)
    return False


def _check_vertex(v: Any, who: str) -> None:
    if not isinstance(v, Vertex):
        raise TypeError(f"{who}: expected a Vertex, got {type(v).__name__}")
