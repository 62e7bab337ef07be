"""Which neurons to keep and where to insert new ones: the seed's neuron-selection MILP.

A size change on one vertex spreads to every vertex whose output neurons are tied to it: through
size-invariant vertices (BatchNorm, pooling, add: same neurons as their inputs) and concat (the
concatenation of its inputs' neurons), both ways. Absorbing vertices (Dense, Conv) start a new
index space: their nout is free of their nin. All tied vertices are solved together.

Formulation (per *source* of an index space, i.e. a graph input, an absorbing vertex, or a pinned
vertex, with L current neurons): binaries ``s[i]`` (keep neuron i) and integers ``n[i]`` (insert
that many new neurons after position i). A tied vertex's neurons are its source's (invariant) or
the concatenation of its inputs' (concat), so its variables *are* theirs; neurons that an
elementwise vertex ties across sources are merged into one variable (the seed adds equality rows;
merging makes a residual trunk one variable per channel). New neurons are allowed only at the end
of a source's block and wherever that end is tied to (the seed allows any position and pushes them
to the end with a small cost, which comes to the same). ``nout_v = sum(s) + sum(n)``.
Objective (maximised): the total value of kept neurons minus ``0.1 * sum_v c_v |nout_v - t_v| /
t_v`` and ``0.8 * max_v`` of the same (``c_v`` the vertex's largest value, ``t_v`` its wanted
size less its negative-valued neurons), minus a tiny cost per new neuron. Exact mode requires
``nout_v == target`` for requested vertices; relaxed mode penalises the distance heavily and only
requires that each requested vertex changes by at least one. HiGHS solves it, through scipy's
own bindings where they work (:class:`_HighsProgram`), else ``scipy.optimize.milp``: the LP
relaxation first (usually integral already), then branch and bound over its fractional
variables alone, the whole program last (:func:`_solve`); a fast path handles the common
case of a single source without the solver.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import sparse
from scipy.optimize import Bounds, LinearConstraint, milp

try:                                 # scipy's own HiGHS bindings (private): see _HighsProgram
    from scipy.optimize._highspy import _core as _highs
except ImportError:                  # pragma: no cover - a scipy without them
    _highs = None

from tinyevo.graph.vertex import Vertex

__all__ = ["solve_selection", "Selection", "ValueFn", "component"]

logger = logging.getLogger("tinyevo.graph")

ValueFn = Callable[[Vertex], Any]

TIME_LIMIT = 10.0          # seconds per MILP; a feasible incumbent is accepted at the limit
_VALUE_TOP = 100.0         # values are rescaled so the largest |value| is this
_VALUE_FLOOR = 1e-2        # ... and non-zero |value| at least this
# HiGHS's presolve buys nothing on these small models and, on a few, makes HiGHS print a stray
# "transformNewIntegerFeasibleSolution" line to stdout; the models are solved without it.
PRESOLVE = False
# Relative optimality gap at which branch and bound stops: the seed accepts any feasible
# solution; 0.1 % of the kept neurons' value is far below what one neuron is worth, and it
# cut the AutoFlux mutation of a 124-vertex graph from 36 to 20-22 ms (mean) against 1e-6.
MIP_GAP = 1e-3
# A relaxed request on up to this many sizes is solved side by side (2 ** n programs at most,
# usually one); more sizes are solved as one program with a binary per size.
MAX_SPLIT = 3
# Solve through scipy's HiGHS bindings directly where they work (_HighsProgram); False: always
# scipy.optimize.milp.
DIRECT_HIGHS = True
_DIRECT_CHECKED: list[bool] = []


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

    Vertices with a pending size (deferred style) are held to it exactly. Returns None when no
    solution exists (or the solver found none in time).
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


# ---------------------------------------------------------------------- the MILP

def _milp(comp, spaces, sources, eq_pairs, targets, relaxed_set, value_fn, pins, equal):
    nvar_s = sum(n for _, _, n in sources)
    values = _values(comp, spaces, value_fn, pins)
    cur = {v: v.nout for v in comp}
    grow = any(t > v.nout_org for v, t in targets.items()) or bool(equal) or any(
        p.new.any() for p in pins.values())

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
    nvar_n = int(has_n.sum())

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
    lb[:ncls], ub[:ncls] = s_lb, s_ub
    lb[ncls:i_z], ub[ncls:i_z] = n_lb[has_n], n_ub[has_n]
    lb[i_z:i_d] = 1                                     # every vertex keeps a neuron
    c[ncls:i_z] = 1e-4                                  # no gratuitous new neurons
    for v, u in values.items():
        np.subtract.at(c, label[spaces[v]], u)

    rows: list[np.ndarray] = []
    cols: list[np.ndarray] = []
    vals: list[np.ndarray] = []
    rlo: list[np.ndarray] = []
    rhi: list[np.ndarray] = []
    nrows = [0]

    def add_entries(r, idx, coef, lo, hi):
        """Rows ``lo[k] <= sum(coef[e] * x[idx[e]] for the entries e with r[e] == k) <= hi[k]``."""
        rows.append(nrows[0] + np.asarray(r))
        cols.append(np.asarray(idx))
        vals.append(np.asarray(coef, dtype=float))
        rlo.append(np.asarray(lo, dtype=float))
        rhi.append(np.asarray(hi, dtype=float))
        nrows[0] += len(lo)

    def add_rows(idx, coef, lo, hi):
        """Rows ``lo[k] <= coef[k] @ x[idx[k]] <= hi[k]`` (2-D idx, coef broadcast to it)."""
        idx = np.asarray(idx).reshape(len(lo), -1)
        add_entries(np.repeat(np.arange(len(lo)), idx.shape[1]), idx.reshape(-1),
                    np.broadcast_to(np.asarray(coef, dtype=float), idx.shape).reshape(-1),
                    lo, hi)

    def row(idx, coef, lo, hi):
        add_rows(np.asarray(idx)[None, :], np.asarray(coef, dtype=float)[None, :], [lo], [hi])

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
    add_entries(np.concatenate([g_all, g_all[has], np.arange(ngroups)]),
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
        add_rows(zj, [1.0, -1.0], np.full(len(t), -np.inf), t)              # z - d <= t
        add_rows(zj, [1.0, 1.0], t, np.full(len(t), np.inf))                # z + d >= t
        c[j] += 0.1 * scale / t
        add_rows(np.stack([j, np.full(len(j), i_m)], axis=1),               # m >= d scale / t
                 np.stack([scale / t, np.full(len(j), -1.0)], axis=1),
                 np.full(len(t), -np.inf), np.zeros(len(t)))
    c[i_m] += 0.8
    value_total = float(sum(np.abs(u).sum() for u in values.values()))
    weight_relaxed = 10.0 * (value_total + 1.0) + 1e3
    for k, v in enumerate(relaxed_list):
        z, e = i_z + zgroup[v], i_e + k
        t = targets[v]
        row(np.array([z, e]), np.array([1.0, -1.0]), -np.inf, t)
        row(np.array([z, e]), np.array([1.0, 1.0]), t, np.inf)
        c[e] += weight_relaxed
    for a, b in equal:
        za, zb = i_z + zgroup[a], i_z + zgroup[b]
        if za != zb:
            row(np.array([za, zb]), np.array([1.0, -1.0]), 0, 0)

    # Relaxed: every requested vertex changes by at least one, z <= cur - 1 or z >= cur + 1.
    # Each side is a program of its own with a tight relaxation (as one program the choice needs
    # a big-M binary, whose relaxation is weak); the distance to the target outweighs all neuron
    # value, so a side that meets its targets exactly needs no other.
    sides = [(z, cur[v], 1 if targets[v] > cur[v] else -1)
             for z, v in {i_z + zgroup[v]: v for v in relaxed_list}.items()]
    if len(sides) > MAX_SPLIT:
        n_cap = np.where(has_n, np.minimum(n_ub, 1e6), 0)
        for k, (z, now, _) in enumerate(sides):
            # z >= now + 1 - M b and z <= now - 1 + M (1 - b), M large enough for either side:
            # zmax, the largest z can get, counts a neuron as often as a concat repeats it.
            cls = label[spaces[rep[z - i_z]]]
            zmax = len(cls) + n_cap[cls].sum()
            big = float(max(now, zmax - now + 1) + 1)
            b = nvar + k
            row(np.array([z, b]), np.array([1.0, big]), now + 1, np.inf)
            row(np.array([z, b]), np.array([1.0, big]), -np.inf, now - 1 + big)
        extra = len(sides)
        c, lb, ub = (np.concatenate([a, np.full(extra, f)]) for a, f in ((c, 0), (lb, 0), (ub, 1)))
        integrality = np.concatenate([integrality, np.ones(extra)])
        nvar += extra
        choices: list[tuple] = [()]
    else:                                   # every combination, the targets' own sides first
        choices = sorted(itertools.product((1, -1), repeat=len(sides)),
                         key=lambda ch: sum(a != toward for a, (_, _, toward) in zip(ch, sides)))
    A = sparse.csr_array((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                         shape=(nrows[0], nvar))
    program = _program(c, A, np.concatenate(rlo), np.concatenate(rhi))
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
        x = _solve(program, integrality, lo, hi, gap_scale=value_total)
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


def _solve(program: _Program, integrality: np.ndarray, lb: np.ndarray, ub: np.ndarray,
           gap_scale: float | None = None) -> np.ndarray | None:
    """The LP relaxation first: these models are nearly totally unimodular, so its optimum is
    usually integral, hence optimal, at a fraction of the branch-and-bound cost. Where it is
    not, the integer variables it already has integral are fixed and only the few fractional
    ones are searched; that answer is taken when it is within ``MIP_GAP`` of the relaxation's
    bound (so of the optimum), else the whole program goes to branch and bound.

    The gap is measured against ``gap_scale``, the neurons' total value (default: the bound
    itself): a relaxed program's objective also holds the heavy penalty for a missed target,
    and 0.1 % of that would let through worse choices of neurons.

    (Rounding the fractional variables each way with cheap re-solves was tried instead of the
    branch and bound over them: within the gap it kept measurably worse neurons, e.g. new ones
    in place of kept ones, 25 % more surgery in the crossover benchmark.)"""
    lp = program.lp(lb, ub)
    if lp is None:
        return None
    x, bound = lp
    ints = integrality.astype(bool)
    frac = ints & (np.abs(x - np.round(x)) >= 1e-7)
    if not frac.any():
        return _rounded(x, ints)

    slack = MIP_GAP * max(abs(bound) if gap_scale is None else gap_scale, 1.0)
    with _quiet_stdout():       # HiGHS's MIP solver can print to the C stdout despite options
        lo, hi = lb.copy(), ub.copy()
        fixed = ints & ~frac
        lo[fixed] = hi[fixed] = np.round(x[fixed])
        near = program.mip(integrality, lo, hi, slack)
        if near is not None and near[1] - bound <= slack:
            return _rounded(near[0], ints)
        res = program.mip(integrality, lb, ub, slack)
    return None if res is None else _rounded(res[0], ints)


class _Program:
    """min ``c @ x`` subject to ``rlo <= A @ x <= rhi`` and bounds given per solve: its LP
    relaxation (:meth:`lp`, the optimum or None) and its integer version (:meth:`mip`, the
    best solution found, accepted at the time limit, or None). Solved by
    ``scipy.optimize.milp``; see :class:`_HighsProgram` for the direct path."""

    def __init__(self, c: np.ndarray, A: sparse.csr_array, rlo: np.ndarray,
                 rhi: np.ndarray) -> None:
        self.c = c
        self.constraints = LinearConstraint(A, rlo, rhi)
        self.options = {"time_limit": TIME_LIMIT, "disp": False, "presolve": PRESOLVE}

    def lp(self, lb: np.ndarray, ub: np.ndarray) -> tuple[np.ndarray, float] | None:
        res = milp(self.c, integrality=np.zeros(len(self.c)), bounds=Bounds(lb, ub),
                   constraints=self.constraints, options=self.options)
        if res.x is None or res.status != 0:
            logger.debug("neuron selection LP: %s", res.message)
            return None
        return res.x, float(res.fun)

    def mip(self, integrality: np.ndarray, lb: np.ndarray, ub: np.ndarray,
            abs_gap: float | None = None) -> tuple[np.ndarray, float] | None:
        # (milp takes a relative gap only: branch and bound stops within MIP_GAP of the
        # objective, penalties included.)
        res = milp(self.c, integrality=integrality, bounds=Bounds(lb, ub),
                   constraints=self.constraints,
                   options={**self.options, "mip_rel_gap": MIP_GAP})
        if res.x is None:
            logger.debug("neuron selection MILP: %s", res.message)
            return None
        return res.x, float(res.fun)


class _HighsProgram(_Program):
    """The same program given once to scipy's own HiGHS bindings and re-solved after bound
    changes from the last basis. ``scipy.optimize.milp`` checks and converts its arguments in
    Python on every call (about 1 ms, more than HiGHS takes on most of these programs) and
    starts each solve from scratch; a generation of the operator benchmark solves some 150.
    The bindings are private to scipy, so this path is taken only where they import and solve
    a known program right (checked once, :func:`_direct_ok`)."""

    def __init__(self, c: np.ndarray, A: sparse.csr_array, rlo: np.ndarray,
                 rhi: np.ndarray) -> None:
        h = _highs
        self.c, self.n = c, len(c)
        self.A, self.rlo, self.rhi = A, rlo, rhi
        self.fallback: _Program | None = None
        self.cols = np.arange(self.n, dtype=np.int32)
        self.is_mip = False
        self.highs = highs = h._Highs()
        highs.setOptionValue("output_flag", False)
        highs.setOptionValue("presolve", "on" if PRESOLVE else "off")
        zeros = np.zeros(self.n)
        status = highs.passModel(
            self.n, A.shape[0], A.nnz, int(h.MatrixFormat.kRowwise), int(h.ObjSense.kMinimize),
            0.0, np.ascontiguousarray(c, dtype=np.float64), zeros, zeros,
            np.ascontiguousarray(rlo, dtype=np.float64),
            np.ascontiguousarray(rhi, dtype=np.float64), A.indptr.astype(np.int32),
            A.indices.astype(np.int32), A.data.astype(np.float64),
            np.zeros(self.n, dtype=np.int32))
        if status == h.HighsStatus.kError:
            raise RuntimeError("HiGHS refused the model")

    def _run(self, integrality: np.ndarray | None, lb: np.ndarray, ub: np.ndarray,
             abs_gap: float | None = None) -> tuple[np.ndarray, float] | None:
        h, highs = _highs, self.highs
        mip = integrality is not None and bool(integrality.any())
        if mip or self.is_mip:
            kinds = (integrality if mip else np.zeros(self.n)).astype(np.uint8)
            highs.changeColsIntegrality(self.n, self.cols, kinds)
            self.is_mip = mip
        if mip:
            # branch and bound stops within abs_gap (the caller's scale), else MIP_GAP of it
            highs.setOptionValue("mip_rel_gap", MIP_GAP if abs_gap is None else 0.0)
            highs.setOptionValue("mip_abs_gap", 1e-6 if abs_gap is None else abs_gap)
        highs.changeColsBounds(self.n, self.cols, np.asarray(lb, dtype=np.float64),
                               np.asarray(ub, dtype=np.float64))
        # HiGHS measures its time limit from the object's first run, not this one's.
        highs.setOptionValue("time_limit", highs.getRunTime() + TIME_LIMIT)
        if highs.run() == h.HighsStatus.kError:
            return None
        status = highs.getModelStatus()
        info = highs.getInfo()
        if status != h.HighsModelStatus.kOptimal:
            stopped = (h.HighsModelStatus.kTimeLimit, h.HighsModelStatus.kIterationLimit,
                       h.HighsModelStatus.kSolutionLimit)
            if not (mip and status in stopped and info.objective_function_value < h.kHighsInf
                    and info.primal_solution_status == h.SolutionStatus.kSolutionStatusFeasible):
                logger.debug("neuron selection %s: %s", "MILP" if mip else "LP",
                             highs.modelStatusToString(status))
                return None
        x = np.asarray(highs.getSolution().col_value, dtype=np.float64)
        return x, float(self.c @ x)

    def lp(self, lb: np.ndarray, ub: np.ndarray) -> tuple[np.ndarray, float] | None:
        return self._guarded(None, lb, ub, None)

    def mip(self, integrality: np.ndarray, lb: np.ndarray, ub: np.ndarray,
            abs_gap: float | None = None) -> tuple[np.ndarray, float] | None:
        return self._guarded(integrality, lb, ub, abs_gap)

    def _guarded(self, integrality, lb, ub, abs_gap):
        """:meth:`_run`, or scipy.optimize.milp from the first failure of the bindings on (for
        this program and every later one)."""
        if self.fallback is None:
            try:
                return self._run(integrality, lb, ub, abs_gap)
            except Exception as e:          # bindings that differ from those checked
                _disable_direct(e)
                self.fallback = _Program(self.c, self.A, self.rlo, self.rhi)
        if integrality is None:
            return self.fallback.lp(lb, ub)
        return self.fallback.mip(integrality, lb, ub, abs_gap)


def _program(c: np.ndarray, A: sparse.csr_array, rlo: np.ndarray, rhi: np.ndarray) -> _Program:
    if _direct_ok():
        try:
            return _HighsProgram(c, A, rlo, rhi)
        except Exception as e:              # bindings that differ from those checked
            _disable_direct(e)
    return _Program(c, A, rlo, rhi)


def _disable_direct(e: BaseException) -> None:
    logger.warning("scipy's HiGHS bindings failed (%r); solving with scipy.optimize.milp from "
                   "now on", e)
    _DIRECT_CHECKED[:] = [False]


def _direct_ok() -> bool:
    """Whether :class:`_HighsProgram` may be used: ``DIRECT_HIGHS`` is on, the bindings import,
    and they solve a known program right (checked once per process)."""
    if not DIRECT_HIGHS or _highs is None:
        return False
    if not _DIRECT_CHECKED:
        _DIRECT_CHECKED.append(_check_direct())
    return _DIRECT_CHECKED[0]


def _check_direct() -> bool:
    """max x0 + 2 x1 + 3 x2 with x0 + x1 + x2 <= 1.5: the LP takes x2 and half of x1, the
    integer program x2 alone; both must come back so, and the LP again after a bound change;
    with x0 + x1 + x2 >= 5 neither has a solution."""
    try:
        A = sparse.csr_array(np.ones((1, 3)))
        p = _HighsProgram(np.array([-1.0, -2.0, -3.0]), A, np.array([-np.inf]),
                          np.array([1.5]))
        lb, ub = np.zeros(3), np.ones(3)
        lp, ip = p._run(None, lb, ub), p._run(np.ones(3), lb, ub)
        again = p._run(None, lb, np.array([1.0, 1.0, 0.0]))
        never = _HighsProgram(np.ones(3), A, np.array([5.0]), np.array([np.inf]))
        ok = (lp is not None and np.allclose(lp[0], [0, 0.5, 1]) and ip is not None
              and np.allclose(ip[0], [0, 0, 1]) and again is not None
              and np.allclose(again[0], [0.5, 1, 0])
              and never._run(None, lb, ub) is None and never._run(np.ones(3), lb, ub) is None)
    except Exception as e:                 # any change in the private bindings
        logger.debug("scipy's HiGHS bindings cannot be called directly: %r", e)
        return False
    if not ok:
        logger.debug("scipy's HiGHS bindings gave a wrong answer; using scipy.optimize.milp")
    return ok


def _rounded(x: np.ndarray, ints: np.ndarray) -> np.ndarray:
    x = x.copy()
    x[ints] = np.round(x[ints])
    return x


@contextlib.contextmanager
def _quiet_stdout():
    """Send file descriptor 1 to /dev/null for the duration (no-op where that fails)."""
    try:
        sys.stdout.flush()
        saved = os.dup(1)
        devnull = os.open(os.devnull, os.O_WRONLY)
    except (OSError, ValueError, AttributeError):
        yield
        return
    try:
        os.dup2(devnull, 1)
        yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)
        os.close(devnull)


def _indices(keep: np.ndarray, new: np.ndarray) -> np.ndarray:
    """Old indices kept, in order, with ``new[i]`` -1 markers after position i."""
    counts = keep.astype(np.int64) + new
    rep = np.repeat(np.arange(len(keep)), counts)
    starts = np.cumsum(counts) - counts
    first = (np.arange(len(rep)) - starts[rep]) == 0
    return np.where(first & keep[rep], rep, -1)
