"""The graph's topological order and shape tracer: what CompGraph and the GA's checks use."""

import pytest
from graph_cases import conv, inception, residual

from tinyevo.graph import (
    PROBES,
    CompGraph,
    add,
    concat,
    input_vertex,
    insertion_keeps_shapes,
    layer_spatial,
    removal_keeps_shapes,
    shape_change,
    shapes_kept,
    toposort,
    trace,
    vertex,
)
from tinyevo.layers import BatchNorm, Conv, Dense, GlobalPool, MaxPool


def fork_with_pool():
    """in -> c -> [p (pool) -> up (conv)] and [q (conv) -> qp (pool)] -> add -> head."""
    inp = input_vertex("in", 3, "conv2d")
    c = vertex(conv(3, 4, "conv2d"), inp, name="c")
    p = vertex(MaxPool(2), c, name="p")
    up = vertex(conv(4, 4, "conv2d"), p, name="up")
    q = vertex(conv(4, 4, "conv2d"), c, name="q")
    qp = vertex(MaxPool(2), q, name="qp")
    s = add(up, qp, name="s")
    pool = vertex(GlobalPool("mean"), s, name="gpool")
    return CompGraph(inp, vertex(Dense(4, 2), pool, name="out"))


def test_toposort_puts_every_vertex_after_its_inputs_and_matches_the_graph():
    g = inception("conv2d")
    order = toposort(g.outputs)
    assert order == g.vertices
    pos = {v: i for i, v in enumerate(order)}
    assert all(pos[u] < pos[v] for v in order for u in v.inputs)
    assert [v.name for v in toposort([g["p2"]])] == ["in", "stem", "p2a", "p2"]


def test_toposort_raises_on_a_cycle():
    inp = input_vertex("in", 3)
    a = vertex(Dense(3, 3), inp, name="a")
    m = add(a, name="m")
    b = vertex(Dense(3, 3), m, name="b")
    m._inputs.append(b)                      # a cycle no edit would make
    b._outputs.append(m)
    with pytest.raises(ValueError, match="cycle"):
        toposort([b])


def test_layer_spatial_is_what_the_layers_do():
    assert layer_spatial(MaxPool(2), (9, 8)) == (4, 4)
    assert layer_spatial(Conv(3, 4, 3, stride=2, padding="same"), (9,)) == (5,)
    assert layer_spatial(GlobalPool("mean"), (9, 8)) == ()
    assert layer_spatial(BatchNorm(3), (9, 8)) == (9, 8)
    assert layer_spatial(None, (7,)) == (7,)          # a merge


def test_trace_matches_compgraph_shapes_and_marks_broken_merges():
    g = fork_with_pool()
    order = g.vertices
    s = trace(order, {g.inputs[0]: (16, 12)})
    assert {v: (v.nout, *s[v]) for v in order} == g.shapes((16, 12))
    assert trace(order, 64)[g["s"]] == (32, 32) and trace(order, 45)[g["s"]] == (22, 22)
    # as if s read c instead of up: a merge of (64, 64) and (32, 32) makes no sense ...
    broken = trace(order, 64, replace={g["up"]: g["c"]}, readers={g["s"]})
    assert broken[g["s"]] is None and broken[g["out"]] is None
    # ... while the lenient trace (CompGraph.shapes') takes the first input's shape
    lenient = trace(order, 64, replace={g["up"]: g["c"]}, readers={g["s"]}, strict=False)
    assert lenient[g["s"]] == (64, 64)


def test_trace_follows_a_fresh_piece_that_replaces_a_vertex():
    g = fork_with_pool()
    c = g["c"]
    piece = vertex(MaxPool(2), c, name="fresh")      # built on c, read by nothing yet
    old = [v for v in g.vertices]
    s = trace(old, 64, replace={c: piece}, readers={g["q"]})
    assert s[piece] == (32, 32) and s[g["qp"]] == (16, 16) and s[g["s"]] is None


def test_removal_keeps_shapes_refuses_a_pool_in_one_path_of_a_fork():
    g = fork_with_pool()
    assert not removal_keeps_shapes(g["p"])
    assert not removal_keeps_shapes(g["qp"])
    assert removal_keeps_shapes(g["up"]) and removal_keeps_shapes(g["q"])
    r = residual("conv2d")
    assert all(removal_keeps_shapes(v) for v in r.vertices if not v.is_input and v.kind != "dense")
    assert not removal_keeps_shapes(r["gpool"])           # the head would read conv data


def test_insertion_keeps_shapes_refuses_a_pool_in_one_path_of_a_fork():
    g = fork_with_pool()
    q = g["q"]
    assert insertion_keeps_shapes(q, vertex(BatchNorm(4), q))
    assert not insertion_keeps_shapes(q, vertex(MaxPool(2), q))
    s = g["s"]                                 # after the join, a pool changes every path alike
    assert insertion_keeps_shapes(s, vertex(MaxPool(2), s))
    inp = input_vertex("x", 3)
    h = vertex(Dense(3, 3), inp)
    assert insertion_keeps_shapes(h, vertex(Dense(3, 3), h))            # dense data


def test_shapes_kept_skips_probes_where_the_graph_is_already_broken():
    inp = input_vertex("in", 2, "conv1d")
    a = vertex(MaxPool(2), inp, name="a")
    cat = concat(inp, a, name="cat")           # never consistent: (p,) next to (p // 2,)
    g = CompGraph(inp, vertex(Dense(4, 1), vertex(GlobalPool("mean"), cat)))
    assert all(trace(g.vertices, p)[cat] is None for p in PROBES)
    assert shapes_kept(g.vertices, {a: inp})


def test_shape_change_maps_a_path_of_first_inputs():
    g = fork_with_pool()
    probes = {"conv2d": [(64, 64), (67, 71)]}
    assert shape_change(g["c"], g["up"], probes) == ("conv2d", "conv2d", ((32, 32), (33, 35)))
    assert shape_change(g["q"], g["gpool"], probes) is None     # gpool reads s, whose first
    assert shape_change(g["p"], g["gpool"], probes) == ("conv2d", "dense", ((), ()))  # is up
    assert shape_change(g.inputs[0], g["c"], probes) is None     # an input reads nothing
