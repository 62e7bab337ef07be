"""Resizing: new output sizes, solved by neuron selection and applied by parameter surgery.

Every size change goes through :func:`resize`, and every deferred one comes back through
:func:`apply_pending`. A request spreads to every vertex tied to it (see
:func:`~tinyevo.graph.component`); the program is solved exactly first, else relaxed (as close
as possible, each requested vertex changed by at least one). Two ways to group the work:

- ``jointly=True`` (what :func:`~tinyevo.graph.change_nout` and
  :func:`~tinyevo.graph.select_neurons` do): one program for all requests, all or nothing;
- otherwise (what the GA's mutations do): one program per set of tied vertices, each solved or
  left unchanged on its own, and graph outputs keep their size.

``select=False`` records only the new sizes (pending; the seed's ``nout_org``). Solved per tied
set, the selection that made them stays with the pending vertices, and :func:`apply_pending` uses
it instead of solving again while no graph changed in between (a new deferred resize, or any
apply_pending, ends it): the solver runs once per set, not twice.

    >>> resize({h: 6}, select=False), h.nout, h.nout_org
    ([], 6, 4)
    >>> apply_pending([h]), h.nout_org
    (True, 6)
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence

import numpy as np

from tinyevo.graph.selection import Selection, ValueFn, component, solve_selection
from tinyevo.graph.surgery import apply_selection, connected
from tinyevo.graph.value import neuron_value
from tinyevo.graph.vertices import Vertex, structure_version, touch

__all__ = ["resize", "apply_pending", "flush_pending", "align", "resize_fresh"]

logger = logging.getLogger("tinyevo.graph")

Rng = np.random.Generator | None


def resize(requests: dict[Vertex, int], value_fn: ValueFn | None = None, rng: Rng = None, *,
           select: bool = True, jointly: bool = False) -> list[Vertex]:
    """Set the output sizes of ``requests`` ({vertex: nout}) and of every vertex tied to them.

    Keeps the neurons of highest ``value_fn`` (default :func:`~tinyevo.graph.neuron_value`).
    Returns the requested vertices whose program had no solution: they (and their tied set) are
    left unchanged. ``select=False`` only records pending sizes; see the module for ``jointly``.
    """
    if not select and not jointly:
        touch()                           # this deferred resize supersedes every earlier one
    failed: list[Vertex] = []
    solved: list[Selection] = []
    for group in [list(requests)] if jointly else _groups(list(requests)):
        sel = _solve({v: requests[v] for v in group}, value_fn, hold_outputs=not jointly)
        if sel is None:
            logger.info("resize: no solution for %s; unchanged",
                        {v.name: requests[v] for v in group})
            failed.extend(group)
            continue
        apply_selection(sel, rng, sizes_only=not select)
        solved.append(sel)
    if not select and not jointly:
        deferred = _Deferred(structure_version(), value_fn, solved)
        for sel in solved:
            for v in sel.outputs:
                if v._pending is not None:
                    v._deferred = deferred
    return failed


def apply_pending(vertices: Iterable[Vertex], value_fn: ValueFn | None = None, rng: Rng = None,
                  *, jointly: bool = False) -> bool:
    """Cut and pad the parameters for the pending sizes among ``vertices`` (the seed's
    ``Δoutputs``), grouped as :func:`resize`. Where no solution exists the pending sizes are
    dropped (sizes fall back to ``nout_org``) and the result is False."""
    pending = [v for v in vertices if v._pending is not None]
    reuse: list[Selection] = []
    if jointly:
        if not pending:
            return True
        groups = [pending]
    else:
        reuse = _reusable(pending, value_fn)
        touch()                           # deferred selections serve one apply_pending only
        groups = _groups(pending)
    ok = True
    for group in groups:
        sel = next((c for c in reuse if all(len(c.outputs.get(v, ())) == v.nout for v in group)),
                   None)
        if sel is None:
            sel = _solve({v: v.nout for v in group}, value_fn, hold_outputs=not jointly)
        if sel is None:
            logger.info("neuron selection failed for %s; sizes restored", [v.name for v in group])
            for v in group:
                v._pending = v._deferred = None
            touch()
            ok = False
        else:
            apply_selection(sel, rng)
    return ok


def flush_pending(v: Vertex, value_fn: ValueFn | None = None, rng: Rng = None) -> bool:
    """:func:`apply_pending` for ``v``'s whole graph, where it has pending sizes: what to call
    before a structural edit, which would otherwise apply them itself (jointly, solving again)."""
    pending = [u for u in connected(v) if u._pending is not None]
    return apply_pending(pending, value_fn, rng) if pending else True


def align(a: Vertex, b: Vertex, value_fn: ValueFn | None = None, rng: Rng = None) -> bool:
    """Make ``a.nout == b.nout``: grow the smaller exactly, else shrink the bigger, else let both
    move (the seed's rule). Returns False, changing nothing, where none works."""
    value_fn = value_fn or neuron_value
    small, big = (a, b) if a.nout < b.nout else (b, a)
    for req in ({small: big.nout, big: big.nout}, {big: small.nout, small: small.nout}, {}):
        if any(v.is_input and n != v.nout for v, n in req.items()):
            continue
        sel = solve_selection(req, value_fn, equal=[(a, b)])
        if sel is not None:
            apply_selection(sel, rng)
            return True
    return False


def resize_fresh(new: Vertex, nout: int, base: Vertex, rng: Rng = None) -> bool:
    """Cut or pad ``new``, the end of a fresh piece built on ``base`` and read by nothing yet, to
    ``nout`` outputs. Returns False, changing nothing, where that needs another size of ``base``
    (a size-invariant ``new``) or has no exact solution."""
    sel = solve_selection({new: nout}, neuron_value)
    if sel is None or base in sel.outputs:
        return False
    apply_selection(sel, rng)
    return True


# ---------------------------------------------------------------------- helpers

class _Deferred:
    """The selections one deferred :func:`resize` solved, valid while the structure version is
    the one they were solved at, for the same value function."""

    __slots__ = ("version", "value_fn", "selections")

    def __init__(self, version: int, value_fn: ValueFn | None,
                 selections: list[Selection]) -> None:
        self.version, self.value_fn, self.selections = version, value_fn, selections


def _reusable(pending: Sequence[Vertex], value_fn: ValueFn | None) -> list[Selection]:
    """The still valid selections that set the sizes of ``pending`` (at most one resize's)."""
    version = structure_version()
    for v in pending:
        d = v._deferred
        if d is not None and d.version == version and d.value_fn is value_fn:
            return d.selections
    return []


def _groups(vs: list[Vertex]) -> list[list[Vertex]]:
    """``vs`` split into sets whose sizes are tied (solved together)."""
    assigned: set[Vertex] = set()
    groups = []
    for v in vs:
        if v in assigned:
            continue
        comp = set(component([v]))
        group = [u for u in vs if u in comp and u not in assigned]
        assigned.update(group)
        groups.append(group)
    return groups


def _solve(requests: dict[Vertex, int], value_fn: ValueFn | None,
           hold_outputs: bool) -> Selection | None:
    """Exact then relaxed selection; with ``hold_outputs`` the graph outputs tied to
    ``requests`` keep their size (exactly, and in the relaxed solution too)."""
    value_fn = value_fn or neuron_value
    held = {o: o.nout for o in component(list(requests))
            if o.is_output and o not in requests} if hold_outputs else {}
    sel = solve_selection({**requests, **held}, value_fn)
    if sel is None:
        sel = solve_selection(requests, value_fn, relaxed=True)
        if sel is not None and any(len(sel.outputs[o]) != n for o, n in held.items()
                                   if o in sel.outputs):
            sel = None
    return sel
