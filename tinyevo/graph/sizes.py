"""Which neurons to keep and where to insert new ones: the seed's neuron-selection MILP.

A size change on one vertex spreads to every vertex whose output neurons are tied to it: through
size-invariant vertices (BatchNorm, pooling, add: same neurons as their inputs) and concat (the
concatenation of its inputs' neurons), both ways. Absorbing vertices (Dense, Conv) start a new
index space: their nout is free of their nin. All tied vertices are solved together.

Formulation (per *source* of an index space, i.e. a graph input, an absorbing vertex, or a pinned
vertex, with L current neurons): binaries ``s[i]`` (keep neuron i) and integers ``n[i]`` (insert
that many new neurons after position i). A tied vertex's neurons are its source's (invariant) or
the concatenation of its inputs' (concat), so its variables *are* theirs; elementwise vertices with
inputs from different sources add equality rows. ``nout_v = sum(s) + sum(n)`` over its variables.
Objective (maximised): the total value of kept neurons minus ``0.1 * sum_v c_v |nout_v - t_v| /
t_v`` and ``0.8 * max_v`` of the same, minus a tiny cost that pushes new neurons to the end.
Exact mode requires ``nout_v == target`` for requested vertices; relaxed mode penalises the
distance heavily and only requires that each requested vertex changes by at least one.
``scipy.optimize.milp`` (HiGHS) solves it; a fast path handles the common case of a single source
without the solver.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import sparse
from scipy.optimize import Bounds, LinearConstraint, milp

from tinyevo.graph.vertex import Vertex

__all__ = ["solve_selection", "Selection", "ValueFn", "component"]

logger = logging.getLogger("tinyevo.graph")

ValueFn = Callable[[Vertex], Any]

TIME_LIMIT = 10.0          # seconds per MILP; a feasible incumbent is accepted at the limit
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
    consumers = _absorbing_consumers(comp)
    if not relaxed and not equal:
        fast = _fast_path(comp, spaces, sources, targets, value_fn, pins)
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

def _fast_path(comp, spaces, sources, targets, value_fn, pins):
    """One source and every vertex exactly its neurons: keep the best, append new at the end.

    Returns {vertex: indices}, ``{}`` for "infeasible", or None when the MILP is needed.
    """
    if len(sources) != 1:
        return None
    src, _, length = sources[0]
    if any(len(spaces[v]) != length for v in comp):
        return None
    wanted = set(targets.values())
    if len(wanted) > 1:
        return None
    if src in pins:
        idx = pins[src].indices
        if wanted and wanted.pop() != len(idx):
            return {}
        return {v: idx for v in comp}
    target = wanted.pop() if wanted else length
    if src.op == "input":
        if target != length:
            return {}
        idx = np.arange(length)
    elif target < 1:
        return {}
    elif target >= length:
        idx = np.concatenate([np.arange(length), np.full(target - length, -1)])
    else:
        total = np.zeros(length)
        for u in _values(comp, spaces, value_fn, pins).values():
            total += u
        best = np.argsort(-total, kind="stable")[:target]
        idx = np.sort(best)
    return {v: idx for v in comp}


# ---------------------------------------------------------------------- the MILP

def _milp(comp, spaces, sources, eq_pairs, targets, relaxed_set, value_fn, pins, equal):
    nvar_s = sum(n for _, _, n in sources)
    values = _values(comp, spaces, value_fn, pins)
    nodes = {v: i for i, v in enumerate(comp)}
    cur = {v: v.nout for v in comp}
    grow = any(t > v.nout_org for v, t in targets.items()) or bool(equal) or any(
        p.new.any() for p in pins.values())
    cap = {v: (max(10 * n, 200) if grow else 0) for v, _, n in sources}

    # Variables: s (nvar_s) | n (nvar_s) | d_v per vertex | m | relaxed: e_v, b_v per request.
    relaxed_list = [v for v in comp if v in relaxed_set]
    nv = len(comp)
    n_rel = len(relaxed_list)
    i_d = 2 * nvar_s
    i_m = i_d + nv
    i_e = i_m + 1
    i_b = i_e + n_rel
    nvar = i_b + n_rel

    c = np.zeros(nvar)
    lb = np.zeros(nvar)
    ub = np.full(nvar, np.inf)
    integrality = np.zeros(nvar)
    integrality[:2 * nvar_s] = 1
    integrality[i_b:] = 1
    ub[:nvar_s] = 1
    ub[i_b:] = 1
    for v, off, n in sources:
        sl, nl = slice(off, off + n), slice(nvar_s + off, nvar_s + off + n)
        if v in pins:
            lb[sl] = ub[sl] = pins[v].keep
            lb[nl] = ub[nl] = pins[v].new
        elif v.op == "input":
            lb[sl] = ub[sl] = 1
            ub[nl] = 0
        else:
            ub[nl] = cap[v]
            # New neurons go last: a tiny cost that falls along the block.
            c[nl] += 1e-4 * (1.0 + (n - 1 - np.arange(n)) / max(n, 1))

    for v, u in values.items():
        np.subtract.at(c, spaces[v], u)

    rows: list[np.ndarray] = []
    cols: list[np.ndarray] = []
    vals: list[np.ndarray] = []
    rlo: list[float] = []
    rhi: list[float] = []

    def row(idx, coef, lo, hi):
        r = len(rlo)
        rows.append(np.full(len(idx), r))
        cols.append(np.asarray(idx))
        vals.append(np.asarray(coef, dtype=float))
        rlo.append(lo)
        rhi.append(hi)

    def size_terms(v):
        sp = spaces[v]
        return np.concatenate([sp, sp + nvar_s]), np.ones(2 * len(sp))

    big = float(sum(cap.values()) + nvar_s + 1)
    weight_relaxed = 10.0 * (sum(np.abs(u).sum() for u in values.values()) + 1.0) + 1e3
    for v in comp:
        idx, coef = size_terms(v)
        t_req = targets.get(v)
        if t_req is not None and v not in relaxed_set:
            row(idx, coef, t_req, t_req)
        else:
            row(idx, coef, 1, np.inf)
        # Deviation from the wanted size, relative, weighted by the vertex's largest value.
        u = values.get(v)
        want = t_req if t_req is not None else cur[v]
        if u is not None and len(u):
            scale = np.abs(u).max()
            t = max(1, want - int((u < 0).sum()))
            j = i_d + nodes[v]
            row(np.append(idx, j), np.append(coef, -1.0), -np.inf, t)      # size - d <= t
            row(np.append(idx, j), np.append(coef, 1.0), t, np.inf)        # size + d >= t
            c[j] += 0.1 * scale / t
            row(np.array([j, i_m]), np.array([scale / t, -1.0]), -np.inf, 0)
    c[i_m] += 0.8
    for k, v in enumerate(relaxed_list):
        idx, coef = size_terms(v)
        e, b = i_e + k, i_b + k
        t = targets[v]
        row(np.append(idx, e), np.append(coef, -1.0), -np.inf, t)
        row(np.append(idx, e), np.append(coef, 1.0), t, np.inf)
        c[e] += weight_relaxed
        # Change by at least one: size >= cur + 1 - M b  and  size <= cur - 1 + M (1 - b).
        row(np.append(idx, b), np.append(coef, big), cur[v] + 1, np.inf)
        row(np.append(idx, b), np.append(coef, big), -np.inf, cur[v] - 1 + big)
    for a, b in eq_pairs:
        for off in (0, nvar_s):
            k = np.arange(len(a))
            r0 = len(rlo)
            rows.append(np.repeat(r0 + k, 2))
            cols.append(np.stack([a + off, b + off], axis=1).reshape(-1))
            vals.append(np.tile([1.0, -1.0], len(a)))
            rlo.extend([0.0] * len(a))
            rhi.extend([0.0] * len(a))
    for a, b in equal:
        ia, ca = size_terms(a)
        ib, cb = size_terms(b)
        row(np.concatenate([ia, ib]), np.concatenate([ca, -cb]), 0, 0)

    A = sparse.csr_array((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                         shape=(len(rlo), nvar))
    res = milp(c, integrality=integrality, bounds=Bounds(lb, ub),
               constraints=LinearConstraint(A, np.array(rlo), np.array(rhi)),
               options={"time_limit": TIME_LIMIT, "disp": False, "mip_rel_gap": 1e-6})
    if res.x is None:
        logger.debug("neuron selection MILP: %s", res.message)
        return None
    x = np.round(res.x).astype(np.int64)
    s, n = x[:nvar_s].astype(bool), x[nvar_s:2 * nvar_s]
    return {v: _indices(s[spaces[v]], n[spaces[v]]) for v in comp}


def _indices(keep: np.ndarray, new: np.ndarray) -> np.ndarray:
    """Old indices kept, in order, with ``new[i]`` -1 markers after position i."""
    counts = keep.astype(np.int64) + new
    rep = np.repeat(np.arange(len(keep)), counts)
    starts = np.cumsum(counts) - counts
    first = (np.arange(len(rep)) - starts[rep]) == 0
    return np.where(first & keep[rep], rep, -1)
