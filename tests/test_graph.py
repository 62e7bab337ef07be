"""CompGraph and vertices: construction, errors, forward/backward, copy, specs."""

import json
import pickle

import numpy as np
import pytest
from graph_cases import BUILDERS, SPATIAL, chain, data, inception, randomise, residual

import tinyevo as te
from tinyevo import backend as B
from tinyevo.graph import CompGraph, add, concat, copy, input_vertex, mul, vertex
from tinyevo.layers import BatchNorm, Conv, Dense, Flatten, GlobalPool, MaxPool
from tinyevo.layers.base import own
from tinyevo.optimizers import Adam


@pytest.fixture
def f64():
    B.set_floatx(np.float64)


# ---------------------------------------------------------------------- construction

def test_chain_sizes_order_traits():
    g = chain("dense", (4, 5))
    assert [v.name for v in g.vertices] == ["in", "l1", "l2", "out"]
    assert [v.nout for v in g.vertices] == [3, 4, 5, 3]
    assert g["l2"].nin == [4]
    assert [v.trait for v in g.vertices] == ["immutable", "absorb", "absorb", "absorb"]
    assert g["l1"].outputs == (g["l2"],) and g["l2"].inputs == (g["l1"],)
    assert g.inputs[0].is_input and g.outputs[0].is_output and g.outputs[0].shielded
    assert len(g) == 4 and len(list(g.layers())) == 3
    assert g.nparams() == 3 * 4 + 4 + 4 * 5 + 5 + 5 * 3 + 3


def test_kinds_and_traits_of_merges_and_layers():
    inp = input_vertex("img", 3, "conv2d")
    c = vertex(Conv(3, 4, (3, 3), padding="same"), inp)
    bn = vertex(BatchNorm(4), c)
    p = vertex(MaxPool(2), bn)
    cat = concat(p, p)
    a = add(p, p)
    m = mul(p, p)
    gp = vertex(GlobalPool(), cat)
    assert (c.kind, bn.kind, gp.kind) == ("conv2d", "conv2d", "dense")
    assert (bn.trait, p.trait, cat.trait, a.trait, m.trait) == (
        "invariant", "invariant", "stack", "invariant", "invariant")
    assert cat.nout == 8 and a.nout == 4 and gp.nout == 8 and p.nout == 4


@pytest.mark.parametrize("make, match", [
    (lambda i: vertex(Dense(4, 2), i), "nin=3"),
    (lambda i: vertex(Conv(3, 2, (3, 3)), i), "'conv2d'"),
    (lambda i: add(i, vertex(Dense(3, 2), i)), "equal sizes"),
    (lambda i: concat(i, input_vertex("c", 3, "conv1d")), "same kind"),
    (lambda i: vertex(Dense(3, 2), i, i), "exactly one input"),
    (lambda i: vertex(Dense(3, 2)), "exactly one input"),
    (lambda i: concat(), "at least one"),
    (lambda i: vertex(GlobalPool(), i), "conv1d"),
])
def test_construction_errors_say_what_and_how(make, match):
    inp = input_vertex("in", 3, "dense")
    with pytest.raises(ValueError, match=match):
        make(inp)


def test_flatten_of_conv_data_points_to_global_pool():
    inp = input_vertex("in", 3, "conv2d")
    with pytest.raises(ValueError, match="GlobalPool"):
        vertex(Flatten(), inp)


def test_bad_arguments_raise_type_errors():
    inp = input_vertex("in", 3)
    with pytest.raises(TypeError, match="tinyevo layer"):
        vertex("dense", inp)
    with pytest.raises(TypeError, match="Vertex"):
        vertex(Dense(3, 2), np.zeros(3))
    with pytest.raises(ValueError, match="kind"):
        input_vertex("x", 3, "image")
    with pytest.raises(ValueError, match="positive int"):
        input_vertex("x", 0)
    with pytest.raises(TypeError, match="Vertex"):
        CompGraph(inp, "out")


def test_graph_errors_dangling_and_unlisted_inputs():
    a, b = input_vertex("a", 3), input_vertex("b", 3)
    out = vertex(Dense(3, 2), a)
    with pytest.raises(ValueError, match="not connected"):
        CompGraph([a, b], out)
    merged = vertex(Dense(3, 2), add(a, b))
    with pytest.raises(ValueError, match="not among the graph's inputs"):
        CompGraph(a, merged)
    with pytest.raises(ValueError, match="input_vertex"):
        CompGraph(out, merged)


def test_validate_catches_a_shared_layer_and_broken_sizes():
    inp = input_vertex("in", 3)
    d = Dense(3, 3)
    g = CompGraph(inp, vertex(d, vertex(d, inp)))
    with pytest.raises(ValueError, match="share one layer"):
        g.validate()
    g = chain()
    g.validate()
    g["l2"].layer.select_in([0, 1])                      # sizes no longer agree
    with pytest.raises(ValueError, match="l2"):
        g.validate()


# ---------------------------------------------------------------------- compute

@pytest.mark.parametrize("kind", ["dense", "conv1d", "conv2d"])
@pytest.mark.parametrize("build", sorted(BUILDERS))
def test_forward_backward_shapes(xp, kind, build):
    g = BUILDERS[build](kind)
    x = xp.asarray(data(g).astype(np.float32))
    y = g(x)
    assert y.shape == (4, 3) and y.dtype == np.float32
    y2, back = g.forward(x, train=True)
    assert back(xp.ones_like(y2), need_dx=False) is None
    assert back(xp.ones_like(y2)).shape == x.shape
    assert all(float(xp.abs(lay.grads["weight"]).sum()) > 0 for lay in g.layers()
               if "weight" in lay.grads)


def test_input_checks_are_clear():
    g = chain("conv2d")
    with pytest.raises(ValueError, match=r"\(N, C, H, W\) with 3 at axis 1"):
        g(np.ones((2, 4, 5, 5)))
    with pytest.raises(ValueError, match="1 input array"):
        g(np.ones((2, 3, 5, 5)), np.ones((2, 3, 5, 5)))
    a, b = input_vertex("a", 3, "conv2d"), input_vertex("b", 3, "conv2d")
    g2 = CompGraph([a, b], add(a, b))
    with pytest.raises(ValueError, match="equal shapes"):
        g2(np.ones((2, 3, 5, 5)), np.ones((2, 3, 4, 4)))


def _graph_for_gradcheck(kind):
    """Fan-out, concat, add and mul all in one graph."""
    inp = input_vertex("in", 2, kind)
    lay = (lambda i, o, a: Dense(i, o, a)) if kind == "dense" else \
        (lambda i, o, a: Conv(i, o, (3,) * (1 if kind == "conv1d" else 2), padding="same",
                              activation=a))
    a = vertex(lay(2, 3, "tanh"), inp, name="a")
    b = vertex(lay(3, 3, "elu"), a, name="b")
    c = vertex(lay(3, 2, "identity"), a, name="c")
    s = add(a, b, name="s")
    m = mul(s, b, name="m")
    cat = concat(m, c, a, name="cat")
    bn = vertex(BatchNorm(8, "tanh"), cat, name="bn")
    if kind != "dense":
        bn = vertex(GlobalPool(), bn, name="gp")
    out = vertex(Dense(8, 2), bn, name="out")
    return CompGraph(inp, out)


@pytest.mark.parametrize("kind", ["dense", "conv1d", "conv2d"])
def test_gradients_match_finite_differences(f64, kind):
    g = _graph_for_gradcheck(kind)
    randomise(g)
    x = data(g, batch=3)
    rng = np.random.default_rng(5)
    y, back = g.forward(x, train=True)
    dy = rng.standard_normal(y.shape)
    for lay in g.layers():
        lay.zero_grads()
    stats = {id(lay): {k: a.copy() for k, a in lay.state.items()} for lay in g.layers()}
    dx = back(dy, need_dx=True)

    def loss(xv):
        for lay in g.layers():                          # train mode updates running stats
            for k, a in stats[id(lay)].items():
                lay.state[k][...] = a
        return float((g.forward(xv, train=True)[0] * dy).sum())

    eps = 1e-6
    d = rng.standard_normal(x.shape)
    numeric = (loss(x + eps * d) - loss(x - eps * d)) / (2 * eps)
    assert numeric == pytest.approx(float((dx * d).sum()), rel=1e-5, abs=1e-8)
    for lay in g.layers():
        for name, p in lay.params.items():
            d = rng.standard_normal(p.shape)
            p += eps * d
            plus = loss(x)
            p -= 2 * eps * d
            minus = loss(x)
            p += eps * d
            expected = float((lay.grads[name] * d).sum())
            assert (plus - minus) / (2 * eps) == pytest.approx(expected, rel=1e-5, abs=1e-8), \
                f"{lay!r}.{name}"


def test_layers_fed_by_the_input_skip_their_input_gradient():
    seen = {}

    class Spy(Dense):
        def forward(self, x, train=False):
            y, back = super().forward(x, train)

            def spy(dy, need_dx=True):
                seen[self.tag] = need_dx
                return back(dy, need_dx)
            return y, spy

    inp = input_vertex("in", 3)
    first = Spy(3, 4)
    first.tag = "first"
    second = Spy(4, 2)
    second.tag = "second"
    g = CompGraph(inp, vertex(second, vertex(first, inp)))
    y, back = g.forward(np.ones((2, 3), np.float32), train=True)
    back(np.ones_like(y), need_dx=False)
    assert seen == {"first": False, "second": True}
    back(np.ones_like(y))
    assert seen["first"] is True


def test_concat_hands_out_channels_last_memory():
    inp = input_vertex("in", 3, "conv2d")
    a = vertex(Conv(3, 2, (3, 3), padding="same"), inp)
    b = vertex(Conv(3, 4, (1, 1)), inp)
    g = CompGraph(inp, concat(a, b, inp))
    y = g(np.ones((2, 3, 5, 5), np.float32))
    assert y.shape == (2, 9, 5, 5)
    assert np.moveaxis(y, 1, -1).flags.c_contiguous


def test_multiple_inputs_and_outputs():
    a, b = input_vertex("a", 3), input_vertex("b", 2)
    ha = vertex(Dense(3, 4), a)
    cat = concat(ha, b)
    o1, o2 = vertex(Dense(6, 2), cat), vertex(Dense(4, 1), ha)
    g = CompGraph([a, b], [o1, o2])
    xa, xb = np.ones((5, 3), np.float32), np.ones((5, 2), np.float32)
    y1, y2 = g(xa, xb)
    assert y1.shape == (5, 2) and y2.shape == (5, 1)
    (z1, z2), back = g.forward(xa, xb, train=True)
    da, db = back((np.ones_like(z1), np.ones_like(z2)), need_dx=True)
    assert da.shape == xa.shape and db.shape == xb.shape
    with pytest.raises(ValueError, match="2 output gradients"):
        back(np.ones_like(z1))


def _strided_conv_pool_dense():
    inp = input_vertex("in", 3, "conv2d")
    c = vertex(Conv(3, 4, (3, 3), stride=2, padding="same"), inp)
    p = vertex(MaxPool(2), c)
    gp = vertex(GlobalPool(), p)
    return CompGraph(inp, vertex(Dense(4, 2), gp)), (c, p, gp)


def test_shapes_follow_strides_and_global_pool():
    g, (c, p, gp) = _strided_conv_pool_dense()
    s = g.shapes((16, 12))
    assert (s[c], s[p], s[gp], s[g.outputs[0]]) == ((4, 8, 6), (4, 4, 3), (4,), (2,))


def test_macs_count_the_multiply_adds_of_convs_and_dense_layers():
    g, _ = _strided_conv_pool_dense()
    # the conv: 4 x 3 x 3 x 3 weights at 8 x 6 positions; the dense layer: 4 x 2 weights once
    assert g.macs((16, 12)) == 4 * 3 * 9 * 48 + 8
    assert g.macs((32, 24)) == 4 * 3 * 9 * 192 + 8      # grows with the positions
    dense = CompGraph(i := input_vertex("in", 5), vertex(Dense(5, 3), i))
    assert dense.macs(()) == 15


def test_summary_and_repr():
    g = residual("conv2d")
    text = g.summary()
    for v in g.vertices:
        assert v.name in text
    assert "[shielded]" in text and f"{g.nparams():,} parameters" in text
    assert "CompGraph(" in repr(g) and "Vertex('c1'" in repr(g["c1"])


# ---------------------------------------------------------------------- copy and specs

@pytest.mark.parametrize("build", sorted(BUILDERS))
def test_copy_is_deep_and_computes_the_same(f64, build):
    g = BUILDERS[build]("conv2d")
    randomise(g)
    x = data(g)
    before = g(x)
    c = copy(g, rename=lambda s: s + "_c")
    assert [v.name for v in c.vertices] == [v.name + "_c" for v in g.vertices]
    np.testing.assert_array_equal(c(x), before)
    assert not set(map(id, c.layers())) & set(map(id, g.layers()))
    assert not set(c.vertices) & set(g.vertices)
    for lay in c.layers():
        for k in lay.params:
            own(lay.params, k)[...] += 1.0
    assert not np.allclose(c(x), before)
    np.testing.assert_array_equal(g(x), before)
    c.validate()
    assert g.copy("'").vertices[1].name == g.vertices[1].name + "'"


def test_copy_shares_arrays_copy_on_write(f64):
    g = residual("conv2d")
    randomise(g)
    x = data(g)
    y, back = g.forward(x, train=True)
    back(np.ones_like(y))                                   # non-zero gradients in the parent
    g["c1"].layer.to(dtype=np.float32)                      # mixed dtypes in one graph
    c = g.copy()
    for lay, cl in zip(g.layers(), c.layers()):
        for d in ("params", "state"):
            for k, a in getattr(cl, d).items():
                old = getattr(lay, d)[k]
                assert a is old and not a.flags.writeable   # shared, read-only in both
        assert not cl._grads                                # no gradient memory yet
        for k, grad in cl.grads.items():                    # made on use: zero, private
            assert grad.shape == cl.params[k].shape and not grad.any()
            assert not np.shares_memory(grad, lay.grads[k])
    with pytest.raises(ValueError, match="read-only"):
        next(iter(c.layers())).params["weight"] += 1.0      # never written by mistake
    parent = {id(a): a.copy() for lay in g.layers() for a in lay.arrays().values()}

    # Training the copy (optimiser steps, batch norm statistics) leaves the parent as it was.
    opt = Adam(learning_rate=0.1)
    for _ in range(2):
        y, back = c.forward(x, train=True)
        back(np.ones_like(y))
        opt.update(c)
    for lay, cl in zip(g.layers(), c.layers()):
        for k, a in lay.arrays().items():
            np.testing.assert_array_equal(a, parent[id(a)])
            assert not np.shares_memory(a, cl.arrays()[k])
        for k, a in cl.params.items():
            assert a.flags.writeable and not np.array_equal(a, lay.params[k])
    assert opt._state[next(iter(c.layers()))]["weight"]["t"] == 2   # moments kept through own()

    # ... and training the parent leaves a second copy as it was.
    c2 = g.copy()
    out = c2(x)
    y, back = g.forward(x, train=True)
    back(np.ones_like(y))
    Adam(learning_rate=0.1).update(g)
    np.testing.assert_array_equal(c2(x), out)
    assert not np.allclose(g(x), out)
    again = pickle.loads(pickle.dumps(c2))
    np.testing.assert_array_equal(again(x), out)


@pytest.mark.parametrize("how", ["pickle", "deepcopy"])
def test_copies_pickled_together_come_back_copy_on_write(f64, how):
    """A parent and its copy share read-only arrays; pickled (or deep-copied) in one go they
    come back sharing them read-only again, never one writable array that training would
    change for both."""
    import copy as _copy
    g = residual("conv2d")
    randomise(g)
    x = data(g)
    pair = (g, g.copy())
    a, b = pickle.loads(pickle.dumps(pair)) if how == "pickle" else _copy.deepcopy(pair)
    for la, lb in zip(a.layers(), b.layers()):
        for k, w in la.params.items():
            assert w is lb.params[k] and not w.flags.writeable
    out = b(x)
    y, back = a.forward(x, train=True)
    back(np.ones_like(y))
    Adam(learning_rate=0.1).update(a)
    assert not np.allclose(a(x), out)
    np.testing.assert_array_equal(b(x), out)


def test_copy_keeps_tracked_values_and_pending_sizes():
    g = chain()
    te.track_values(g)
    y, back = g.forward(data(g).astype(np.float32), train=True)
    back(np.ones_like(y))
    te.change_nout(g, {g["l1"]: 2}, select=False)
    c = g.copy()
    assert c["l1"].nout == 6 and c["l1"].nout_org == 4
    np.testing.assert_array_equal(c["l1"].layer.neuron_value, g["l1"].layer.neuron_value)
    assert c["l1"].layer.neuron_value is not g["l1"].layer.neuron_value


@pytest.mark.parametrize("kind", ["dense", "conv1d", "conv2d"])
def test_spec_round_trip_through_json_and_npz(f64, tmp_path, kind):
    g = inception(kind)
    randomise(g)
    te.track_values(g, every=2)
    y, back = g.forward(data(g), train=True)
    back(np.ones_like(y))
    back(np.ones_like(y))
    g["p2a"].shielded = True
    spec = json.loads(json.dumps(g.to_spec()))
    np.savez(tmp_path / "g.npz", **{k: B.to_numpy(a) for k, a in g.arrays().items()})
    with np.load(tmp_path / "g.npz") as z:
        h = CompGraph.from_spec(spec, dict(z))
    x = data(g, seed=3)
    np.testing.assert_array_equal(h(x), g(x))
    assert [v.name for v in h.vertices] == [v.name for v in g.vertices]
    assert [v.nin for v in h.vertices] == [v.nin for v in g.vertices]
    assert h["p2a"].shielded and h["out"].shielded and not h["p1"].shielded
    assert h["out"].layer.dtype == np.float64
    np.testing.assert_array_equal(h["p1"].layer.neuron_value, g["p1"].layer.neuron_value)
    assert h["p1"].layer._value_every == 2
    h.validate()


def test_from_spec_rejects_other_documents():
    with pytest.raises(ValueError, match="CompGraph spec"):
        CompGraph.from_spec({"type": "Dense"})
    spec = chain().to_spec()
    spec["version"] = 99
    with pytest.raises(ValueError, match="newer"):
        CompGraph.from_spec(spec)


def test_optimizer_updates_every_layer_once():
    g = residual("conv1d")
    opt = te.optimizers.SGD(learning_rate=0.1)
    before = {id(lay): lay.params["weight"].copy() for lay in g.layers() if lay.params}
    y, back = g.forward(data(g).astype(np.float32), train=True)
    back(np.ones_like(y))
    opt.update(g)
    for lay in g.layers():
        if lay.params:
            assert not np.array_equal(lay.params["weight"], before[id(lay)])
    assert len({id(lay) for lay in g.layers()}) == len(list(g.layers()))


def test_spatial_sizes_used_by_builders():
    assert SPATIAL["conv2d"] == (5, 5)
