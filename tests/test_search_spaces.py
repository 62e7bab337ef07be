"""Search spaces: draws, sizes, names, weight inits, shields, fallbacks and errors."""

from __future__ import annotations

import numpy as np
import pytest

import tinyevo as te
from tinyevo import backend as B


def _conv(outsizes=range(2, 7), ks=3, strides=1, acts=("relu", "identity"), ndim=2):
    return te.ConvSpace(ndim, outsizes, list(acts), ks, strides=strides)


def _run(graph, shape, need_dx=True):
    x = np.random.default_rng(0).standard_normal(shape).astype(B.floatx())
    y, back = graph.forward(x, train=True)
    dx = back(np.ones_like(y), need_dx=need_dx)
    return y, dx


# ---------------------------------------------------------------------- parameter spaces

def test_parspace_dimensions_and_conveniences():
    rng = np.random.default_rng(3)
    assert te.ParSpace1D("a", "b")(rng) in ("a", "b")
    assert te.ParSpace2D([1, 2])(rng) in {(i, j) for i in (1, 2) for j in (1, 2)}
    assert te.ParSpace(7)() == 7 and te.ParSpace("relu")() == "relu"
    a, b, c = te.ParSpace([1], ["x"], range(3, 4))()
    assert (a, b, c) == (1, "x", 3)
    draws = {te.CoupledParSpace(range(1, 6), 2)(rng) for _ in range(30)}
    assert all(d[0] == d[1] for d in draws) and len(draws) > 1


def test_parspace_rejects_empty():
    with pytest.raises(ValueError, match="at least one"):
        te.ParSpace([])
    with pytest.raises(ValueError, match="at least one dimension"):
        te.ParSpace()


# ---------------------------------------------------------------------- layer spaces

def test_layer_spaces_honour_outsize_and_validate_arguments():
    assert te.DenseSpace(range(3, 9), "relu")(4, outsize=11).nout == 11
    assert _conv()(3, outsize=9).nout == 9
    with pytest.raises(ValueError, match="unknown activation"):
        te.DenseSpace(3, "relux")
    with pytest.raises(ValueError, match="integers >= 1"):
        te.DenseSpace([0, 3])
    with pytest.raises(ValueError, match="ndim must be 1 or 2"):
        te.ConvSpace(3, 4)
    with pytest.raises(ValueError, match="poolfuns"):
        te.PoolSpace(2, 2, poolfuns="median")


def test_pool_space_same_padding_fits_every_size():
    space = te.PoolSpace(2, windowsizes=range(2, 6), poolfuns=("max", "mean"))
    for _ in range(10):
        layer = space(3)
        for n in (1, 2, 3, 7):
            y, back = layer.forward(np.ones((1, 3, n, n + 1), np.float32), train=True)
            assert y.shape[2:] == tuple(-(-m // s) for m, s in zip((n, n + 1), layer.stride))
            back(np.ones_like(y))


def test_batchnorm_and_pool_spaces_keep_size():
    inp = te.input_vertex("in", 5, "conv1d")
    v = te.ArchSpaceChain(te.BatchNormSpace("relu"),
                          te.PoolSpace(1, 2, poolfuns="mean"))(inp, outsize=9)
    assert v.nout == 5 and v.kind == "conv1d"


# ---------------------------------------------------------------------- architecture spaces

def test_names_follow_the_prefix():
    inp = te.input_vertex("in", 4, "conv2d")
    fork = te.ForkArchSpace(te.ArchSpaceChain(_conv(), te.BatchNormSpace()), 2)
    space = te.ArchSpaceChain(te.ResidualArchSpace(fork), te.GlobalPoolSpace(),
                              te.VertexSpace(te.DenseSpace(3), shielded=True, name="out"))
    g = te.CompGraph(inp, space(inp, name="net"))
    names = [v.name for v in g.vertices]
    assert names == ["in", "net.1.res.path1.1", "net.1.res.path1.2", "net.1.res.path2.1",
                     "net.1.res.path2.2", "net.1.res.cat", "net.1.add", "net.2.globpool",
                     "net.3.out"]


def test_fork_splits_outsize_and_never_makes_empty_paths():
    inp = te.input_vertex("in", 3, "dense")
    fork = te.ForkArchSpace(te.DenseSpace(range(2, 9)), 4)
    v = fork(inp, outsize=10)
    assert v.op == "concat" and v.nin == [2, 2, 3, 3] and v.nout == 10
    v = fork(inp, outsize=2)                         # at most one path per neuron
    assert v.nin == [1, 1]
    one = te.ForkArchSpace(te.DenseSpace(5), 1)(inp)
    assert one.op == "layer"                         # one path needs no concat
    assert te.ForkArchSpace(te.DenseSpace(5), 0)(inp) is inp


def test_residual_matches_the_input_size():
    inp = te.input_vertex("in", 6, "conv2d")
    res = te.ResidualArchSpace(te.RepeatArchSpace(_conv(range(2, 40)), 3))
    for _ in range(5):
        v = res(inp)
        assert v.op == "add" and v.nout == 6 and v.nin == [6, 6]


def test_residual_with_a_stride_falls_back_to_the_plain_block():
    inp = te.input_vertex("in", 3, "conv2d")
    v = te.ResidualArchSpace(_conv(strides=2))(inp)
    assert v.op == "layer"
    g = te.CompGraph(inp, v)
    y, _ = _run(g, (2, 3, 5, 7))
    assert y.shape[2:] == (3, 4)


def test_fork_drops_paths_that_shrink_the_map_differently():
    inp = te.input_vertex("in", 3, "conv2d")
    path = te.ArchSpace(_conv(strides=1), _conv(strides=2))
    fork = te.ForkArchSpace(path, 4)
    for seed in range(8):
        v = fork(inp, np.random.default_rng(seed))
        g = te.CompGraph(inp, v)
        g.validate()
        y, _ = _run(g, (2, 3, 5, 5))
        assert y.shape[1] == v.nout
        # nothing from dropped paths stays attached to the input
        assert all(o in g.vertices for o in inp.outputs)
        for o in list(inp.outputs):
            inp._outputs.remove(o)


def test_global_pool_switches_to_dense_and_is_shielded():
    inp = te.input_vertex("in", 4, "conv1d")
    v = te.GlobalPoolSpace()(inp)
    assert v.kind == "dense" and v.nout == 4 and v.shielded
    with pytest.raises(te.SpaceError, match="conv1d or conv2d"):
        te.GlobalPoolSpace()(v)


def test_conditional_and_noop_and_function_spaces():
    space = te.ConditionalArchSpace(lambda v: v.kind != "dense", te.GlobalPoolSpace())
    conv_in = te.input_vertex("c", 3, "conv2d")
    dense_in = te.input_vertex("d", 3, "dense")
    assert space(conv_in).kind == "dense"
    assert space(dense_in) is dense_in
    assert te.NoOpArchSpace()(dense_in) is dense_in
    drop = te.FunctionSpace(lambda v, name=None: te.vertex(te.layers.Dropout(0.2), v, name=name))
    v = drop(dense_in, name="drop")
    assert v.name == "drop" and isinstance(v.layer, te.layers.Dropout)


def test_wrong_kind_raises_and_leaves_the_input_untouched():
    inp = te.input_vertex("in", 3, "conv2d")
    space = te.ArchSpaceChain(_conv(), te.BatchNormSpace(), te.DenseSpace(4))
    with pytest.raises(te.SpaceError, match="GlobalPoolSpace"):
        space(inp)
    assert inp.outputs == ()
    with pytest.raises(te.SpaceError, match="conv1d"):
        te.VertexSpace(_conv(ndim=1))(inp)
    assert inp.outputs == ()
    with pytest.raises(TypeError, match="input Vertex"):
        space("in")


# ---------------------------------------------------------------------- reproducibility

def _structure(graph):
    spec = graph.to_spec()
    for v in spec["vertices"]:
        v.pop("name")
    return spec


@pytest.mark.parametrize("use_library_rng", [True, False])
def test_equal_seeds_give_equal_graphs(use_library_rng):
    space = te.ArchSpaceChain(
        te.RepeatArchSpace(te.ArchSpace(te.ForkArchSpace(_conv(), range(1, 4)),
                                        te.ResidualArchSpace(_conv()),
                                        te.PoolSpace(2, 2)), range(1, 5)),
        te.GlobalPoolSpace(), te.DenseSpace(3))

    def draw(seed):
        inp = te.input_vertex("in", 3, "conv2d")
        if use_library_rng:
            te.seed(seed)
            return te.CompGraph(inp, space(inp, name="g"))
        return te.CompGraph(inp, space(inp, np.random.default_rng(seed), name="g"))

    a, b, c = draw(5), draw(5), draw(6)
    assert a.to_spec() == b.to_spec()                # names included, with a prefix
    arrays_a, arrays_b = a.arrays(), b.arrays()
    assert all(np.array_equal(arrays_a[k], arrays_b[k]) for k in arrays_a)
    assert _structure(a) != _structure(c) or any(
        not np.array_equal(x, y) for x, y in zip(a.arrays().values(), c.arrays().values()))


# ---------------------------------------------------------------------- weight inits

@pytest.fixture
def f64():
    B.set_floatx(np.float64)
    yield
    B.set_floatx(np.float32)


def _identity_spaces(kind):
    if kind == "dense":
        layer = te.DenseSpace(range(2, 9), ["relu", "elu"])
        norm = te.BatchNormSpace("relu")
        pool = None
    else:
        nd = 1 if kind == "conv1d" else 2
        layer = te.ConvSpace(nd, range(2, 9), ["relu", "selu"], range(1, 6))
        norm = te.BatchNormSpace("relu")
        pool = None
    block = te.ArchSpace(layer, te.ArchSpaceChain(layer, norm), te.ArchSpaceChain(norm, layer))
    rep = te.RepeatArchSpace(block, range(1, 3))
    return [rep, te.ForkArchSpace(rep, range(1, 4)), te.ResidualArchSpace(rep),
            te.ResidualArchSpace(te.ForkArchSpace(rep, range(2, 4))), norm] + (
        [pool] if pool else [])


@pytest.mark.parametrize("kind", ["dense", "conv1d", "conv2d"])
def test_identity_init_keeps_the_function(kind, f64):
    shape = {"dense": (4, 5), "conv1d": (4, 5, 7), "conv2d": (4, 5, 6, 5)}[kind]
    x = np.random.default_rng(1).standard_normal(shape)
    for i, space in enumerate(_identity_spaces(kind)):
        for seed in range(4):
            inp = te.input_vertex("in", 5, kind)
            out = space(inp, np.random.default_rng(seed), outsize=5,
                        weightinit=te.IdentityWeightInit())
            assert out.nout == 5
            y = te.CompGraph(inp, out)(x)
            np.testing.assert_allclose(y, x, atol=1e-7, err_msg=f"space {i}, seed {seed}")


def test_partial_identity_selects_a_slice():
    layer = te.DenseSpace(2)(5, weightinit=te.PartialIdentityWeightInit(offset=3))
    y = layer(np.arange(5.0, dtype=np.float32)[None])
    np.testing.assert_array_equal(y, [[3.0, 4.0]])
    assert te.PartialIdentityWeightInit(3).after_absorb() == te.IdentityWeightInit()


def test_identity_init_forces_identity_activation_unless_asked():
    assert te.DenseSpace(3, "relu")(3, weightinit=te.IdentityWeightInit()).activation == "identity"
    keep = te.IdentityWeightInit(activation=None)
    assert te.DenseSpace(3, "relu")(3, weightinit=keep).activation == "relu"


def test_zero_init():
    layer = te.ConvSpace(2, 4, "identity", 3)(3, weightinit=te.ZeroWeightInit())
    assert not np.any(layer.params["weight"])
    bn = te.BatchNormSpace()(3, weightinit=te.ZeroWeightInit())
    assert not np.any(bn.params["weight"])


# ---------------------------------------------------------------------- shields

class KernelSizeMutation:                             # stand-ins: shields match by class name
    pass


class NoutMutation:
    pass


def test_mutation_shield_allow_list_survives_copy():
    shield = te.MutationShield(allow=(KernelSizeMutation, "ActivationFunctionMutation"))
    inp = te.input_vertex("in", 3, "conv2d")
    v = te.VertexSpace(_conv(), shielded=shield, name="c")(inp)
    plain = te.VertexSpace(_conv(), name="p")(v)
    full = te.VertexSpace(_conv(), shielded=True, name="f")(plain)
    g = te.CompGraph(inp, full)
    for graph in (g, g.copy()):
        c, p, f, i = graph["c"], graph["p"], graph["f"], graph["in"]
        assert c.shielded and te.is_shielded(c) and not te.is_shielded(c, KernelSizeMutation())
        assert te.is_shielded(c, NoutMutation()) and not te.is_shielded(c, KernelSizeMutation)
        assert not te.is_shielded(p) and not te.is_shielded(p, NoutMutation())
        assert te.is_shielded(f, KernelSizeMutation()) and te.mutation_shield(f).allow == set()
        assert te.is_shielded(i, KernelSizeMutation())
        assert te.mutation_shield(c) == shield


def test_mutation_shield_allow_list_survives_saving_a_loaded_graph_again():
    # Regression (#22): a loaded graph held the allow-list as names, which the next save
    # dropped; a run resumed twice then shielded its output layer from every mutation.
    shield = te.MutationShield(allow=(KernelSizeMutation,))
    inp = te.input_vertex("in", 3, "conv2d")
    g = te.CompGraph(inp, te.VertexSpace(_conv(), shielded=shield, name="c")(inp))
    for _ in range(3):
        g = te.CompGraph.from_spec(g.to_spec(), g.arrays())
        assert te.mutation_shield(g["c"]) == shield
        assert not te.is_shielded(g["c"], KernelSizeMutation())
        assert te.is_shielded(g["c"], NoutMutation())


def test_shield_rejects_junk():
    with pytest.raises(TypeError):
        te.MutationShield(allow=(3,))
    with pytest.raises(TypeError):
        te.VertexSpace(te.DenseSpace(3), shielded="yes")


def test_without_a_prefix_the_graph_numbers_vertices():
    inp = te.input_vertex("in", 4, "dense")
    space = te.ArchSpaceChain(te.ForkArchSpace(te.DenseSpace(3), 2), te.DenseSpace(2),
                              te.VertexSpace(te.DenseSpace(2), name="out"))
    g = te.CompGraph(inp, space(inp))
    names = [v.name for v in g.vertices]
    assert len(set(names)) == len(names) and names[-1] == "out"
    assert all(n.split("_")[0] in ("in", "dense", "concat", "out") for n in names)
