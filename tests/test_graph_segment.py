"""Segments: separable starts, shape changes, cut, implant with size alignment, bypass, swap."""

from __future__ import annotations

import numpy as np
import pytest
from graph_cases import chain, inception, residual

from tinyevo.graph import (
    SWAP_PROBES,
    CompGraph,
    Segment,
    bypass,
    implant,
    input_vertex,
    regraph,
    separable_starts,
    shape_change,
    swap_segments,
    vertex,
)
from tinyevo.layers import Conv, Dense, GlobalPool, MaxPool


def names(g: CompGraph) -> list[str]:
    return [v.name for v in g.vertices]


def dense_chain(prefix: str, n0: int, n1: int) -> CompGraph:
    """in -> a (n0) -> m (n1) -> b (2) -> out."""
    inp = input_vertex("in", 3)
    a = vertex(Dense(3, n0, "relu"), inp, name=f"{prefix}a")
    m = vertex(Dense(n0, n1, "relu"), a, name=f"{prefix}m")
    b = vertex(Dense(n1, 2, "relu"), m, name=f"{prefix}b")
    return CompGraph(inp, vertex(Dense(2, 3), b, name=f"{prefix}out"))


def test_separable_starts_chain_and_blocks():
    g = chain("dense", sizes=(4, 5, 6))
    assert [v.name for v in separable_starts(g["l3"])] == ["l1", "l2", "l3"]
    assert separable_starts(g["out"]) == [] and separable_starts(g["in"]) == []
    r = residual("conv2d")
    # Inside the residual block nothing but the whole block (from c1 or bn) separates at res.
    assert [v.name for v in separable_starts(r["res"])] == ["c1", "bn", "res"]
    assert [v.name for v in separable_starts(r["c3"])] == ["c2", "c3"]
    assert [v.name for v in separable_starts(r["bn"])] == ["c1", "bn"]
    inc = inception("conv2d")
    assert [v.name for v in separable_starts(inc["cat"])] == ["cat"]
    assert [v.name for v in separable_starts(inc["post"])][:2] == ["stem", "res"]


def test_segments_at_the_swap_probes_are_told_apart():
    inp = input_vertex("in", 3, "conv2d")
    a = vertex(Conv(3, 4, 3, padding="same"), inp, name="a")
    p = vertex(MaxPool(2), a, name="p")
    b = vertex(Conv(4, 4, 3, padding="same"), p, name="b")
    gp = vertex(GlobalPool(), b, name="gp")
    out = vertex(Dense(4, 2), gp, name="out", shielded=True)
    CompGraph(inp, out)
    def sc(s, e):
        return shape_change(s, e, SWAP_PROBES)

    assert sc(a, a) == sc(b, b)
    assert sc(a, p) != sc(b, b)
    assert sc(p, p) == sc(a, p)
    assert sc(a, p) == ("conv2d", "conv2d", ((32, 32), (33, 35), (50, 48)))
    assert sc(b, gp) == ("conv2d", "dense", ((), (), ()))
    assert sc(inp, a) is None                 # reads nothing


def test_cut_then_implant_back_restores_the_function():
    g = dense_chain("", 4, 5)
    x = np.random.default_rng(0).standard_normal((2, 3)).astype(np.float32)
    y = g(x)
    a, m, b = g["a"], g["m"], g["b"]
    seg = Segment.cut(m, m)
    assert seg.ins == [a] and seg.outs == [(b, [0])]
    assert (seg.in_sizes, seg.out_size, seg.start_nout) == ([4], 5, 5)
    assert a.outputs == () and m.inputs == () and m.outputs == ()
    assert b.inputs == (m,)                 # the slot that implant fills
    assert implant(g, seg, seg, np.random.default_rng(0))
    child = CompGraph(g.inputs, g.outputs)
    assert names(child) == ["in", "a", "m", "b", "out"]
    np.testing.assert_array_equal(child(x), y)


def test_implant_aligns_sizes_with_zero_weights():
    """m2 (4 -> 7) goes where m1 (6 -> 5) was: the two new inputs of each reader weigh zero."""
    g1, g2 = dense_chain("A.", 6, 5), dense_chain("B.", 4, 7)
    w_m2 = g2["B.m"].layer.params["weight"].copy()
    w_b1 = g1["A.b"].layer.params["weight"].copy()
    place = Segment.cut(g1["A.m"], g1["A.m"])
    seg = Segment.cut(g2["B.m"], g2["B.m"])
    assert implant(g1, place, seg, np.random.default_rng(0))
    child = CompGraph(g1.inputs, g1.outputs)
    assert names(child) == ["in", "A.a", "B.m", "A.b", "A.out"]
    w = child["B.m"].layer.params["weight"]
    assert w.shape == (7, 6)
    np.testing.assert_array_equal(w[:, :4], w_m2)
    assert not w[:, 4:].any()
    w = child["A.b"].layer.params["weight"]
    assert w.shape == (2, 7)
    np.testing.assert_array_equal(w[:, :5], w_b1)
    assert not w[:, 5:].any()


def test_bypass_rewires_the_readers():
    inp = input_vertex("in", 3)
    a = vertex(Dense(3, 4), inp, name="a")
    same = vertex(Dense(4, 4, init="identity"), a, name="same")
    b = vertex(Dense(4, 2), same, name="b")
    c = vertex(Dense(4, 2), same, name="c")
    bypass(same)
    assert same.inputs == () and same.outputs == ()
    assert a.outputs == (b, c) and b.inputs == (a,) and c.inputs == (a,)


@pytest.mark.parametrize("in_place", [(False, False), (True, True)])
def test_swap_segments_on_copies_or_in_place(in_place):
    g1, g2 = dense_chain("A.", 6, 5), dense_chain("B.", 4, 7)
    before, moved = (names(g1), names(g2)), g2["B.m"]
    side1, side2 = swap_segments(g1, (g1["A.m"], g1["A.m"]), g2, (g2["B.m"], g2["B.m"]),
                                 np.random.default_rng(0), in_place)
    (c1, e1), (c2, e2) = side1, side2
    assert names(c1) == ["in", "A.a", "B.m", "A.b", "A.out"]
    assert names(c2) == ["in", "B.a", "A.m", "B.b", "B.out"]
    assert e1 is c1["B.m"] and e2 is c2["A.m"]
    for c in (c1, c2):
        c.validate()
    if in_place == (False, False):
        assert (names(g1), names(g2)) == before and e1 is not moved    # parents untouched
    else:
        assert e1 is moved                                  # the very vertex moved


def test_swap_segments_in_place_is_all_or_nothing(monkeypatch):
    from tinyevo.graph import segment

    g1, g2 = dense_chain("A.", 6, 5), dense_chain("B.", 4, 7)
    before = [(v, v.inputs, v.outputs) for g in (g1, g2) for v in g.vertices]
    monkeypatch.setattr(segment, "_align", lambda *a, **k: False)
    assert swap_segments(g1, (g1["A.m"], g1["A.m"]), g2, (g2["B.m"], g2["B.m"]),
                         np.random.default_rng(0), (True, False)) == (None, None)
    assert [(v, v.inputs, v.outputs) for v, _, _ in before] == before
    g1.validate()


def test_swap_segments_rejects_an_end_outside_its_graph():
    g1, g2 = dense_chain("A.", 6, 5), dense_chain("B.", 4, 7)
    with pytest.raises(ValueError, match="end at a vertex of its graph"):
        swap_segments(g1, (g2["B.m"], g2["B.m"]), g2, (g2["B.m"], g2["B.m"]),
                      np.random.default_rng(0))


def test_regraph_finds_the_graph_and_orders_like():
    g = inception("dense")
    r = regraph(g["p1"], like=g)
    assert names(r) == names(g)
    with pytest.raises(TypeError, match="regraph takes a Vertex"):
        regraph(g)
