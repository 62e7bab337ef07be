"""Crossover: two parents in, two children out, with the parents' trained parameters inherited.

Every operator is a callable on a tuple of two, ``crossover((a, b)) -> (a2, b2)``, so the mutation
utilities (``MutationProbability``, ``LogMutation``, ``MutationChain``, ...) wrap them unchanged.

- :class:`CrossoverSwap` swaps a segment between two graphs: on ``(graph, graph)`` it picks the
  crossover point itself and returns two graphs; on ``(vertex, vertex)`` (the seed's form) the
  vertices are the segments' output ends and it returns a vertex of each new graph (turn one into
  its graph with :func:`~tinyevo.graph.regraph`).
- :class:`VertexCrossover` pairs each allowed vertex of one graph with the vertex of the other
  at the nearest relative position and applies a vertex-level crossover to the pair.
- :class:`OptimizerCrossover` and :class:`LearningRateCrossover` act on ``(optimizer,
  optimizer)``, :class:`IteratorMapCrossover` on the iterator maps of two candidates (their
  training batch sizes); :class:`evolve_crossover` applies graph, optimiser and iterator-map
  crossovers to a pair of candidates (the seed's ``evolvemodel`` for crossovers), for
  ``PairCandidates``.

Parents are never modified: a graph crossover works on copies and, where it cannot be made,
returns the parents themselves. This module chooses what to cross; the graph surgery (separable
segments, cutting, implanting with sizes aligned) is :mod:`tinyevo.graph.segment`'s.

    >>> swap = VertexCrossover(MutationProbability(CrossoverSwap(), 0.05))  # doctest: +SKIP
    >>> child1, child2 = swap((graph1, graph2))  # doctest: +SKIP
"""

from __future__ import annotations

import copy as _copy
import logging
import numbers
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from tinyevo import backend as B
from tinyevo.evolution import _births as births
from tinyevo.evolution.candidate import copy_model, inherit_optimizer_state, new_candidate
from tinyevo.evolution.candidate import graph as graph_of
from tinyevo.evolution.candidate import itermap as itermap_of
from tinyevo.evolution.candidate import opt as opt_of
from tinyevo.graph import CompGraph, Vertex, value_cache
from tinyevo.graph.segment import SWAP_PROBES, regraph, separable_starts, swap_segments
from tinyevo.graph.shapes import shape_change
from tinyevo.optimizers import Optimizer

__all__ = [
    "CrossoverSwap", "VertexCrossover", "OptimizerCrossover", "LearningRateCrossover",
    "evolve_crossover", "crossover_swap", "optimizer_swap", "learning_rate_swap",
]
__all__ += ["IteratorMapCrossover", "itermap_swap"]

logger = logging.getLogger("tinyevo.evolution.crossover")

Rng = np.random.Generator | None
VertexFilter = Callable[[Vertex], bool]
"""Which vertices a crossover may use as segment starts or ends: ``f(v) -> bool``."""


# ====================================================================== graph crossover

class CrossoverSwap:
    """CrossoverSwap(deviation=0.0, selection=None, rng=None): swap a segment between two graphs.

    A segment is the vertices from a start ``s`` to an end ``e`` such that cutting the inputs of
    ``s`` and the outputs of ``e`` isolates them (:mod:`tinyevo.graph.segment`). The start of the
    first segment is drawn uniformly; its partner is the segment of the other graph with the
    nearest relative position (``deviation`` adds ``deviation * N(0, 1)`` noise to the positions, so
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

    def __init__(self, deviation: float = 0.0, selection: VertexFilter | None = None,
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
                return self._on_vertices(a, b, pair.session if isinstance(pair, _Pair) else None)
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

    def _on_vertices(self, v1: Vertex, v2: Vertex, session: _Session | None) -> tuple:
        if session is None:
            g1, g2 = regraph(v1), regraph(v2)
            _, _, e1, e2 = crossover_swap(g1, v1, g2, v2, deviation=self.deviation,
                                          selection=self.selection, rng=B.rng(self.rng))
            return e1, e2
        g1, g2 = session.graph(v1), session.graph(v2)
        _, _, e1, e2 = _swap(g1, v1, g2, v2, self.deviation, self.selection, B.rng(self.rng),
                             session)
        return _Pair((e1, e2), session)      # a crossover chained after this one sees it too

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

    Each parent is copied once per call: later swaps change the children this call made in
    place. For that the pairs handed to ``crossover`` carry the call's state (they are tuples
    that wrappers pass on as they are); a crossover that builds pairs of its own gets copies.

        >>> some = VertexCrossover(MutationProbability(CrossoverSwap(0.5), 0.3))  # doctest: +SKIP
        >>> child1, child2 = some((graph1, graph2))  # doctest: +SKIP
    """

    def __init__(self, crossover: Callable[[tuple], tuple], deviation: float = 0.0,
                 selection: VertexFilter | None = None, rng: Rng = None) -> None:
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
        with value_cache():
            return self._cross(g1, g2, select, rng, session)

    def _cross(self, g1: CompGraph, g2: CompGraph, select: Callable, rng: np.random.Generator,
               session: _Session) -> tuple[CompGraph, CompGraph]:
        vs1, vs2 = select(g1), select(g2)
        kinds2 = _by_kinds(vs2)
        i = 0
        while i < len(vs1):
            j = _nearest(vs1, vs2, i, kinds2.get(_kinds(vs1[i]), ()), self.deviation, rng)
            if j is not None:
                v1, v2 = vs1[i], vs2[j]
                u1, u2 = _pair_of(self.crossover(_Pair((v1, v2), session)),
                                  repr(self.crossover))
                changed = False
                if u1 is not v1:
                    g1, changed = session.graph(u1, like=g1), True
                if u2 is not v2:
                    g2, changed = session.graph(u2, like=g2), True
                if changed:
                    vs1, vs2 = select(g1), select(g2)
                    kinds2 = _by_kinds(vs2)
            i += 1
        return g1, g2

    def __repr__(self) -> str:
        return f"VertexCrossover({self.crossover!r}, deviation={self.deviation})"


def crossover_swap(g1: CompGraph, v1: Vertex, g2: CompGraph, v2: Vertex, *,
                   deviation: float = 0.0, selection: VertexFilter | None = None,
                   rng: Rng = None) -> tuple[CompGraph, CompGraph, Vertex, Vertex]:
    """Swap a segment ending at ``v1`` (of ``g1``) with one ending at ``v2`` (of ``g2``).

    The start of ``v1``'s segment is drawn uniformly among the allowed separable starts; its
    partner is the allowed start of ``v2``'s with the same shape change and the nearest relative
    position (:func:`~tinyevo.graph.shape_change` at ``SWAP_PROBES``). Returns ``(child1,
    child2, end1, end2)``: child1 is g1 with g2's segment, ``end1`` the end of that segment in
    child1 (for the seed's vertex form); a side that cannot be made returns the parent graph and
    vertex unchanged. Neither parent is modified.

        >>> child1, child2, _, _ = crossover_swap(g1, g1["h"], g2, g2["h"])  # doctest: +SKIP
    """
    return _swap(g1, v1, g2, v2, deviation, selection, B.rng(rng), None)


def _swap(g1: CompGraph, v1: Vertex, g2: CompGraph, v2: Vertex, deviation: float,
          selection: VertexFilter | None, rng: np.random.Generator,
          session: _Session | None) -> tuple[CompGraph, CompGraph, Vertex, Vertex]:
    """:func:`crossover_swap` within a VertexCrossover call's ``session``, if any: graphs the
    call made are changed in place (all or none), and the children join what it made."""
    starts1 = [s for s in separable_starts(v1) if _allowed(s, selection)]
    starts2 = [s for s in separable_starts(v2) if _allowed(s, selection)]
    if not starts1 or not starts2:
        logger.debug("crossover_swap(%r, %r): no separable segment", v1.name, v2.name)
        return g1, g2, v1, v2
    i = int(rng.integers(len(starts1)))
    sig = shape_change(starts1[i], v1, SWAP_PROBES)
    j = _nearest(starts1, starts2, i, lambda _, s: shape_change(s, v2, SWAP_PROBES) == sig,
                 deviation, rng)
    if j is None:
        logger.debug("crossover_swap(%r, %r): no segment with the same shape change", v1.name,
                     v2.name)
        return g1, g2, v1, v2
    in_place = (session is not None and v1 in session.owned,
                session is not None and v2 in session.owned)
    side1, side2 = swap_segments(g1, (starts1[i], v1), g2, (starts2[j], v2), rng, in_place)
    for side, got, (start, end) in ((0, side1, (starts2[j], v2)), (1, side2, (starts1[i], v1))):
        if got is not None:
            births.note_crossed(side, "CrossoverSwap", f"segment {start.name}..{end.name}")
    if session is not None:
        for side in (side1, side2):
            if side is not None:
                session.add(side[0], owned=True)
    c1, e1 = side1 if side1 is not None else (g1, v1)
    c2, e2 = side2 if side2 is not None else (g2, v2)
    return c1, c2, e1, e2


# ====================================================================== one VertexCrossover call

class _Session:
    """What one VertexCrossover call knows: the graph of each vertex it has seen, and which
    graphs it made itself (later swaps work on those in place instead of copying them again).
    The call hands it down inside the pairs it gives its crossover (:class:`_Pair`)."""

    def __init__(self) -> None:
        self.graph_of: dict[Vertex, CompGraph] = {}
        self.owned: set[Vertex] = set()

    def add(self, g: CompGraph, owned: bool) -> None:
        for v in g.vertices:
            self.graph_of[v] = g
            if owned:
                self.owned.add(v)

    def graph(self, v: Any, like: CompGraph | None = None) -> CompGraph:
        """The graph of ``v``: the one this call knows, else :func:`regraph`'s."""
        g = self.graph_of.get(v) if isinstance(v, Vertex) else None
        return g if g is not None else regraph(v, like)


class _Pair(tuple):
    """A pair of vertices that carries the :class:`_Session` of the VertexCrossover call that
    made it. It is a plain tuple of two to whoever reads it, and wrappers (MutationProbability,
    LogMutation, ...) pass it on unchanged, so a CrossoverSwap inside them finds the session."""

    session: _Session

    def __new__(cls, items: tuple, session: _Session) -> _Pair:
        pair = super().__new__(cls, items)
        pair.session = session
        return pair


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

    acts_on = "optimizer"      # what MapCandidate applies it to

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
        for side, (old, new) in enumerate(((o1, n1), (o2, n2))):
            what = _optimizer_change(old, new)
            if what:
                births.note_crossed(side, type(self).__name__, what)
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


def itermap_swap(pair: tuple) -> tuple[Any, Any]:
    """``(m1, m2) -> (m2, m1)``: each candidate takes the other's iterator map."""
    m1, m2 = _pair_of(pair, "itermap_swap")
    return m2, m1


class IteratorMapCrossover:
    """IteratorMapCrossover(crossover=itermap_swap): crossover of two candidates' iterator maps,
    ``((m1, m2)) -> (m1', m2')`` (the seed's IteratorMapCrossover): by default they swap them,
    so each child trains with the other parent's batch size. Maps that come back as they went
    in are copies.

        >>> [m.batch_size for m in IteratorMapCrossover()((BatchSizeIteratorMap(16),
        ...                                                BatchSizeIteratorMap(64)))]
        [64, 16]
    """

    acts_on = "itermap"        # what MapCandidate applies it to

    def __init__(self, crossover: Callable[[tuple], tuple] = itermap_swap) -> None:
        if not callable(crossover):
            raise TypeError(f"IteratorMapCrossover needs a callable crossover, got "
                            f"{type(crossover).__name__}")
        self.crossover = crossover

    def __call__(self, pair: tuple) -> tuple:
        m1, m2 = _pair_of(pair, "IteratorMapCrossover")
        n1, n2 = _pair_of(self.crossover((m1, m2)), repr(self.crossover))
        for side, (old, new) in enumerate(((m1, n1), (m2, n2))):
            a, b = getattr(old, "batch_size", None), getattr(new, "batch_size", None)
            if a != b:
                births.note_crossed(side, type(self).__name__, f"batch size {a}->{b}")
        return tuple(_copy.deepcopy(n) if n is m1 or n is m2 else n for n in (n1, n2))

    def __repr__(self) -> str:
        return f"IteratorMapCrossover({getattr(self.crossover, '__name__', self.crossover)})"


# ====================================================================== candidates

class evolve_crossover:  # noqa: N801 - a function-like callable object, picklable unlike a closure
    """evolve_crossover(crossover=None, opt_crossover=None, map_others=copy.deepcopy,
    itermap_crossover=None): a pair of candidates -> a pair of children (the seed's
    ``evolvemodel`` for crossovers).

    ``crossover((graph1, graph2))`` makes the children's models, ``opt_crossover((opt1,
    opt2))`` their optimisers and ``itermap_crossover((map1, map2))`` their iterator maps
    (e.g. :class:`IteratorMapCrossover`: batch sizes) where both candidates carry one; other
    fields go through ``map_others``. A child never shares a model, optimiser or map with a
    parent (unchanged ones are copied), so use it in ``PairCandidates(EvolveCandidates(...))``.
    Where the parents' optimisers kept state, a child's optimiser inherits it for every
    parameter the child took unchanged from either parent (same optimiser type only).

        >>> pairs = PairCandidates(EvolveCandidates(evolve_crossover(
        ...     VertexCrossover(MutationProbability(CrossoverSwap(), 0.05)),
        ...     LearningRateCrossover())))  # doctest: +SKIP
    """

    def __init__(self, crossover: Callable[[tuple], tuple] | None = None,
                 opt_crossover: Callable[[tuple], tuple] | None = None,
                 map_others: Callable[[Any], Any] = _copy.deepcopy,
                 itermap_crossover: Callable[[tuple], tuple] | None = None) -> None:
        for what, f in (("crossover", crossover), ("opt_crossover", opt_crossover),
                        ("itermap_crossover", itermap_crossover)):
            if f is not None and not callable(f):
                raise TypeError(f"evolve_crossover: {what} must be callable, got "
                                f"{type(f).__name__}")
        self.crossover, self.opt_crossover, self.map_others = crossover, opt_crossover, map_others
        self.itermap_crossover = itermap_crossover

    def __call__(self, pair: tuple) -> tuple:
        c1, c2 = _pair_of(pair, "evolve_crossover")
        with births.crossing(c1, c2):      # a lineage that records learns who gave what
            return self._children(c1, c2)

    def _children(self, c1: Any, c2: Any) -> tuple:
        g1, g2 = graph_of(c1), graph_of(c2)
        n1, n2 = g1, g2
        if self.crossover is not None and g1 is not None and g2 is not None:
            n1, n2 = _pair_of(self.crossover((g1, g2)), repr(self.crossover))
        parents = (g1, g2)
        n1, n2 = (copy_model(n) if any(n is p for p in parents) else n for n in (n1, n2))
        o1, o2 = opt_of(c1), opt_of(c2)
        p1, p2 = o1, o2
        if self.opt_crossover is not None and o1 is not None and o2 is not None:
            mark = births.crossed_mark()
            p1, p2 = _pair_of(self.opt_crossover((o1, o2)), repr(self.opt_crossover))
            for side, (old, new) in enumerate(((o1, p1), (o2, p2))):
                if not _optimizer_change(old, new):
                    births.drop_crossed(mark, side)
        p1, p2 = (_fresh(p) if p is not None and (p is o1 or p is o2) else p for p in (p1, p2))
        maps = self._itermaps(itermap_of(c1), itermap_of(c2))
        return tuple(inherit_optimizer_state(new_candidate(c, self._mapper(g, n, o, p, m)), c1, c2)
                     for c, g, n, o, p, m in ((c1, g1, n1, o1, p1, maps[0]),
                                              (c2, g2, n2, o2, p2, maps[1])))

    def _itermaps(self, m1: Any, m2: Any) -> tuple[tuple, tuple]:
        """``((old, new), (old, new))``: each candidate's iterator map and its child's (None
        where it has none); a map that comes back unchanged or from a parent goes through
        ``map_others``."""
        n1, n2 = m1, m2
        if self.itermap_crossover is not None and m1 is not None and m2 is not None:
            n1, n2 = _pair_of(self.itermap_crossover((m1, m2)), repr(self.itermap_crossover))
        n1, n2 = (self.map_others(n) if n is not None and (n is m1 or n is m2) else n
                  for n in (n1, n2))
        return (m1, n1), (m2, n2)

    def _mapper(self, model: Any, new_model: Any, opt: Any, new_opt: Any, maps: tuple):
        old_map, new_map = maps

        def mapfield(x: Any) -> Any:
            if model is not None and x is model:
                return new_model
            if opt is not None and x is opt:
                return new_opt
            if old_map is not None and x is old_map:
                return new_map
            return self.map_others(x)
        return mapfield

    def __repr__(self) -> str:
        cross = "" if self.itermap_crossover is None else f", {self.itermap_crossover!r}"
        return f"evolve_crossover({self.crossover!r}, {self.opt_crossover!r}{cross})"


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
    """The kind of data ``v`` reads (first input) and gives."""
    ins = v.inputs
    return v.kind, (ins[0].kind if ins else None)


def _by_kinds(vs: Sequence[Vertex]) -> dict[tuple, list[int]]:
    out: dict[tuple, list[int]] = {}
    for j, v in enumerate(vs):
        out.setdefault(_kinds(v), []).append(j)
    return out


def _same_kinds(v1: Vertex, v2: Vertex) -> bool:
    """Same kind of data in and out (a dense vertex never pairs with a conv one)."""
    return _kinds(v1) == _kinds(v2)


def _allowed(v: Vertex, selection: VertexFilter | None) -> bool:
    if v.is_input or v.is_output or v.shielded:
        return False
    return selection is None or bool(selection(v))


def _pair_of(pair: Any, who: str) -> tuple[Any, Any]:
    if not isinstance(pair, (tuple, list)) or len(pair) != 2:
        raise TypeError(f"{who}: expected a tuple of two, got {pair!r}")
    return pair[0], pair[1]


def _optimizer_change(old: Any, new: Any) -> str:
    """What changed from optimiser ``old`` to ``new``: type and learning rate ("" for none)."""
    parts = []
    if type(old) is not type(new):
        parts.append(f"{type(old).__name__}->{type(new).__name__}")
    a, b = getattr(old, "learning_rate", None), getattr(new, "learning_rate", None)
    if isinstance(a, numbers.Real) and isinstance(b, numbers.Real) and a != b:
        parts.append(f"lr {births.change(a, b)}")
    return ", ".join(parts)


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
