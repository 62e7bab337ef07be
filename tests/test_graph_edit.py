"""Structural edits: insert, remove, edges, kernel size, activation; failures change nothing."""

import numpy as np
import pytest
from graph_cases import chain, conv, data, inception, randomise, residual, same_structure, structure

from tinyevo import backend as B
from tinyevo.graph import (
    CompGraph,
    add,
    add_edge,
    change_kernel_size,
    change_nout,
    concat,
    detach,
    input_vertex,
    insert_after,
    insert_merge_before,
    mean_values,
    remove_edge,
    remove_vertex,
    set_activation,
    value_cache,
    vertex,
    zero_output,
)
from tinyevo.layers import BatchNorm, Conv, Dense, GlobalPool, MaxPool


@pytest.fixture
def f64():
    B.set_floatx(np.float64)


# ---------------------------------------------------------------------- insert

def _identity(v):
    if v.kind == "dense":
        return vertex(Dense(v.nout, v.nout, "identity", init="identity"), v)
    return vertex(conv(v.nout, v.nout, v.kind, "identity", init="identity"), v)


def _identity_bn(v):
    bn = BatchNorm(v.nout)
    bn.state["running_var"][...] = 1.0 - bn.eps                  # matching statistics
    return vertex(bn, v)


@pytest.mark.parametrize("kind", ["dense", "conv1d", "conv2d"])
def test_inserting_identity_layers_keeps_the_function(f64, kind):
    g = inception(kind)
    randomise(g)
    x = data(g)
    y0 = g(x)
    n = len(g)
    for v in [v for v in g.vertices if not v.is_output]:
        assert insert_after(v, _identity)
        assert insert_after(v, _identity_bn)
    g.validate()
    assert len(g) == n + 2 * (n - 1)
    np.testing.assert_allclose(g(x), y0, atol=1e-5, rtol=0)


def test_insert_a_zero_residual_block_keeps_the_function(f64):
    g = residual("conv2d")
    randomise(g)
    x = data(g)
    y0 = g(x)

    def block(v):
        inner = vertex(conv(v.nout, 3, "conv2d"), v)
        return add(v, vertex(conv(3, v.nout, "conv2d", "identity", init="zeros"), inner))

    assert insert_after(g["c2"], block)
    g.validate()
    np.testing.assert_allclose(g(x), y0, atol=1e-5, rtol=0)
    assert change_nout(g, {g["c2"]: 2})                         # the new block follows
    np.testing.assert_allclose(g(x), y0, atol=1e-5, rtol=0)


def test_insert_after_the_output_makes_the_new_vertex_the_output():
    g = chain("dense", (4,))
    old = g.outputs[0]
    assert insert_after(old, lambda v: vertex(Dense(3, 3, "relu"), v, name="new_out"))
    assert g.outputs[0].name == "new_out" and g.outputs[0].is_output and not old.is_output
    assert [v.name for v in g.vertices][-1] == "new_out"
    assert g(np.ones((2, 3), np.float32)).shape == (2, 3)
    assert g.copy().outputs[0].name == "new_out"


def test_insert_after_rejects_bad_factories_without_change():
    g = chain("conv2d", (4,))
    before = structure(g)
    with pytest.raises(ValueError, match="nout=4"):
        insert_after(g["l1"], lambda v: vertex(conv(4, 5, "conv2d"), v))
    with pytest.raises(ValueError, match="dense data"):
        insert_after(g["l1"], lambda v: vertex(GlobalPool(), v))
    with pytest.raises(ValueError, match="must read"):
        insert_after(g["l1"], lambda v: g["l1"] and vertex(conv(3, 4, "conv2d"), g.inputs[0]))
    with pytest.raises(ValueError, match="Vertex"):
        insert_after(g["l1"], lambda v: None)
    with pytest.raises(ZeroDivisionError):
        insert_after(g["l1"], lambda v: 1 / 0)
    with pytest.raises(TypeError, match="callable"):
        insert_after(g["l1"], "dense")
    assert same_structure(before, structure(g))
    assert g["l1"].outputs == (g["gpool"],)


@pytest.mark.parametrize("op", ["concat", "add"])
def test_insert_merge_before_serves_only_its_target_and_keeps_the_function(f64, op):
    g = inception("dense")
    randomise(g)
    x = data(g)
    y0 = g(x)
    stem, p1 = g["stem"], g["p1"]
    merge = insert_merge_before(p1, op)
    assert merge.inputs == (stem,) and p1.inputs == (merge,)
    assert p1 not in stem.outputs and {"p2a", "p3", "res"} <= {o.name for o in stem.outputs}
    g.validate()
    np.testing.assert_allclose(g(x), y0, atol=1e-12, rtol=0)
    assert add_edge(g["p3"] if op == "concat" else stem, merge)
    assert not add_edge(g["post"], merge)                 # post reads merge: a cycle
    g.validate()
    with pytest.raises(ValueError, match="'concat' or 'add'"):
        insert_merge_before(p1, "mul")
    with pytest.raises(ValueError, match="not a layer vertex"):
        insert_merge_before(merge, "add")


def test_detach_unhooks_fresh_vertices():
    g = chain("dense")
    l1 = g["l1"]
    before = structure(g)
    a = vertex(Dense(4, 3), l1)
    b = vertex(BatchNorm(3), a)
    detach([a, b])
    assert l1.outputs == (g["l2"],) and same_structure(before, structure(g))


def test_zero_output_zeroes_the_last_parameter_layers_before_a_vertex(f64):
    inp = input_vertex("in", 3)
    h = vertex(Dense(3, 4, "relu"), inp, name="h")
    a = vertex(Dense(4, 4), h, name="a")
    b = vertex(BatchNorm(4), h, name="b")
    cat = concat(vertex(BatchNorm(4), a), b, name="cat")
    out = vertex(Dense(8, 2), cat)
    g = CompGraph(inp, out)                    # fresh statistics: a BatchNorm maps 0 to 0
    assert not zero_output(h, h)
    assert zero_output(cat, h)                 # a's weights, b's scale and shift: cat gives 0
    np.testing.assert_allclose(g(data(g)), np.broadcast_to(out.layer.params["bias"], (4, 2)))
    assert not np.all(h.layer.params["weight"] == 0)
    pool = vertex(MaxPool(2), input_vertex("x", 2, "conv1d"))
    assert not zero_output(pool, pool.inputs[0])          # nothing with parameters on the way


def test_mean_values_and_the_value_cache():
    g = residual("dense")
    means, mean = mean_values(g["c1"])
    assert set(means) == set(g.vertices) and means[g["res"]] is None
    known = [m for m in means.values() if m is not None]
    assert mean == pytest.approx(np.mean(known))
    with value_cache():
        with value_cache():                                # nested: one cache
            first = mean_values(g["c1"])
        assert mean_values(g["c1"]) == first
    assert mean_values(g["c1"]) == (means, mean)


# ---------------------------------------------------------------------- remove

def test_remove_vertex_aligns_sizes_growing_the_smaller_side():
    g = chain("dense", (4, 7, 5))
    assert remove_vertex(g["l2"])                    # l1 (4) grows to 7 for l3
    assert [v.name for v in g.vertices] == ["in", "l1", "l3", "out"]
    assert g["l1"].nout == 7 and g["l3"].nin == [7]
    g.validate()
    assert remove_vertex(g["l3"])                    # l3 (5) is smaller than l1: grows
    assert g["l1"].nout == 7 and g["out"].nin == [7]
    g.validate()


def test_remove_vertex_shrinks_when_the_smaller_side_cannot_grow():
    inp = input_vertex("in", 4)
    h = vertex(Dense(4, 6), inp, name="h")
    g = CompGraph(inp, vertex(Dense(6, 2), h))
    assert remove_vertex(h)                          # the input is fixed: h shrinks to 4
    assert g.outputs[0].nin == [4] and len(g) == 2
    g.validate()


def test_remove_invariant_vertices():
    g = residual("conv2d")
    assert remove_vertex(g["bn"])
    assert g["c2"].inputs == (g["c1"],) and g["res"].inputs == (g["c1"], g["c3"])
    g.validate()
    assert g(data(g).astype(np.float32)).shape == (4, 3)


def test_remove_vertex_refuses_without_change():
    g = inception("conv2d")
    before = structure(g)
    assert not remove_vertex(g.inputs[0])
    assert not remove_vertex(g["out"])
    assert not remove_vertex(g["cat"])                          # three inputs
    assert not remove_vertex(g["gpool"])                        # conv -> dense
    assert same_structure(before, structure(g))


def test_remove_vertex_refuses_a_size_cycle():
    # u -> v(conv) ; cat = concat(v, w) ; add(cat, u): removing v would need |u| = |u| + |w|.
    inp = input_vertex("in", 3)
    u = vertex(Dense(3, 6), inp, name="u")
    v = vertex(Dense(6, 4), u, name="v")
    w = vertex(Dense(6, 2), u, name="w")
    cat = concat(v, w, name="cat")
    res = add(cat, u, name="res")
    g = CompGraph(inp, vertex(Dense(6, 2), res))
    before = structure(g)
    assert not remove_vertex(v)
    assert same_structure(before, structure(g))
    g.validate()


# ---------------------------------------------------------------------- edges

@pytest.mark.parametrize("kind", ["dense", "conv2d"])
def test_add_edge_into_concat_keeps_the_function(f64, kind):
    g = inception(kind)
    randomise(g)
    x = data(g)
    y0 = g(x)
    assert add_edge(g["p2a"], g["cat"])                  # cat is tied to stem through res
    assert g["cat"].nin == [2, 3, 1, 3] and g["stem"].nout == 9 and g["post"].nin == [9]
    g.validate()
    np.testing.assert_allclose(g(x), y0, atol=1e-5, rtol=0)
    assert add_edge(g.inputs[0], g["cat"])
    np.testing.assert_allclose(g(x), y0, atol=1e-5, rtol=0)


def test_add_edge_into_add_aligns_sizes():
    g = chain("conv2d", (4, 6))
    inp = g.inputs[0]
    assert insert_after(g["l2"], lambda v: add(v, name="res"))  # a one-input add to connect
    res = g["res"]
    assert add_edge(g["l1"], res)                           # l1 (4) grows to 6
    assert g["l1"].nout == 6 and res.nin == [6, 6] and g["l2"].nin == [6]
    g.validate()
    assert g(np.ones((2, 3, 5, 5), np.float32)).shape == (2, 3)
    assert add_edge(inp, res)                                # the input is fixed: res shrinks
    assert res.nin == [3, 3, 3] and g["l1"].nout == 3 and g["out"].nin == [3]
    g.validate()


def test_add_edge_refuses_without_change():
    g = inception("conv2d")
    before = structure(g)
    assert not add_edge(g["post"], g["cat"])                 # post reads cat: a cycle
    assert not add_edge(g["p1"], g["p2"])                    # p2 is a layer vertex
    assert not add_edge(g["gpool"], g["cat"])                # dense data into conv data
    assert not add_edge(g["cat"], g["cat"])
    assert same_structure(before, structure(g))
    with pytest.raises(TypeError):
        add_edge(g["p1"], "cat")


def test_add_edge_fails_when_tied_vertices_cannot_grow():
    inp = input_vertex("in", 4)
    a = vertex(Dense(4, 2), inp, name="a")
    b = vertex(Dense(4, 2), inp, name="b")
    cat = concat(a, b, name="cat")
    res = add(cat, inp, name="res")                          # cat tied to the input
    g = CompGraph(inp, vertex(Dense(4, 2), res))
    before = structure(g)
    assert not add_edge(a, cat)
    assert same_structure(before, structure(g))


def test_remove_edge_from_concat_cuts_the_readers():
    inp = input_vertex("in", 3)
    a, b, c = (vertex(Dense(3, n), inp, name=k) for k, n in (("a", 2), ("b", 3), ("c", 1)))
    cat = concat(a, b, c, name="cat")
    g = CompGraph(inp, [vertex(Dense(6, 2), cat, name="o1"), vertex(Dense(3, 1), b)])
    w = g["o1"].layer.params["weight"].copy()
    assert remove_edge(b, cat)
    assert cat.nin == [2, 1] and g["o1"].nin == [3]
    np.testing.assert_array_equal(g["o1"].layer.params["weight"], w[:, [0, 1, 5]])
    g.validate()


def test_add_then_remove_an_edge_restores_the_graph(f64):
    g = inception("conv1d")
    randomise(g)
    x = data(g)
    y0 = g(x)
    sizes = [v.nout for v in g.vertices]
    assert add_edge(g["p2a"], g["cat"])
    assert remove_edge(g["p2a"], g["cat"])                   # stem shrinks back with cat
    assert [v.nout for v in g.vertices] == sizes
    np.testing.assert_allclose(g(x), y0, atol=1e-12)


def test_remove_edge_from_add_and_refusals():
    g = residual("conv1d")
    before = structure(g)
    assert not remove_edge(g["c3"], g["res"])                # nothing else reads c3
    assert not remove_edge(g["c1"], g["c2"])                 # not an edge
    assert not remove_edge(g["bn"], g["c2"])                 # a layer needs its input
    assert same_structure(before, structure(g))
    assert add_edge(g["c1"], g["res"])
    assert remove_edge(g["bn"], g["res"])
    assert g["res"].inputs == (g["c3"], g["c1"])
    g.validate()


# ---------------------------------------------------------------------- kernel and activation

@pytest.mark.parametrize("padding", ["same", 1])
def test_growing_the_kernel_keeps_the_function(f64, padding):
    inp = input_vertex("in", 2, "conv2d")
    c = vertex(Conv(2, 3, (3, 3), padding=padding, activation="relu"), inp, name="c")
    g = CompGraph(inp, vertex(GlobalPool(), vertex(MaxPool(2), c)))
    randomise(g)
    x = np.random.default_rng(0).standard_normal((2, 2, 6, 6))
    y0 = g(x)
    assert change_kernel_size(c, (5, 5))
    assert c.layer.kernel_size == (5, 5) and c.layer.params["weight"].shape == (3, 2, 5, 5)
    np.testing.assert_allclose(g(x), y0, atol=1e-12)
    y, back = g.forward(x, train=True)
    back(np.ones_like(y))
    assert c.layer.grads["weight"].shape == (3, 2, 5, 5)


def test_shrinking_the_kernel_keeps_the_centre():
    inp = input_vertex("in", 2, "conv1d")
    c = vertex(Conv(2, 3, 5, padding="same", ndim=1), inp, name="c")
    CompGraph(inp, c)
    w = c.layer.params["weight"].copy()
    assert change_kernel_size(c, 3)
    np.testing.assert_array_equal(c.layer.params["weight"], w[..., 1:4])
    w = c.layer.params["weight"].copy()
    w[..., 0] = 0.0
    c.layer.params["weight"][...] = w
    assert change_kernel_size(c, 2)                              # odd cut: drop the light edge
    np.testing.assert_array_equal(c.layer.params["weight"], w[..., 1:])


def test_kernel_change_refusals():
    g = chain("conv2d", (4,))
    assert not change_kernel_size(g["out"], 3)
    inp = input_vertex("in", 2, "conv2d")
    c = vertex(Conv(2, 3, (3, 3), padding=0), inp)               # no padding to give back
    CompGraph(inp, c)
    assert not change_kernel_size(c, (1, 1))
    assert c.layer.kernel_size == (3, 3)
    with pytest.raises(ValueError, match="positive int"):
        change_kernel_size(g["l1"], (3, 0))


def test_set_activation():
    g = residual("dense")
    assert set_activation(g["c1"], "selu") and g["c1"].layer.activation == "selu"
    assert set_activation(g["bn"], "tanh")
    assert not set_activation(g["res"], "relu")
    assert not set_activation(g.inputs[0], "relu")
    with pytest.raises(ValueError, match="unknown activation"):
        set_activation(g["c1"], "swoosh")


def test_concat_of_one_input_and_add_of_one_input_are_identities():
    inp = input_vertex("in", 3)
    h = vertex(Dense(3, 4), inp)
    g = CompGraph(inp, vertex(Dense(4, 2), add(concat(h))))
    x = np.ones((2, 3), np.float32)
    y, back = g.forward(x, train=True)
    back(np.ones_like(y))
    assert y.shape == (2, 2)
