"""Which neurons to keep and where to insert new ones: the seed's neuron-selection program.

A size change on one vertex spreads to every vertex whose output neurons are tied to it
(:func:`component`): through size-invariant vertices (BatchNorm, pooling, add: the same neurons
as their inputs) and concat (the concatenation of its inputs' neurons), both ways. Absorbing
vertices (Dense, Conv) start a new index space: their nout is free of their nin. All tied
vertices are solved together, as one mixed-integer linear program (MILP).

**Index spaces.** Each *source* of neurons (a graph input, an absorbing vertex, or a pinned
vertex) owns a block of its L current neurons. A tied vertex's neurons are its source's
(invariant) or the concatenation of its inputs' (concat), so each vertex's neurons are an array
of indices into those blocks (:func:`_index_spaces`), and its variables *are* theirs. Neurons
that an elementwise vertex ties across sources are merged into one variable (the seed adds
equality rows; merging makes a residual trunk one variable per channel).

**Variables.** Per neuron, a binary ``s[i]`` (keep neuron i) and an integer ``n[i]`` (insert
that many new neurons after position i); a vertex's size is ``nout_v = sum(s) + sum(n)`` over
its neurons. New neurons are allowed only at the end of a source's block and wherever that end
is tied to (the seed allows any position and pushes them to the end with a small cost, which
comes to the same).

**Objective** (maximised): the total value of kept neurons minus ``0.1 * sum_v c_v |nout_v -
t_v| / t_v`` and ``0.8 * max_v`` of the same (``c_v`` the vertex's largest value, ``t_v`` its
wanted size less its negative-valued neurons), minus a tiny cost per new neuron.

**Exact or relaxed.** Exact mode requires ``nout_v == target`` for requested vertices; relaxed
mode penalises the distance heavily and only requires that each requested vertex changes by at
least one.

**Solving.** The program is built in the form ``scipy.optimize.milp`` takes (minimise
``c @ x`` subject to ``rlo <= A @ x <= rhi``, bounds and integrality per variable) and solved
by HiGHS through the private :mod:`tinyevo.graph._highs`: the LP relaxation first (usually
integral already), through scipy's own HiGHS bindings where they work (faster, the same
answers), else through ``scipy.optimize.milp``. A fast path (:func:`_fast_path`) skips the
solver in the common case of sources that no vertex ties together: each keeps its most
valuable neurons, which is the program's optimum.

The answer, a :class:`Selection`, holds each vertex's new output neurons as old indices, -1 for
a new one; :func:`tinyevo.graph.apply_selection` cuts and pads the parameters to match.

Settings (module attributes, e.g. ``tinyevo.graph.selection.DIRECT_HIGHS = False``):
``TIME_LIMIT``, ``DIRECT_HIGHS`` and ``MAX_SPLIT`` below.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import sparse

from tinyevo.graph import _highs
from tinyevo.graph.vertices import Vertex

__all__ = ["solve_selection", "Selection", "Pin", "ValueFn", "component"]

logger = logging.getLogger("tinyevo.graph")

ValueFn = Callable[[Vertex], Any]

TIME_LIMIT = 10.0          # seconds per solve; a feasible incumbent is accepted at the limit
# Solve through scipy's HiGHS bindings directly where they work (tinyevo.graph._highs); False:
# always scipy.optimize.milp. The answers are the same; the direct path is about twice as fast.
DIRECT_HIGHS = True
# A relaxed request on up to this many sizes is solved side by side (2 ** n programs at most,
# usually one); more sizes are solved as one program with a binary per size.
MAX_SPLIT = 3
_VALUE_TOP = 100.0         # values are rescaled so the largest |value| is this
_VALUE_FLOOR = 1e-2        # ... and non-zero |value| at least this


@dataclass
class Pin:
    """A vertex treated as a source with a fixed outcome: ``keep[i]`` and ``new[i]`` new neurons
    after position i (used by edge edits, where a concat's neurons change without a resize)."""

    keep: np.ndarray
    new: np.ndarray

    @property
    def indices(self) -> np.ndarray:
        return _indices(self.keep.astype(bool), self.new.astype(np.int64))


@dataclass
class Selection:
    """Per vertex of the solved component, its new output neurons: old indices in order, -1 for
    a new neuron. ``consumers`` are absorbing vertices that read a vertex of the component."""

    outputs: dict[Vertex, np.ndarray]
    consumers: list[Vertex] = field(default_factory=list)

    def sizes(self) -> dict[Vertex, int]:
        return {v: len(idx) for v, idx in self.outputs.items()}


def solve_selection(requests: dict[Vertex, int], value_fn: ValueFn, *, relaxed: bool = False,
                    pins: dict[Vertex, Pin] | None = None,
                    equal: list[tuple[Vertex, Vertex]] = ()) -> Selection | None:
    """Solve for the neurons of every vertex tied to ``requests`` ({vertex: target nout}).

    ``value_fn(v)`` gives one value per neuron of ``v`` (None: no preference); the most valuable
    are kept. ``relaxed``: as close to the targets as possible, each requested vertex changed by
    at least one. ``pins``: vertices whose outcome is fixed. ``equal``: pairs of vertices that
    must end with one size. Vertices with a pending size (deferred style) are held to it
    exactly. Returns None when no solution exists (or the solver found none in time).

        >>> from tinyevo.graph import input_vertex, vertex
        >>> from tinyevo.layers import Dense
        >>> h = vertex(Dense(3, 4), input_vertex("in", 3, "dense"), name="h")
        >>> solve_selection({h: 2}, lambda v: [1.0, 4.0, 2.0, 3.0]).outputs[h]
        array([1, 3])
    """
    pins = pins or {}
    starts = list(requests) + list(pins) + [v for pair in equal for v in pair]
    comp = component(starts, pins)
    spaces, sources, eq_pairs = _index_spaces(comp, pins)
    if spaces is None:
        return None
    targets = dict(requests)
    for v in comp:
        if v._pending is not None and v not in targets:
            targets[v] = v._pending
    if not relaxed and _conflicting(spaces, targets, equal):
        return None
    consumers = _absorbing_consumers(comp)
    if not relaxed:
        fast = _fast_path(comp, spaces, sources, targets, value_fn, pins, equal, eq_pairs)
        if fast is not None:
            return Selection(fast, consumers) if fast else None
    outputs = _milp(comp, spaces, sources, eq_pairs, targets, set(requests) if relaxed else set(),
                    value_fn, pins, equal)
    return None if outputs is None else Selection(outputs, consumers)


def component(starts: list[Vertex], pins: dict[Vertex, Any] | None = None) -> list[Vertex]:
    """Every vertex whose output neurons are tied to one of ``starts``, in discovery order."""
    pins = pins or {}
    comp: dict[Vertex, None] = {}
    stack = list(reversed(starts))
    while stack:
        v = stack.pop()
        if v in comp:
            continue
        comp[v] = None
        source = _is_source(v, pins)
        if not source:
            stack.extend(reversed(v._inputs))        # its neurons are its inputs'
        if v.op == "input":
            continue                                 # fixed: nothing can change through it
        for o in v._outputs:
            if o not in comp and o not in pins and o.trait in ("invariant", "stack"):
                stack.append(o)
    return list(comp)


# ---------------------------------------------------------------------- index spaces

def _is_source(v: Vertex, pins: dict) -> bool:
    return v in pins or v.op == "input" or (v.op == "layer" and v.trait == "absorb")


def _index_spaces(comp: list[Vertex], pins: dict[Vertex, Pin]):
    """Variable indices of each vertex's neurons (into the s and n vectors, which share them)."""
    spaces: dict[Vertex, np.ndarray] = {}
    sources: list[tuple[Vertex, int, int]] = []          # (vertex, offset, length)
    offset = 0
    for v in comp:
        if _is_source(v, pins):
            n = len(pins[v].keep) if v in pins else v.nout_org
            spaces[v] = np.arange(offset, offset + n)
            sources.append((v, offset, n))
            offset += n
    eq_pairs: list[tuple[np.ndarray, np.ndarray]] = []

    def space(v: Vertex) -> np.ndarray | None:
        got = spaces.get(v)
        if got is not None:
            return got
        ins = [space(u) for u in v._inputs]
        if any(s is None for s in ins):
            return None
        if v.op == "concat":
            s = np.concatenate(ins)
        else:
            s = ins[0]
            for other in ins[1:]:
                if len(other) != len(s):
                    return None
                differ = other != s
                if differ.any():
                    eq_pairs.append((s[differ], other[differ]))
        spaces[v] = s
        return s

    for v in comp:
        if space(v) is None:
            logger.debug("sizes of %r's inputs disagree; cannot solve", v.name)
            return None, None, None
    return spaces, sources, eq_pairs


def _conflicting(spaces, targets, equal) -> bool:
    """True when two exact targets share one index space (or an ``equal`` pair) but differ: no
    exact solution, known without building the program."""
    size: dict[int, int] = {}
    for v, t in targets.items():
        if size.setdefault(id(spaces[v]), t) != t:
            return True
    return any(a in targets and b in targets and targets[a] != targets[b] for a, b in equal)


def _absorbing_consumers(comp: list[Vertex]) -> list[Vertex]:
    seen: dict[Vertex, None] = {}
    for v in comp:
        for o in v._outputs:
            if o.trait == "absorb":
                seen[o] = None
    return list(seen)


def _values(comp: list[Vertex], spaces, value_fn: ValueFn, pins) -> dict[Vertex, np.ndarray]:
    values = {}
    for v in comp:
        if v in pins or v.op == "input":
            continue
        u = value_fn(v)
        if u is None:
            continue
        u = np.asarray(_host(u), dtype=np.float64).reshape(-1)
        if len(u) != len(spaces[v]):
            raise ValueError(f"value function gave {len(u)} values for {v.name!r}, which has "
                             f"{len(spaces[v])} neurons (nout_org); return one value per neuron")
        values[v] = np.where(np.isfinite(u), u, -100.0)
    top = max((np.abs(u).max() for u in values.values() if len(u)), default=0.0)
    if top > 0:
        for v, u in values.items():
            u = u * (_VALUE_TOP / top)
            small = (u != 0) & (np.abs(u) < _VALUE_FLOOR)
            values[v] = np.where(small, np.sign(u) * _VALUE_FLOOR, u)
    return values


def _host(a: Any) -> np.ndarray:
    from tinyevo.backend import to_numpy
    return to_numpy(a)


# ---------------------------------------------------------------------- fast path

def _fast_path(comp, spaces, sources, targets, value_fn, pins, equal=(), eq_pairs=()):
    """Sources whose neurons no vertex ties together (no concat or elementwise merge across
    them), every vertex exactly its source's neurons: each source keeps its most valuable
    neurons and appends new ones at its end, which is the program's optimum, without the solver.

    Several sources are independent problems only when each has a wanted size (a free one is
    sized by the program's deviation terms); ``equal`` pairs are then met or infeasible.
    Returns {vertex: indices}, ``{}`` for "infeasible", or None when the MILP is needed.
    """
    if eq_pairs:
        return None                              # an elementwise merge ties sources
    groups: dict[int, list[Vertex]] = {id(spaces[src]): [] for src, _, _ in sources}
    starts = np.array([off for _, off, _ in sources])
    key_of: dict[Vertex, int] = {}
    for v in comp:
        sp = spaces[v]
        key = id(sp)
        if key not in groups:                    # a concat of one input has its own array
            if not len(sp):
                return None
            src_sp = spaces[sources[int(np.searchsorted(starts, sp[0], "right")) - 1][0]]
            if not np.array_equal(sp, src_sp):
                return None                      # a concat: several sources' neurons
            key = id(src_sp)
        groups[key].append(v)
        key_of[v] = key
    size: dict[int, int | None] = {}
    for src, _, _ in sources:
        key = id(spaces[src])
        wanted = {targets[v] for v in groups[key] if v in targets}
        if len(wanted) > 1:
            return {}
        size[key] = wanted.pop() if wanted else (len(pins[src].indices) if src in pins else None)
    if len(sources) > 1 or equal:
        if len(sources) == 1 or any(n is None for n in size.values()):
            return None
        if any(size[key_of[a]] != size[key_of[b]] for a, b in equal):
            return {}
    chosen: dict[int, np.ndarray] = {}
    values = None
    for src, _, length in sources:
        key = id(spaces[src])
        target = size[key]
        if src in pins:
            idx = pins[src].indices
            if target != len(idx):
                return {}
        else:
            target = length if target is None else target
            if src.op == "input":
                if target != length:
                    return {}
                idx = np.arange(length)
            elif target < 1:
                return {}
            elif target >= length:
                idx = np.concatenate([np.arange(length), np.full(target - length, -1)])
            else:
                if values is None:
                    values = _values(comp, spaces, value_fn, pins)
                total = np.zeros(length)
                for v in groups[key]:
                    if v in values:
                        total += values[v]
                best = np.argsort(-total, kind="stable")[:target]
                idx = np.sort(best)
        chosen[key] = idx
    return {v: chosen[key_of[v]] for v in comp}          # in comp order, as the MILP's


# ---------------------------------------------------------------------- the program

def _milp(comp, spaces, sources, eq_pairs, targets, relaxed_set, value_fn, pins, equal):
    """Build the program, solve it (once per side of the relaxed sizes, see
    :func:`_relaxed_sides`) and read each vertex's neurons back from the best answer."""
    values = _values(comp, spaces, value_fn, pins)
    cur = {v: v.nout for v in comp}
    grow = any(t > v.nout_org for v, t in targets.items()) or bool(equal) or any(
        p.new.any() for p in pins.values())
    neurons = _neurons(sources, eq_pairs, pins, grow)
    if neurons is None:
        return None
    label, n_index, has_n = neurons.label, neurons.n_index, neurons.has_n
    ncls, nvar_n = len(neurons.s_lb), int(has_n.sum())

    # Variables: s (ncls) | n (nvar_n) | z per distinct index space (a size) | d_v per vertex
    # (deviation from the wanted size) | m (the largest weighted deviation) | relaxed: e_v.
    group_of: dict[int, int] = {}
    zgroup = {}
    for v in comp:
        zgroup[v] = group_of.setdefault(id(spaces[v]), len(group_of))
    ngroups = len(group_of)
    rep = {}
    for v in comp:
        rep.setdefault(zgroup[v], v)
    relaxed_list = [v for v in comp if v in relaxed_set]
    valued = [v for v in comp if v in values and len(values[v])]
    n_rel = len(relaxed_list)
    i_z = ncls + nvar_n
    i_d = i_z + ngroups
    i_m = i_d + len(valued)
    i_e = i_m + 1
    nvar = i_e + n_rel

    c = np.zeros(nvar)
    lb = np.zeros(nvar)
    ub = np.full(nvar, np.inf)
    integrality = np.zeros(nvar)
    integrality[:ncls + nvar_n] = 1
    lb[:ncls], ub[:ncls] = neurons.s_lb, neurons.s_ub
    lb[ncls:i_z], ub[ncls:i_z] = neurons.n_lb[has_n], neurons.n_ub[has_n]
    lb[i_z:i_d] = 1                                     # every vertex keeps a neuron
    c[ncls:i_z] = 1e-4                                  # no gratuitous new neurons
    for v, u in values.items():
        np.subtract.at(c, label[spaces[v]], u)
    rows = _Rows()

    # z_g = sum(s) + sum(n) over its space, one row per index space g.
    cls_of = [label[spaces[rep[g]]] for g in range(ngroups)]
    lens = np.array([len(cl) for cl in cls_of])
    cls_all = np.concatenate(cls_of)
    g_all = np.repeat(np.arange(ngroups), lens)
    if len(np.unique(g_all * ncls + cls_all)) < len(cls_all):
        # A neuron counted twice (a concat of one input twice): sizes are integral whenever
        # s and n are, but declaring them so gives branch and bound the variables to branch
        # on. Left continuous, HiGHS branched on single neurons for seconds (6,000 nodes on
        # 196 variables) to prove an odd size out of reach; integral, it needs 1 node.
        # (Declared for every program, they slow many others down tenfold.)
        integrality[i_z:i_d] = 1
    ni_all = n_index[cls_all]
    has = ni_all >= 0
    rows.entries(np.concatenate([g_all, g_all[has], np.arange(ngroups)]),
                 np.concatenate([cls_all, ni_all[has], i_z + np.arange(ngroups)]),
                 np.concatenate([np.ones(len(cls_all) + int(has.sum())), -np.ones(ngroups)]),
                 np.zeros(ngroups), np.zeros(ngroups))
    for v in comp:
        t = targets.get(v)
        if t is not None and v not in relaxed_set:
            z = i_z + zgroup[v]
            lb[z] = max(lb[z], t)
            ub[z] = min(ub[z], t)
    if (lb > ub).any():
        return None
    if valued:
        # Deviation from the wanted size, relative, weighted by the vertex's largest value.
        scale = np.array([np.abs(values[v]).max() for v in valued])
        t = np.array([max(1, targets.get(v, cur[v]) - int((values[v] < 0).sum()))
                      for v in valued], dtype=float)
        z = i_z + np.array([zgroup[v] for v in valued])
        j = i_d + np.arange(len(valued))
        zj = np.stack([z, j], axis=1)
        rows.add(zj, [1.0, -1.0], np.full(len(t), -np.inf), t)              # z - d <= t
        rows.add(zj, [1.0, 1.0], t, np.full(len(t), np.inf))                # z + d >= t
        c[j] += 0.1 * scale / t
        rows.add(np.stack([j, np.full(len(j), i_m)], axis=1),               # m >= d scale / t
                 np.stack([scale / t, np.full(len(j), -1.0)], axis=1),
                 np.full(len(t), -np.inf), np.zeros(len(t)))
    c[i_m] += 0.8
    value_total = float(sum(np.abs(u).sum() for u in values.values()))
    weight_relaxed = 10.0 * (value_total + 1.0) + 1e3
    for k, v in enumerate(relaxed_list):
        z, e = i_z + zgroup[v], i_e + k
        t = targets[v]
        rows.one([z, e], [1.0, -1.0], -np.inf, t)
        rows.one([z, e], [1.0, 1.0], t, np.inf)
        c[e] += weight_relaxed
    for a, b in equal:
        za, zb = i_z + zgroup[a], i_z + zgroup[b]
        if za != zb:
            rows.one([za, zb], [1.0, -1.0], 0, 0)

    # Relaxed: each requested size changes by at least one, on the side that the solves choose.
    sides = [(z, cur[v], 1 if targets[v] > cur[v] else -1)
             for z, v in {i_z + zgroup[v]: v for v in relaxed_list}.items()]
    if len(sides) > MAX_SPLIT:
        n_cap = np.where(has_n, np.minimum(neurons.n_ub, 1e6), 0)
        cls_of_side = [label[spaces[rep[z - i_z]]] for z, _, _ in sides]
        zmax = [len(cls) + n_cap[cls].sum() for cls in cls_of_side]
        _big_m(rows, sides, zmax, nvar)
        extra = len(sides)
        c, lb, ub = (np.concatenate([a, np.full(extra, f)]) for a, f in ((c, 0), (lb, 0), (ub, 1)))
        integrality = np.concatenate([integrality, np.ones(extra)])
        nvar += extra
        choices: list[tuple] = [()]
    else:
        choices = _relaxed_sides(sides)
    program = _highs.program(c, *rows.matrix(nvar), time_limit=TIME_LIMIT, direct=DIRECT_HIGHS)
    best, best_obj = None, np.inf
    for choice in choices:
        lo, hi = lb.copy(), ub.copy()
        for (z, now, _), side in zip(sides, choice):
            if side > 0:
                lo[z] = max(lo[z], now + 1)
            else:
                hi[z] = min(hi[z], now - 1)
        if (lo > hi).any():
            continue
        x = program.solve(integrality, lo, hi, gap_scale=value_total)
        if x is None:
            continue
        obj = float(c @ x)
        if obj < best_obj:
            best, best_obj = x, obj
        if relaxed_list and x[i_e:i_e + n_rel].max() < 0.5:
            break                                         # every target met: nothing is closer
    if best is None:
        return None
    keep = best[:ncls].astype(bool)[label]
    new = np.where(n_index >= 0, best[np.maximum(n_index, 0)], 0).astype(np.int64)[label]
    return {v: _indices(keep[spaces[v]], new[spaces[v]]) for v in comp}


@dataclass
class _Neurons:
    """The neuron variables: ``label[i]`` is the variable (class) of source neuron i, which
    elementwise ties may share; per class, bounds on its s (keep) and n (new neurons after it),
    and ``n_index``, the index of its n variable, -1 where nothing may be inserted."""

    label: np.ndarray
    s_lb: np.ndarray
    s_ub: np.ndarray
    n_lb: np.ndarray
    n_ub: np.ndarray
    has_n: np.ndarray
    n_index: np.ndarray


def _neurons(sources, eq_pairs, pins, grow: bool) -> _Neurons | None:
    """The neuron variables and their bounds (None where fixed neurons contradict): a pinned
    source's or an input's are fixed; an absorbing source may insert at its block's end, and
    only when something grows (a target above a size, an ``equal`` pair, a pin's new neurons)."""
    nvar_s = sum(n for _, _, n in sources)
    # Neurons that elementwise vertices tie together are one variable (a class), not an
    # equality row: a residual trunk collapses to one class per channel.
    if eq_pairs:
        a = np.concatenate([p[0] for p in eq_pairs])
        b = np.concatenate([p[1] for p in eq_pairs])
        ncls, label = _classes(nvar_s, a, b)
    else:
        ncls, label = nvar_s, np.arange(nvar_s)
    s_lb, s_ub = np.zeros(ncls), np.ones(ncls)
    n_lb, n_ub = np.zeros(ncls), np.full(ncls, np.inf)
    insertable = np.zeros(ncls, dtype=bool)
    for v, off, n in sources:
        cls = label[off:off + n]
        if v in pins:
            keep, new = pins[v].keep.astype(float), pins[v].new.astype(float)
        elif v.op == "input":
            keep, new = np.ones(n), np.zeros(n)
        else:
            # New neurons go at the end of a block (and where other blocks' ends are tied).
            insertable[cls[-1]] = True
            np.minimum.at(n_ub, cls[-1:], max(10 * n, 200) if grow else 0)
            continue
        np.maximum.at(s_lb, cls, keep)
        np.minimum.at(s_ub, cls, keep)
        np.maximum.at(n_lb, cls, new)
        np.minimum.at(n_ub, cls, new)
    if (s_lb > s_ub).any() or (n_lb > n_ub).any():
        return None
    has_n = insertable | (n_lb > 0)
    n_index = np.full(ncls, -1)
    n_index[has_n] = ncls + np.arange(int(has_n.sum()))
    return _Neurons(label, s_lb, s_ub, n_lb, n_ub, has_n, n_index)


class _Rows:
    """The constraint rows ``lo <= A @ x <= hi`` as they are added, and the sparse ``A``."""

    def __init__(self) -> None:
        self.rows: list[np.ndarray] = []
        self.cols: list[np.ndarray] = []
        self.vals: list[np.ndarray] = []
        self.lo: list[np.ndarray] = []
        self.hi: list[np.ndarray] = []
        self.n = 0

    def entries(self, r, idx, coef, lo, hi) -> None:
        """Rows ``lo[k] <= sum(coef[e] * x[idx[e]] for the entries e with r[e] == k) <= hi[k]``."""
        self.rows.append(self.n + np.asarray(r))
        self.cols.append(np.asarray(idx))
        self.vals.append(np.asarray(coef, dtype=float))
        self.lo.append(np.asarray(lo, dtype=float))
        self.hi.append(np.asarray(hi, dtype=float))
        self.n += len(lo)

    def add(self, idx, coef, lo, hi) -> None:
        """Rows ``lo[k] <= coef[k] @ x[idx[k]] <= hi[k]`` (2-D idx, coef broadcast to it)."""
        idx = np.asarray(idx).reshape(len(lo), -1)
        self.entries(np.repeat(np.arange(len(lo)), idx.shape[1]), idx.reshape(-1),
                     np.broadcast_to(np.asarray(coef, dtype=float), idx.shape).reshape(-1),
                     lo, hi)

    def one(self, idx, coef, lo, hi) -> None:
        """The row ``lo <= coef @ x[idx] <= hi``."""
        self.add(np.asarray(idx)[None, :], np.asarray(coef, dtype=float)[None, :], [lo], [hi])

    def matrix(self, nvar: int) -> tuple[sparse.csr_array, np.ndarray, np.ndarray]:
        """``(A, lo, hi)`` over ``nvar`` variables."""
        A = sparse.csr_array((np.concatenate(self.vals),
                              (np.concatenate(self.rows), np.concatenate(self.cols))),
                             shape=(self.n, nvar))
        return A, np.concatenate(self.lo), np.concatenate(self.hi)


def _relaxed_sides(sides: list[tuple[int, int, int]]) -> list[tuple[int, ...]]:
    """Relaxed, each requested size ``z`` (``sides``: (z's index, its current size, the side
    of it the target is on)) must change by at least one: ``z <= now - 1`` or ``z >= now + 1``.
    Each combination of sides is a program of its own with a tight relaxation (as one program
    the choice needs a big-M binary, whose relaxation is weak, :func:`_big_m`); the distance to
    the target outweighs all neuron value, so a combination that meets its targets exactly
    needs no other: the targets' own sides come first."""
    return sorted(itertools.product((1, -1), repeat=len(sides)),
                  key=lambda ch: sum(a != toward for a, (_, _, toward) in zip(ch, sides)))


def _big_m(rows: _Rows, sides: list[tuple[int, int, int]], zmax: list, nvar: int) -> None:
    """The side choice for more than ``MAX_SPLIT`` sizes in one program, with a binary ``b``
    per size (the variables from ``nvar`` on): ``z >= now + 1 - M b`` and
    ``z <= now - 1 + M (1 - b)``, M large enough for either side. ``zmax``, the largest each
    z can get, counts a neuron as often as a concat repeats it."""
    for k, ((z, now, _), top) in enumerate(zip(sides, zmax)):
        big = float(max(now, top - now + 1) + 1)
        b = nvar + k
        rows.one([z, b], [1.0, big], now + 1, np.inf)
        rows.one([z, b], [1.0, big], -np.inf, now - 1 + big)


def _classes(n: int, a: np.ndarray, b: np.ndarray) -> tuple[int, np.ndarray]:
    """Connected components of n nodes joined by the pairs ``a[k] - b[k]``: their number and
    each node's component, numbered in order of their lowest node (as scipy's
    ``connected_components``, without its checks: these are small and called often)."""
    root = np.arange(n)
    while True:
        ra, rb = root[a], root[b]
        if (ra == rb).all():
            break
        low = np.minimum(ra, rb)
        np.minimum.at(root, ra, low)                # each root points to the lowest it meets
        np.minimum.at(root, rb, low)
        while True:                                 # every node to its root's root
            nxt = root[root]
            if (nxt == root).all():
                break
            root = nxt
    uniq, label = np.unique(root, return_inverse=True)
    return len(uniq), label


def _indices(keep: np.ndarray, new: np.ndarray) -> np.ndarray:
    """Old indices kept, in order, with ``new[i]`` -1 markers after position i."""
    counts = keep.astype(np.int64) + new
    rep = np.repeat(np.arange(len(keep)), counts)
    starts = np.cumsum(counts) - counts
    first = (np.arange(len(rep)) - starts[rep]) == 0
    return np.where(first & keep[rep], rep, -1)
