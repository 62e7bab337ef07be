"""Crossover: two parents in, two children out, with the parents' trained parameters inherited.

Every operator is a callable on a tuple of two, ``crossover((a, b)) -> (a2, b2)``, so the mutation
utilities (``MutationProbability``, ``LogMutation``, ``MutationChain``, ...) wrap them unchanged.

- :class:`CrossoverSwap` swaps a segment between two graphs: on ``(graph, graph)`` it picks the
  crossover point itself and returns two graphs; on ``(vertex, vertex)`` (the seed's form) the
  vertices are the segments' output ends and it returns a vertex of each new graph (turn one into
  its graph with :func:`regraph`).
- :class:`VertexCrossover` pairs each allowed vertex of one graph with the vertex of the other
  at the nearest relative position and applies a vertex-level crossover to the pair.
- :class:`OptimizerCrossover` and :class:`LearningRateCrossover` act on ``(optimizer,
  optimizer)``; :class:`evolve_crossover` applies graph and optimiser crossovers to a pair of
  candidates (the seed's ``evolvemodel`` for crossovers), for ``PairCandidates``.

Parents are never modified: a graph crossover works on copies and, where it cannot be made,
returns the parents themselves.

    >>> swap = VertexCrossover(MutationProbability(CrossoverSwap(), 0.05))  # doctest: +SKIP
    >>> child1, child2 = swap((graph1, graph2))  # doctest: +SKIP
"""

from __future__ import annotations

import contextvars
import copy as _copy
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from tinyevo import backend as B
from tinyevo.evolution.candidate import copy_model, inherit_optimizer_state, new_candidate
from tinyevo.evolution.candidate import graph as graph_of
from tinyevo.evolution.candidate import opt as opt_of
from tinyevo.graph import (
    CompGraph,
    Vertex,
    change_nout,
    concat,
    connected,
    neuron_value,
    select_neurons,
    value_cache,
    vertex,
)
from tinyevo.graph.selection import solve_selection
from tinyevo.graph.surgery import Snapshot, apply_selection
from tinyevo.graph.vertex import touch
from tinyevo.layers import Conv, Dense, GlobalPool, MaxPool, MeanPool
from tinyevo.optimizers import Optimizer

__all__ = [
    "CrossoverSwap", "VertexCrossover", "OptimizerCrossover", "LearningRateCrossover",
    "evolve_crossover", "crossover_swap", "separable_starts", "regraph", "optimizer_swap",
    "learning_rate_swap",
]

logger = logging.getLogger("tinyevo.evolution.crossover")

Rng = np.random.Generator | None
Selection = Callable[[Vertex], bool]



class _Session:
    """What one VertexCrossover call knows: the graph of each vertex it has seen, and which
    graphs it made itself (later swaps work on those in place instead of copying them again)."""

    def __init__(self) -> None:
        self.graph_of: dict[Vertex, CompGraph] = {}
        self.owned: set[Vertex] = set()

    def add(self, g: CompGraph, owned: bool) -> None:
        for v in g.vertices:
            self.graph_of[v] = g
            if owned:
                self.owned.add(v)


_SESSION: contextvars.ContextVar[_Session | None] = contextvars.ContextVar(
    "tinyevo_crossover_session", default=None)

# Spatial sizes at which two segments must change the feature-map shape the same way. Odd and
# even sizes both, so that strided layers with different paddings are told apart.
_PROBES = {"dense": ((),), "conv1d": ((64,), (67,), (101,)),
           "conv2d": ((64, 64), (67, 71), (101, 96))}


# ====================================================================== graph crossover

class CrossoverSwap:
    """CrossoverSwap(deviation=0.0, selection=None, rng=None): swap a segment between two graphs.

    A segment is the vertices from a start ``s`` to an end ``e`` such that cutting the inputs of
    ``s`` and the outputs of ``e`` isolates them (:func:`separable_starts`). The start of the first
    segment is drawn uniformly; its partner is the segment of the other graph with the nearest
    relative position (``deviation`` adds ``deviation * N(0, 1)`` noise to the positions, so
    segments of other sizes get picked) among those that change the feature-map kind and shape in
    the same way. The segments are reconnected crosswise and sizes aligned by the graph's size
    solver: a reader of a grown input gets zero weights for it, so a child computes with the
    parents' parameters where it got them from. Names of a swapped segment come from the parent
    that gave it.

    ``swap((graph1, graph2))`` draws the segment end of ``graph1`` among the allowed vertices and
    pairs it as :class:`VertexCrossover` does, returning two graphs; ``swap((v1, v2))`` with
    vertices uses them as segment ends and returns a vertex of each child (the end of the segment
    each received), or the given vertex for a side that could not be made. Parents are copied
    first and never modified.

        >>> child1, child2 = CrossoverSwap()((graph1, graph2))  # doctest: +SKIP

    ``selection(v) -> bool`` limits which vertices may start (and, on graphs, end) a segment;
    by default every vertex that is not a graph input or output and not shielded.
    """

    def __init__(self, deviation: float = 0.0, selection: Selection | None = None,
                 rng: Rng = None) -> None:
        self.deviation = _check_deviation(deviation, "CrossoverSwap")
        self.selection = selection
        self.rng = rng

    def __call__(self, pair: tuple) -> tuple:
        a, b = _pair_of(pair, "CrossoverSwap")
        if isinstance(a, CompGraph) and isinstance(b, CompGraph):
            with value_cache():
                return self._on_graphs(a, b)
        if isinstance(a, Vertex) and isinstance(b, Vertex):
            with value_cache():
                return self._on_vertices(a, b)
        raise TypeError(f"CrossoverSwap takes a pair of CompGraphs or a pair of Vertex, got "
                        f"({type(a).__name__}, {type(b).__name__})")

    def _on_graphs(self, g1: CompGraph, g2: CompGraph) -> tuple[CompGraph, CompGraph]:
        rng = B.rng(self.rng)
        vs1 = [v for v in g1.vertices if _allowed(v, self.selection)]
        vs2 = [v for v in g2.vertices if _allowed(v, self.selection)]
        if not vs1 or not vs2:
            return g1, g2
        i = int(rng.integers(len(vs1)))
        j = _nearest(vs1, vs2, i, _same_kinds, self.deviation, rng)
        if j is None:
            return g1, g2
        c1, c2, _, _ = crossover_swap(g1, vs1[i], g2, vs2[j], deviation=self.deviation,
                                      selection=self.selection, rng=rng)
        return c1, c2

    def _on_vertices(self, v1: Vertex, v2: Vertex) -> tuple[Vertex, Vertex]:
        g1, g2 = regraph(v1), regraph(v2)
        _, _, e1, e2 = crossover_swap(g1, v1, g2, v2, deviation=self.deviation,
                                      selection=self.selection, rng=B.rng(self.rng))
        return e1, e2

    def __repr__(self) -> str:
        return f"CrossoverSwap(deviation={self.deviation})"


class VertexCrossover:
    """VertexCrossover(crossover, deviation=0.0, selection=None, rng=None): crossover of two graphs
    at every allowed vertex of the first.

    Going through the allowed vertices of graph 1 in topological order, each is paired with the
    vertex of graph 2 whose relative position (``i / len``, plus ``deviation * N(0, 1)``) is
    nearest among those of the same input and output kind, and ``crossover((v1, v2))`` is applied
    to the pair (a :class:`CrossoverSwap`, possibly wrapped in ``MutationProbability`` or
    ``LogMutation``). The graphs are re-read after each pair. Returns the two children; a graph
    that no pair changed is returned as it was given.

        >>> some = VertexCrossover(MutationProbability(CrossoverSwap(0.5), 0.3))  # doctest: +SKIP
        >>> child1, child2 = some((graph1, graph2))  # doctest: +SKIP
    """

    def __init__(self, crossover: Callable[[tuple], tuple], deviation: float = 0.0,
                 selection: Selection | None = None, rng: Rng = None) -> None:
        if not callable(crossover):
            raise TypeError(f"VertexCrossover needs a callable crossover ((v1, v2) -> (v1', v2'))"
                            f", got {type(crossover).__name__}")
        self.crossover = crossover
        self.deviation = _check_deviation(deviation, "VertexCrossover")
        self.selection = selection
        self.rng = rng

    def __call__(self, pair: tuple) -> tuple[CompGraph, CompGraph]:
        g1, g2 = _pair_of(pair, "VertexCrossover")
        if not isinstance(g1, CompGraph) or not isinstance(g2, CompGraph):
            raise TypeError(f"VertexCrossover takes a pair of CompGraphs, got "
                            f"({type(g1).__name__}, {type(g2).__name__})")
        rng = B.rng(self.rng)

        def select(g: CompGraph) -> list[Vertex]:
            return [v for v in g.vertices if _allowed(v, self.selection)]

        session = _Session()
        session.add(g1, owned=False)
        session.add(g2, owned=False)
        token = _SESSION.set(session)
        try:
            with value_cache():
                return self._cross(g1, g2, select, rng)
        finally:
            _SESSION.reset(token)

    def _cross(self, g1: CompGraph, g2: CompGraph, select: Callable, rng: np.random.Generator):
        vs1, vs2 = select(g1), select(g2)
        kinds2 = _by_kinds(vs2)
        i = 0
        while i < len(vs1):
            j = _nearest(vs1, vs2, i, kinds2.get(_kinds(vs1[i]), ()), self.deviation, rng)
            if j is not None:
                v1, v2 = vs1[i], vs2[j]
                u1, u2 = _pair_of(self.crossover((v1, v2)), repr(self.crossover))
                changed = False
                if u1 is not v1:
                    g1, changed = regraph(u1, like=g1), True
                if u2 is not v2:
                    g2, changed = regraph(u2, like=g2), True
                if changed:
                    vs1, vs2 = select(g1), select(g2)
                    kinds2 = _by_kinds(vs2)
            i += 1
        return g1, g2

    def __repr__(self) -> str:
        return f"VertexCrossover({self.crossover!r}, deviation={self.deviation})"


def crossover_swap(g1: CompGraph, v1: Vertex, g2: CompGraph, v2: Vertex, *,
                   deviation: float = 0.0, selection: Selection | None = None,
                   rng: Rng = None) -> tuple[CompGraph, CompGraph, Vertex, Vertex]:
    """Swap a segment ending at ``v1`` (of ``g1``) with one ending at ``v2`` (of ``g2``).

    Returns ``(child1, child2, end1, end2)``: child1 is g1 with g2's segment, ``end1`` the end of
    that segment in child1 (for the seed's vertex form); a side that cannot be made returns the
    parent graph and vertex unchanged. Neither parent is modified.
    """
    rng = B.rng(rng)
    starts1 = [s for s in separable_starts(v1) if _allowed(s, selection)]
    starts2 = [s for s in separable_starts(v2) if _allowed(s, selection)]
    if not starts1 or not starts2:
        logger.debug("crossover_swap(%r, %r): no separable segment", v1.name, v2.name)
        return g1, g2, v1, v2
    i = int(rng.integers(len(starts1)))
    sig = _shape_change(starts1[i], v1)
    j = _nearest(starts1, starts2, i, lambda _, s: _shape_change(s, v2) == sig, deviation,
                 rng)
    if j is None:
        logger.debug("crossover_swap(%r, %r): no segment with the same shape change", v1.name,
                     v2.name)
        return g1, g2, v1, v2

    # Work on copies (graphs made earlier in the same VertexCrossover call are worked on in
    # place, with a snapshot to go back to); parents' vertices are found by topological position.
    order1, order2 = g1.vertices, g2.vertices
    if v1 not in order1 or v2 not in order2:
        raise ValueError("crossover_swap: v1 must be a vertex of g1 and v2 a vertex of g2")
    session = _SESSION.get()
    own1 = session is not None and v1 in session.owned
    own2 = session is not None and v2 in session.owned
    w1, m1 = _working(g1, order1, own1)
    w2, m2 = _working(g2, order2, own2)
    snap = Snapshot([*(order1 if own1 else ()), *(order2 if own2 else ())]) \
        if own1 or own2 else None
    if (w1.pending() and not select_neurons(w1, rng=rng)) or \
            (w2.pending() and not select_neurons(w2, rng=rng)):
        if snap is not None:
            snap.restore()
        return g1, g2, v1, v2
    seg1 = _Segment.cut(m1[starts1[i]], m1[v1])
    seg2 = _Segment.cut(m2[starts2[j]], m2[v2])
    ok1 = _implant(w1, seg1, seg2, rng)          # g2's segment into g1's place
    ok2 = _implant(w2, seg2, seg1, rng)
    child1 = _finish(w1) if ok1 else None
    child2 = _finish(w2) if ok2 else None
    logger.debug("crossover_swap: %s..%s <-> %s..%s: %s, %s", starts1[i].name, v1.name,
                 starts2[j].name, v2.name, child1 is not None, child2 is not None)
    if snap is not None and (child1 is None or child2 is None):
        # A graph worked on in place shares the moved segment with the other side: all or none.
        snap.restore()
        return g1, g2, v1, v2
    if session is not None:
        for child in (child1, child2):
            if child is not None:
                session.add(child, owned=True)
    return (child1 if child1 is not None else g1, child2 if child2 is not None else g2,
            seg2.end if child1 is not None else v1, seg1.end if child2 is not None else v2)


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


def regraph(v: Vertex, like: CompGraph | None = None) -> CompGraph:
    """The graph that ``v`` belongs to: its connected graph inputs and outputs (the seed's
    ``regraph``). ``like`` orders several inputs/outputs by the names of that graph's.

        >>> child1 = regraph(CrossoverSwap()((v1, v2))[0])  # doctest: +SKIP
    """
    if not isinstance(v, Vertex):
        raise TypeError(f"regraph takes a Vertex, got {type(v).__name__}")
    session = _SESSION.get()
    if session is not None and v in session.graph_of:
        return session.graph_of[v]
    vs = connected(v)
    ins = [u for u in vs if u.is_input]
    outs = [u for u in vs if u.is_output]
    if like is not None:
        ins = _order_like(ins, [u.name for u in like.inputs])
        outs = _order_like(outs, [u.name for u in like.outputs])
    return CompGraph(ins, outs)


# ====================================================================== optimiser crossover

def optimizer_swap(pair: tuple) -> tuple[Optimizer, Optimizer]:
    """``(o1, o2) -> (o2', o1')``: fresh copies (same type and hyperparameters, no state)."""
    o1, o2 = _pair_of(pair, "optimizer_swap")
    return _fresh(o2), _fresh(o1)


def learning_rate_swap(pair: tuple) -> tuple[Optimizer, Optimizer]:
    """``(o1, o2) -> (o1', o2')`` with the learning rates swapped, all else kept (fresh copies).
    Optimisers without a learning rate are returned as copies, unchanged."""
    o1, o2 = _pair_of(pair, "learning_rate_swap")
    n1, n2 = _fresh(o1), _fresh(o2)
    if hasattr(o1, "learning_rate") and hasattr(o2, "learning_rate"):
        n1.learning_rate, n2.learning_rate = o2.learning_rate, o1.learning_rate
    return n1, n2


class OptimizerCrossover:
    """OptimizerCrossover(crossover=optimizer_swap, keep_learning_rate=False): crossover of two
    optimisers, ``((o1, o2)) -> (o1', o2')``.

    The default swaps the optimisers whole (type and hyperparameters, as the seed); with
    ``keep_learning_rate`` each child keeps its parent's learning rate, so only the type and the
    other hyperparameters move. Children are fresh optimisers without state.

        >>> [type(o).__name__ for o in OptimizerCrossover()((Adam(1e-3), Momentum(0.1)))]
        ['Momentum', 'Adam']
    """

    def __init__(self, crossover: Callable[[tuple], tuple] = optimizer_swap,
                 keep_learning_rate: bool = False) -> None:
        if not callable(crossover):
            raise TypeError(f"OptimizerCrossover needs a callable crossover, got "
                            f"{type(crossover).__name__}")
        self.crossover = crossover
        self.keep_learning_rate = bool(keep_learning_rate)

    def __call__(self, pair: tuple) -> tuple:
        o1, o2 = _pair_of(pair, type(self).__name__)
        n1, n2 = _pair_of(self.crossover((o1, o2)), repr(self.crossover))
        n1, n2 = (_fresh(n) if n is o1 or n is o2 else n for n in (n1, n2))
        if self.keep_learning_rate:
            for new, old in ((n1, o1), (n2, o2)):
                if hasattr(new, "learning_rate") and hasattr(old, "learning_rate"):
                    new.learning_rate = old.learning_rate
        return n1, n2

    def __repr__(self) -> str:
        name = getattr(self.crossover, "__name__", repr(self.crossover))
        return f"{type(self).__name__}({name})"


class LearningRateCrossover(OptimizerCrossover):
    """LearningRateCrossover(): swap the learning rates of two optimisers, nothing else.

        >>> [o.learning_rate for o in LearningRateCrossover()((Adam(1e-3), Adam(1e-2)))]
        [0.01, 0.001]
    """

    def __init__(self) -> None:
        super().__init__(learning_rate_swap)

    def __repr__(self) -> str:
        return "LearningRateCrossover()"


# ====================================================================== candidates

class evolve_crossover:  # noqa: N801 - a function-like callable object, picklable unlike a closure
    """evolve_crossover(crossover=None, opt_crossover=None, map_others=copy.deepcopy): a pair of
    candidates -> a pair of children (the seed's ``evolvemodel`` for crossovers).

    ``crossover((graph1, graph2))`` makes the children's models and ``opt_crossover((opt1,
    opt2))`` their optimisers where both candidates carry one; other fields go through
    ``map_others``. A child never shares a model or optimiser with a parent (unchanged ones are
    copied), so use it in ``PairCandidates(EvolveCandidates(...))``. Where the parents'
    optimisers kept state, a child's optimiser inherits it for every parameter the child took
    unchanged from either parent (same optimiser type only).

        >>> pairs = PairCandidates(EvolveCandidates(evolve_crossover(
        ...     VertexCrossover(MutationProbability(CrossoverSwap(), 0.05)),
        ...     LearningRateCrossover())))  # doctest: +SKIP
    """

    def __init__(self, crossover: Callable[[tuple], tuple] | None = None,
                 opt_crossover: Callable[[tuple], tuple] | None = None,
                 map_others: Callable[[Any], Any] = _copy.deepcopy) -> None:
        for what, f in (("crossover", crossover), ("opt_crossover", opt_crossover)):
            if f is not None and not callable(f):
                raise TypeError(f"evolve_crossover: {what} must be callable, got "
                                f"{type(f).__name__}")
        self.crossover, self.opt_crossover, self.map_others = crossover, opt_crossover, map_others

    def __call__(self, pair: tuple) -> tuple:
        c1, c2 = _pair_of(pair, "evolve_crossover")
        g1, g2 = graph_of(c1), graph_of(c2)
        n1, n2 = g1, g2
        if self.crossover is not None and g1 is not None and g2 is not None:
            n1, n2 = _pair_of(self.crossover((g1, g2)), repr(self.crossover))
        parents = (g1, g2)
        n1, n2 = (copy_model(n) if any(n is p for p in parents) else n for n in (n1, n2))
        o1, o2 = opt_of(c1), opt_of(c2)
        p1, p2 = o1, o2
        if self.opt_crossover is not None and o1 is not None and o2 is not None:
            p1, p2 = _pair_of(self.opt_crossover((o1, o2)), repr(self.opt_crossover))
        p1, p2 = (_fresh(p) if p is not None and (p is o1 or p is o2) else p for p in (p1, p2))
        return tuple(inherit_optimizer_state(new_candidate(c, self._mapper(g, n, o, p)), c1, c2)
                     for c, g, n, o, p in ((c1, g1, n1, o1, p1), (c2, g2, n2, o2, p2)))

    def _mapper(self, model: Any, new_model: Any, opt: Any, new_opt: Any):
        def mapfield(x: Any) -> Any:
            if model is not None and x is model:
                return new_model
            if opt is not None and x is opt:
                return new_opt
            return self.map_others(x)
        return mapfield

    def __repr__(self) -> str:
        return f"evolve_crossover({self.crossover!r}, {self.opt_crossover!r})"


# ====================================================================== segment surgery

@dataclass
class _Segment:
    """A segment cut out of its graph, and the places it was cut from."""

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
    def cut(cls, start: Vertex, end: Vertex) -> _Segment:
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


def _implant(host: CompGraph, place: _Segment, seg: _Segment, rng: np.random.Generator) -> bool:
    """Connect ``seg`` where ``place`` was cut from ``host``, aligning sizes. False on failure
    (``host`` is then a discarded copy)."""
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
            logger.info("crossover: sizes around %r..%r cannot be aligned", s.name, e.name)
            return False
        for a, feed in adapters:
            _bypass(a, feed)
    except ValueError as err:                        # a structural misfit: keep the parent
        logger.info("crossover: %r..%r does not fit: %s", s.name, e.name, err)
        return False
    return True


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


def _bypass(a: Vertex, feed: Vertex) -> None:
    """Take the aligned adapter ``a`` (nin == nout) out: its readers read ``feed`` instead."""
    for o in a._outputs:
        o._inputs = [feed if x is a else x for x in o._inputs]
        if o not in feed._outputs:
            feed._outputs.append(o)
    feed._outputs.remove(a)
    a._inputs, a._outputs = [], []
    touch()


def _finish(g: CompGraph) -> CompGraph | None:
    try:
        child = CompGraph(g.inputs, g.outputs)      # checks order and every size
    except ValueError as err:
        logger.info("crossover: child does not validate: %s", err)
        return None
    return child


def _working(g: CompGraph, order: list[Vertex], own: bool):
    """The graph to work on and the map from ``g``'s vertices to it: ``g`` itself when this
    crossover made it, else a copy."""
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


# ====================================================================== pairing helpers

def _nearest(vs1: Sequence[Vertex], vs2: Sequence[Vertex], i: int,
             compatible: Callable[[Vertex, Vertex], bool] | Sequence[int], deviation: float,
             rng: np.random.Generator) -> int | None:
    """Index into ``vs2`` of the compatible vertex nearest ``vs1[i]`` by relative position
    (``compatible`` is a predicate or the indices of the compatible vertices)."""
    if callable(compatible):
        cands = [j for j, v in enumerate(vs2) if compatible(vs1[i], v)]
    else:
        cands = list(compatible)
    if not cands:
        return None
    n1, n2 = len(vs1), len(vs2)
    pos1 = (i + 1) / n1
    if deviation:
        pos1 += deviation * float(rng.standard_normal())
        noise = deviation * rng.standard_normal(n2)
        return min(cands, key=lambda j: abs((j + 1) / n2 + noise[j] - pos1))
    return min(cands, key=lambda j: abs((j + 1) / n2 - pos1))


def _kinds(v: Vertex) -> tuple[str, str | None]:
    return v.kind, (v._inputs[0].kind if v._inputs else None)


def _by_kinds(vs: Sequence[Vertex]) -> dict[tuple, list[int]]:
    out: dict[tuple, list[int]] = {}
    for j, v in enumerate(vs):
        out.setdefault(_kinds(v), []).append(j)
    return out


def _same_kinds(v1: Vertex, v2: Vertex) -> bool:
    """Same kind of data in and out (a dense vertex never pairs with a conv one)."""
    return _kinds(v1) == _kinds(v2)


def _shape_change(start: Vertex, end: Vertex) -> tuple | None:
    """How the segment start..end maps feature-map kind and spatial shape, at probe sizes."""
    path = [end]
    v = end
    while v is not start:
        if not v._inputs:
            return None
        v = v._inputs[0]
        path.append(v)
    kind = start._inputs[0].kind if start._inputs else None
    if kind is None:
        return None
    out = []
    for probe in _PROBES[kind]:
        sp = probe
        for u in reversed(path):
            sp = _spatial(u, sp)
        out.append(sp)
    return kind, end.kind, tuple(out)


def _spatial(v: Vertex, sp: tuple) -> tuple:
    layer = v.layer
    if isinstance(layer, (Conv, MaxPool, MeanPool)):
        return tuple(int(n) for n in layer.output_shape(sp))
    if isinstance(layer, GlobalPool):
        return ()
    return sp


def _allowed(v: Vertex, selection: Selection | None) -> bool:
    if v.is_input or v.is_output or v.shielded:
        return False
    return selection is None or bool(selection(v))


def _order_like(vs: list[Vertex], names: list[str]) -> list[Vertex]:
    rank = {name: k for k, name in enumerate(names)}
    return sorted(vs, key=lambda u: rank.get(u.name, len(names)))


def _pair_of(pair: Any, who: str) -> tuple[Any, Any]:
    if not isinstance(pair, (tuple, list)) or len(pair) != 2:
        raise TypeError(f"{who}: expected a tuple of two, got {pair!r}")
    return pair[0], pair[1]


def _fresh(o: Any) -> Any:
    cp = getattr(o, "copy", None)
    return cp() if callable(cp) else _copy.deepcopy(o)


def _check_deviation(deviation: Any, who: str) -> float:
    try:
        d = float(deviation)
    except (TypeError, ValueError):
        raise TypeError(f"{who}: deviation must be a number >= 0, got {deviation!r}") from None
    if not np.isfinite(d) or d < 0:
        raise ValueError(f"{who}: deviation must be a finite number >= 0, got {deviation!r}")
    return d
