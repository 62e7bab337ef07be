"""Property tests: random graphs under random sequences of size changes and structural edits
always validate, compute with the right shapes, keep the function where they promise to, and
leave no trace when they fail."""

import json

import numpy as np
from graph_cases import conv, data, head, layer, same_structure, structure
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tinyevo
from tinyevo import backend as B
from tinyevo.graph import (
    CompGraph,
    add,
    add_edge,
    change_kernel_size,
    change_nout,
    concat,
    input_vertex,
    insert_after,
    remove_edge,
    remove_vertex,
    select_neurons,
    set_activation,
    vertex,
)
from tinyevo.layers import BatchNorm, Conv, Dense, Dropout, MaxPool

BLOCKS = ("layer", "bn", "res", "fork", "pool")
OPS = ("grow", "nout", "defer", "insert", "remove", "add_edge", "remove_edge", "kernel", "act")
PROPS = settings(max_examples=40, deadline=None,
                 suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@st.composite
def recipes(draw):
    kind = draw(st.sampled_from(("dense", "conv1d", "conv2d")))
    blocks = draw(st.lists(st.tuples(st.sampled_from(BLOCKS), st.integers(1, 5),
                                     st.integers(1, 3)), min_size=1, max_size=4))
    ops = draw(st.lists(st.tuples(st.sampled_from(OPS), st.integers(0, 999),
                                  st.integers(0, 999), st.integers(1, 3)),
                        min_size=1, max_size=6))
    return kind, blocks, ops


def build(kind, blocks):
    inp = input_vertex("in", 2, kind)
    v = inp
    for i, (block, n, paths) in enumerate(blocks):
        if block == "layer":
            v = vertex(layer(v.nout, n, kind), v, name=f"b{i}")
        elif block == "bn":
            v = vertex(BatchNorm(v.nout, "relu"), v, name=f"b{i}")
        elif block == "res":
            inner = vertex(layer(v.nout, n, kind), v, name=f"b{i}in")
            v = add(v, vertex(layer(n, v.nout, kind, "identity"), inner), name=f"b{i}")
        elif block == "fork":
            v = concat(*(vertex(layer(v.nout, n + j, kind), v, name=f"b{i}p{j}")
                         for j in range(paths)), name=f"b{i}")
        else:
            pool = Dropout(0.0) if kind == "dense" else MaxPool(3, stride=1, padding=1)
            v = vertex(pool, v, name=f"b{i}")
    return CompGraph(inp, head(v, kind))


def identity_after(v, flavour):
    if flavour == 1:
        bn = BatchNorm(v.nout)
        bn.state["running_var"][...] = 1.0 - bn.eps
        return vertex(bn, v)
    if v.kind == "dense":
        return vertex(Dense(v.nout, v.nout, init="identity"), v)
    return vertex(conv(v.nout, v.nout, v.kind, "identity", init="identity"), v)


def apply(g, op, i, j, k):
    """Run one edit; returns (result, whether the function must be unchanged on success)."""
    vs = [v for v in g.vertices if not v.is_input]
    v = vs[i % len(vs)]
    merges = [m for m in g.vertices if m.op in ("concat", "add", "mul")]
    if op == "grow":
        if v.is_output:
            return None, False
        return change_nout(g, {v: k}), True
    if op == "nout":
        if v.is_output:                                    # the GA shields the output
            return None, False
        return change_nout(g, {v: -k if i % 2 else k}), False
    if op == "defer":                  # a failed half still leaves the other half applied
        w = vs[j % len(vs)]
        if v.is_output or w.is_output:
            return None, False
        ok = change_nout(g, {v: k}, select=False)
        ok = change_nout(g, {w: -1}, select=False) and ok
        return select_neurons(g) and ok, False
    if op == "insert":
        if v.is_output:
            return None, False
        return insert_after(v, lambda u: identity_after(u, k % 2)), True
    if op == "remove":
        return remove_vertex(v), False
    if op == "add_edge":
        if not merges:
            return None, False
        dst = merges[j % len(merges)]
        src = g.vertices[i % len(g.vertices)]
        return add_edge(src, dst), dst.op == "concat"
    if op == "remove_edge":
        if not merges:
            return None, False
        dst = merges[j % len(merges)]
        return remove_edge(dst.inputs[i % len(dst.inputs)], dst), False
    if op == "kernel":
        convs = [u for u in vs if isinstance(u.layer, Conv)]
        if not convs:
            return None, False
        return change_kernel_size(convs[i % len(convs)], 2 * k - 1), False
    return set_activation(v, ("relu", "elu", "selu", "tanh")[j % 4]), False


def check_runs(g, x):
    """Validate, train one step's forward/backward, and return the inference output (running
    statistics restored, so that function-preserving edits compare like with like)."""
    g.validate()
    y_eval = g(x)
    stats = [(lay, {k: a.copy() for k, a in lay.state.items()}) for lay in g.layers()]
    y, back = g.forward(x, train=True)
    assert y.shape == y_eval.shape == (len(x), 3)
    assert back(np.ones_like(y), need_dx=True).shape == x.shape
    for lay, saved in stats:
        lay.state.update(saved)
    return y_eval


@PROPS
@given(recipes())
def test_random_edits_keep_graphs_valid_and_failures_leave_no_trace(recipe):
    B.set_floatx(np.float64)
    tinyevo.seed(0)
    kind, blocks, ops = recipe
    g = build(kind, blocks)
    x = data(g, batch=2)
    y = check_runs(g, x)
    for op, i, j, k in ops:
        before = structure(g)
        ok, preserving = apply(g, op, i, j, k)
        if ok is None:
            continue
        if not ok and op != "defer":
            assert same_structure(before, structure(g)), op
            continue
        y_new = check_runs(g, x)
        if preserving and ok:
            np.testing.assert_allclose(y_new, y, atol=1e-5, rtol=0, err_msg=op)
        y = y_new
    assert not g.pending()


@PROPS
@given(recipes())
def test_copies_and_specs_of_edited_graphs_compute_the_same(recipe):
    B.set_floatx(np.float64)
    tinyevo.seed(1)
    kind, blocks, ops = recipe
    g = build(kind, blocks)
    for op, i, j, k in ops[:3]:
        apply(g, op, i, j, k)
    x = data(g, batch=2)
    y = g(x)
    c = g.copy(rename="_c")
    np.testing.assert_array_equal(c(x), y)
    c.validate()
    h = CompGraph.from_spec(json.loads(json.dumps(g.to_spec())),
                            {k: B.to_numpy(a) for k, a in g.arrays().items()})
    np.testing.assert_array_equal(h(x), y)
    # The copy is independent: editing it leaves the original alone.
    before = structure(g)
    for v in c.vertices:
        if not v.is_input and not v.is_output:
            change_nout(c, {v: 1})
            break
    assert same_structure(before, structure(g))
