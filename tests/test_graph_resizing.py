"""The one resize pipeline: per tied set or jointly, now or deferred, and the deferred selection
that the pending vertices keep for apply_pending."""

import pickle

import numpy as np
import pytest
from graph_cases import chain, residual

import tinyevo.graph.resizing as R
from tinyevo.graph import (
    CompGraph,
    add,
    align,
    apply_pending,
    flush_pending,
    input_vertex,
    resize,
    resize_fresh,
    vertex,
)
from tinyevo.layers import BatchNorm, Dense


@pytest.fixture
def solves(monkeypatch):
    """The number of neuron-selection programs the pipeline solves."""
    calls = []
    real = R.solve_selection
    monkeypatch.setattr(R, "solve_selection", lambda *a, **k: calls.append(1) or real(*a, **k))
    return calls


def bn_output():
    """in -> h -> bn, with bn the graph output (tied to h)."""
    inp = input_vertex("in", 3)
    h = vertex(Dense(3, 4), inp, name="h")
    return CompGraph(inp, vertex(BatchNorm(4), h, name="bn"))


def test_per_tied_set_each_set_is_solved_or_left_alone():
    g = residual("dense")
    c1, c2, c4 = g["c1"], g["c2"], g["c4"]
    assert resize({c2: 7, c4: 2}) == []
    assert (c2.nout, c4.nout) == (7, 2) and not g.pending()
    inp = input_vertex("x", 3)
    tied = vertex(Dense(3, 3), inp, name="tied")
    s = add(inp, tied, name="s")                      # tied to the input: cannot change
    free = vertex(Dense(3, 5), s, name="free")
    CompGraph(inp, vertex(Dense(5, 1), free))
    assert resize({tied: 4, free: 6}) == [tied]
    assert (tied.nout, free.nout) == (3, 6)
    assert c1.nout == 6


def test_per_tied_set_graph_outputs_keep_their_size_jointly_they_follow():
    g = bn_output()
    assert resize({g["h"]: 6}) == [g["h"]] and g["bn"].nout == 4
    assert resize({g["h"]: 6}, jointly=True) == [] and g["bn"].nout == 6
    g.validate()


def test_a_deferred_selection_is_applied_without_solving_again(solves):
    g = chain("dense", (4, 5, 6))
    l1, l3 = g["l1"], g["l3"]
    assert resize({l1: 7, l3: 3}, select=False) == []
    assert (l1.nout, l1.nout_org, l3.nout, l3.nout_org) == (7, 4, 3, 6)
    n = len(solves)
    assert apply_pending(g.pending())
    assert len(solves) == n and not g.pending() and (l1.nout_org, l3.nout_org) == (7, 3)
    g.validate()
    g(np.ones((2, 3)))


@pytest.mark.parametrize("between", ["edit", "resize elsewhere", "apply elsewhere",
                                     "other value_fn"])
def test_a_deferred_selection_serves_only_while_nothing_changed(solves, between):
    g, other = chain("dense"), chain("dense")
    resize({g["l2"]: 8}, select=False)
    value_fn = None
    if between == "edit":
        vertex(Dense(6, 2), g["l3"])                      # any new vertex changes the structure
    elif between == "resize elsewhere":
        resize({other["l2"]: 2}, select=False)            # a newer deferred resize supersedes
    elif between == "apply elsewhere":
        apply_pending([])
    else:
        value_fn = R.neuron_value                         # not the value function it was for
    n = len(solves)
    assert apply_pending(g.pending(), value_fn) and g["l2"].nout_org == 8
    assert len(solves) == n + 1


def test_the_deferred_selection_lives_only_with_the_pending_sizes(solves):
    g = chain("dense")
    resize({g["l2"]: 8}, lambda v: np.arange(v.nout_org, dtype=float), select=False)
    child = g.copy()
    n = len(solves)
    assert apply_pending(child.pending(), lambda v: None) and len(solves) == n + 1
    assert apply_pending(g.pending()) and all(v._deferred is None for v in g.vertices)
    pickle.loads(pickle.dumps(g))                 # nothing of the lambda value function is left


def test_pending_sizes_without_a_solution_are_dropped(monkeypatch):
    g = chain("dense")
    l2 = g["l2"]
    resize({l2: 8}, select=False)
    apply_pending([])                                     # the deferred selection is gone
    monkeypatch.setattr(R, "solve_selection", lambda *a, **k: None)
    assert not apply_pending(g.pending())
    assert l2.nout == l2.nout_org == 5 and not l2.pending and l2._deferred is None


def test_flush_pending_applies_a_graphs_pending_sizes(solves):
    g = chain("dense")
    assert flush_pending(g["l1"]) and not solves
    resize({g["l2"]: 2}, select=False)
    assert flush_pending(g["l1"]) and not g.pending() and g["l2"].nout_org == 2


def test_align_grows_the_smaller_side_first():
    g = chain("dense", (4, 5, 6))
    a, b = g["l1"], g["l2"]
    assert align(a, b) and a.nout == b.nout == 5
    g.validate()


def test_resize_fresh_fits_a_new_piece_but_never_what_it_is_built_on():
    g = chain("dense", (4, 5, 6))
    l1 = g["l1"]
    new = vertex(Dense(4, 9), l1)
    assert resize_fresh(new, 4, l1) and new.nout == 4 and l1.nout == 4
    bn = vertex(BatchNorm(4), l1)                         # size-invariant: tied to l1
    assert not resize_fresh(bn, 6, l1) and bn.nout == 4
