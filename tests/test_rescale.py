"""Rescale: a fixed per-feature affine layer (y = x * scale + offset along axis 1), the arrays
that standardise data with it, and the fully shielded vertex that holds it: exact forward and
gradients, no trained parameters, kept by copies, specs, saves and ONNX, resized like BatchNorm,
and never changed by mutation or crossover."""

import json

import numpy as np
import pytest
from gradcheck import check_layer

import tinyevo as te
from tinyevo import backend as B
from tinyevo.app import defaults
from tinyevo.app.model_io import load_model, save_model
from tinyevo.evolution.crossover import CrossoverSwap, VertexCrossover
from tinyevo.evolution.mutation import (
    ActivationFunctionMutation,
    AddEdgeMutation,
    AddVertexMutation,
    KernelSizeMutation,
    MutationChain,
    MutationProbability,
    NoutMutation,
    RemoveEdgeMutation,
    RemoveVertexMutation,
    VertexMutation,
)
from tinyevo.layers import (
    BatchNorm,
    Conv,
    Dense,
    GlobalPool,
    MaxPool,
    Rescale,
    Sequential,
    destandardizer,
    layer_from_spec,
    standardizer,
)
from tinyevo.optimizers import SGD, Adam, AdamW
from tinyevo.search import (
    ConvSpace,
    DenseSpace,
    RepeatArchSpace,
    VertexSpace,
    is_shielded,
    rescale_vertex,
)

SHAPES = [(6, 3), (4, 3, 5), (2, 3, 4, 5)]


def _data(shape, seed=0, loc=0.0, scale=1.0):
    return (np.random.default_rng(seed).normal(loc, scale, shape)).astype(np.float32)


def _affine(c, seed=1):
    rng = np.random.default_rng(seed)
    return rng.uniform(0.5, 2.0, c) * rng.choice([-1, 1], c), rng.normal(0, 3, c)


def _by_channel(a, ndim):
    return np.asarray(a).reshape((1, -1) + (1,) * (ndim - 2))


# ---------------------------------------------------------------------- the layer

@pytest.mark.parametrize("shape", SHAPES)
def test_forward_is_the_affine_map_per_channel(xp, shape):
    scale, offset = _affine(shape[1])
    layer = Rescale(scale, offset)
    x = _data(shape)
    y = layer(xp.asarray(x))
    assert y.shape == shape and y.dtype == np.float32
    expect = x * _by_channel(scale, len(shape)) + _by_channel(offset, len(shape))
    np.testing.assert_allclose(B.to_numpy(y), expect, rtol=1e-6, atol=1e-6)
    y64, back = layer.forward(xp.asarray(x), train=True)
    dy = xp.asarray(_data(shape, seed=2))
    np.testing.assert_allclose(B.to_numpy(back(dy)),
                               B.to_numpy(dy) * _by_channel(scale, len(shape)), rtol=1e-6)
    assert back(dy, need_dx=False) is None


def test_integer_input_is_cast_and_identity_changes_nothing():
    x = np.arange(12, dtype=np.uint8).reshape(2, 3, 2)
    y = Rescale.identity(3)(x)
    assert y.dtype == np.float32
    np.testing.assert_array_equal(y, x.astype(np.float32))


@pytest.mark.parametrize("shape", SHAPES)
def test_gradients(xp, shape):
    B.set_floatx(np.float64)
    layer = Rescale(*_affine(shape[1]))
    x = xp.asarray(np.random.default_rng(3).standard_normal(shape))
    grads = check_layer(layer, x)
    assert set(grads) == {"x"}, "no trained parameters, so no parameter gradients"


def test_no_trained_parameters_and_optimisers_leave_it_alone():
    scale, offset = _affine(4)
    inp = te.input_vertex("x", 4)
    r = rescale_vertex(inp, scale, offset, name="standardize")
    graph = te.CompGraph(inp, te.vertex(Dense(4, 2), r, name="out"))
    assert r.layer.parameter_count() == 0 and r.layer.params == {}
    assert graph.nparams() == 4 * 2 + 2
    assert graph.macs(()) == 4 * 2, "only the dense layer's multiply-adds count"
    x = _data((8, 4))
    for opt in (SGD(0.5), Adam(0.1), AdamW(0.1, weight_decay=0.5)):
        before = {k: a.copy() for k, a in r.layer.arrays().items()}
        weight = graph["out"].layer.params["weight"].copy()
        y, back = graph.forward(x, train=True)
        back(np.ones_like(y))
        opt.update(graph)
        for k, a in r.layer.arrays().items():
            np.testing.assert_array_equal(a, before[k])
        assert not np.array_equal(graph["out"].layer.params["weight"], weight)


def test_spec_round_trip_and_dtype():
    layer = Rescale(*_affine(3))
    spec = json.loads(json.dumps(layer.to_spec()))
    assert spec == {"type": "Rescale", "n": 3}
    rebuilt = layer_from_spec(spec, layer.arrays())
    x = _data((2, 3, 4))
    np.testing.assert_array_equal(rebuilt(x), layer(x))
    np.testing.assert_array_equal(layer_from_spec(spec)(x), x)   # without arrays: identity
    wide = Rescale([1.0], [0.5], dtype=np.float64)
    assert wide.dtype == np.float64 and wide(np.ones((2, 1), np.float32)).dtype == np.float64
    assert wide.to(dtype=np.float32).dtype == np.float32
    with pytest.raises(ValueError, match="Rescale spec"):
        layer_from_spec({"type": "Rescale", "n": 3, "scale": [1, 2, 3]})
    with pytest.raises(ValueError, match="positive integer"):
        layer_from_spec({"type": "Rescale", "n": 0})


def test_resizing_keeps_entries_and_inserts_neutral_ones():
    layer = Rescale([2.0, 3.0, 4.0], [-1.0, -2.0, -3.0])
    layer.select_in([2, -1, 0])
    np.testing.assert_array_equal(layer.state["scale"], [4.0, 1.0, 2.0])
    np.testing.assert_array_equal(layer.state["offset"], [-3.0, 0.0, -1.0])
    layer.select_out([1])
    assert layer.nin == layer.nout == 1


def test_graph_size_change_through_a_rescale_preserves_the_function():
    """A Rescale between two layers follows its input's size like BatchNorm: a grown input
    gets scale 1, offset 0 entries (read with zero weights), a shrunk one keeps its entries."""
    B.set_floatx(np.float64)
    inp = te.input_vertex("x", 3)
    h = te.vertex(Dense(3, 5, "relu"), inp, name="h")
    r = rescale_vertex(h, *_affine(5), name="mid")
    graph = te.CompGraph(inp, te.vertex(Dense(5, 2), r, name="out"))
    x = np.random.default_rng(0).standard_normal((7, 3))
    before = graph(x)
    kept = r.layer.state["scale"].copy()
    assert te.change_nout(graph, {h: 3})
    assert r.nout == 8 and r.layer.nin == 8
    grown, offset = r.layer.state["scale"], r.layer.state["offset"]
    np.testing.assert_array_equal(grown[grown != 1.0], kept)       # in order, new ones between
    np.testing.assert_array_equal(offset[grown == 1.0], 0.0)
    np.testing.assert_allclose(graph(x), before, atol=1e-10)
    assert te.change_nout(graph, {h: -4})
    assert r.layer.nin == 4 and set(r.layer.state["scale"]) <= set(kept) | {1.0}
    assert graph(x).shape == (7, 2)


BAD_LAYERS = [
    (lambda: Rescale([1.0, 2.0], [0.0]), "one entry per"),
    (lambda: Rescale([[1.0, 2.0]], [[0.0, 0.0]]), "1-D"),
    (lambda: Rescale([], []), "1-D"),
    (lambda: Rescale([1.0, np.nan], [0.0, 0.0]), "finite"),
    (lambda: Rescale([1.0], [np.inf]), "finite"),
    (lambda: Rescale(np.array([1j]), [0.0]), "real"),
    (lambda: Rescale(["a"], [0.0]), "real"),
]


@pytest.mark.parametrize("make,match", BAD_LAYERS)
def test_bad_arrays_are_refused(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_bad_input_names_the_layer_and_shapes():
    with pytest.raises(ValueError, match=r"Rescale\(3\).*3 at axis 1.*\(2, 4\)"):
        Rescale.identity(3)(np.zeros((2, 4), np.float32))
    with pytest.raises(ValueError, match=r"Rescale\(3\).*wrong input rank"):
        Rescale.identity(3)(np.zeros(3, np.float32))
    with pytest.raises(ValueError, match="complex"):
        Rescale.identity(1)(np.zeros((2, 1), np.complex64))


# ---------------------------------------------------------------------- standardisation arrays

@pytest.mark.parametrize("shape", SHAPES)
def test_standardizer_gives_mean_zero_std_one_per_channel(shape):
    x = _data(shape, loc=5.0, scale=3.0) * _by_channel(np.arange(1, shape[1] + 1), len(shape))
    scale, offset = standardizer(x)
    assert scale.dtype == offset.dtype == np.float32 and scale.shape == (shape[1],)
    y = Rescale(scale, offset)(x)
    axes = (0, *range(2, len(shape)))
    np.testing.assert_allclose(y.mean(axis=axes), 0.0, atol=1e-5)
    np.testing.assert_allclose(y.std(axis=axes), 1.0, rtol=1e-4)


def test_constant_features_get_scale_one_and_become_zero():
    x = np.column_stack([np.full(9, 0.1), np.arange(9.0), np.zeros(9)])
    scale, offset = standardizer(x)
    assert scale[0] == scale[2] == 1.0
    y = Rescale(scale, offset)(x)
    np.testing.assert_array_equal(y[:, [0, 2]], 0.0)
    assert np.isfinite(standardizer(x[:1])[0]).all(), "one sample: every feature is constant"


def test_destandardizer_maps_standardised_predictions_back():
    y = np.random.default_rng(0).normal([10.0, -3.0], [4.0, 0.5], (50, 2))
    scale, offset = destandardizer(y)
    assert scale.dtype == np.float32 and scale.shape == (2,)
    np.testing.assert_allclose(scale, y.std(axis=0), rtol=1e-5)
    np.testing.assert_allclose(offset, y.mean(axis=0), rtol=1e-5)
    z = (y - offset) / scale
    np.testing.assert_allclose(Rescale(scale, offset)(z), y, rtol=1e-5, atol=1e-4)
    s1, o1 = destandardizer(y[:, 0])
    assert s1.shape == o1.shape == (1,)
    assert destandardizer(np.full(4, 7.0)) == (np.float32(1.0), np.float32(7.0))


@pytest.mark.parametrize("fn", [standardizer, destandardizer])
def test_bad_data_is_refused_clearly(fn):
    with pytest.raises(ValueError, match=r"non-finite.*\(1, 0\)"):
        fn(np.array([[1.0, 2.0], [np.nan, 3.0]]))
    with pytest.raises(ValueError, match="non-finite"):
        fn(np.array([[1e300], [0.0]]))           # beyond float32
    with pytest.raises(ValueError, match="real numbers"):
        fn(np.array([["a", "b"]]))
    with pytest.raises(ValueError, match="at least one sample"):
        fn(np.zeros((0, 3)))
    with pytest.raises(ValueError, match="at least one sample"):
        standardizer(np.zeros(5))


# ---------------------------------------------------------------------- graphs: copy, save, ONNX

def _regression_graph():
    """input -> standardize -> dense -> head (shielded) -> to_units, as fit builds it."""
    x = _data((20, 4), loc=50.0, scale=10.0)
    y = _data((20, 2), seed=5, loc=-7.0, scale=30.0)
    inp = te.input_vertex("x", 4)
    r_in = rescale_vertex(inp, *standardizer(x), name="standardize")
    h = te.vertex(Dense(4, 6, "relu"), r_in, name="h")
    head = te.vertex(Dense(6, 2), h, name="head", shielded=True)
    r_out = rescale_vertex(head, *destandardizer(y), name="to_units")
    return te.CompGraph(inp, r_out), x


def _conv_graph(channels=3):
    x = _data((4, channels, 6, 6), loc=120.0, scale=40.0)
    inp = te.input_vertex("image", channels, "conv2d")
    r = rescale_vertex(inp, *standardizer(x), name="standardize")
    c = te.vertex(Conv(channels, 4, 3, padding="same", activation="relu"), r, name="c")
    bn = te.vertex(BatchNorm(4), c, name="bn")
    p = te.vertex(MaxPool(2), bn, name="pool")
    gp = te.vertex(GlobalPool(), p, name="gp")
    return te.CompGraph(inp, te.vertex(Dense(4, 3), gp, name="out", shielded=True)), x


def test_rescale_vertex_is_fully_shielded():
    graph, _ = _regression_graph()
    for name in ("standardize", "to_units"):
        v = graph[name]
        assert v.shielded and is_shielded(v)
        for m in (ActivationFunctionMutation(), NoutMutation(0.5), RemoveVertexMutation()):
            assert is_shielded(v, m)
    with pytest.raises(ValueError, match="outputs 4 features.*2 entries"):
        rescale_vertex(te.input_vertex("x", 4), [1.0, 1.0], [0.0, 0.0])
    with pytest.raises(TypeError, match="Vertex"):
        rescale_vertex(np.zeros(3), [1.0], [0.0])


def test_copy_and_spec_keep_arrays_and_shield():
    graph, x = _regression_graph()
    for twin in (graph.copy(), te.CompGraph.from_spec(json.loads(json.dumps(graph.to_spec())),
                                                      graph.arrays())):
        np.testing.assert_array_equal(twin(x), graph(x))
        for name in ("standardize", "to_units"):
            assert twin[name].shielded and isinstance(twin[name].layer, Rescale)
            for k, a in graph[name].layer.arrays().items():
                np.testing.assert_array_equal(twin[name].layer.arrays()[k], a)


def test_save_load_round_trip(tmp_path):
    graph, x = _regression_graph()
    loaded = load_model(save_model(graph, tmp_path / "model"))
    np.testing.assert_array_equal(loaded(x), graph(x))
    assert loaded["to_units"].shielded and isinstance(loaded["to_units"].layer, Rescale)
    seq = Sequential(Rescale(*standardizer(x)), Dense(4, 1))
    np.testing.assert_array_equal(load_model(save_model(seq, tmp_path / "seq"))(x), seq(x))


def test_damaged_rescale_arrays_are_refused(tmp_path):
    graph, _ = _regression_graph()
    folder = save_model(graph, tmp_path / "model")
    arrays = dict(np.load(folder / "weights.npz"))
    key = next(k for k in arrays if k.endswith("/scale"))
    arrays[key] = arrays[key][:-1]
    np.savez(folder / "weights.npz", **arrays)
    with pytest.raises(ValueError, match=r"scale.*shape \(3,\).*expected \(4,\)"):
        load_model(folder)


def test_onnx_export_matches():
    pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    from tinyevo.app.onnx_export import export_onnx

    def run(model, x, **kw):
        proto = export_onnx(model, None, **kw)
        assert {"Mul", "Add"} <= {n.op_type for n in proto.graph.node}
        sess = ort.InferenceSession(proto.SerializeToString(),
                                    providers=["CPUExecutionProvider"])
        name = sess.get_inputs()[0].name
        got = sess.run(None, {name: x})[0]
        expect = model(x)
        np.testing.assert_allclose(got, expect, rtol=1e-5,
                                   atol=1e-5 * max(1.0, float(np.abs(expect).max())))

    graph, x = _regression_graph()
    run(graph, x)
    conv, images = _conv_graph()
    run(conv, images)
    run(conv, images, input_shape=images.shape[1:])
    signal = _data((3, 2, 7), loc=4.0)
    run(Sequential(Rescale(*standardizer(signal)), Conv(2, 3, (3,))), signal,
        input_shape=(2, 7))


# ---------------------------------------------------------------------- mutation and crossover

def _dense_space():
    return RepeatArchSpace(VertexSpace(DenseSpace(range(4, 17), defaults.ACTIVATIONS)),
                           range(1, 4))


def _dense_parents(n):
    x = _data((16, 5), loc=3.0, scale=2.0)
    y = _data((16, 3), seed=4, loc=100.0, scale=20.0)
    parents = []
    for _ in range(n):
        inp = te.input_vertex("x", 5)
        r_in = rescale_vertex(inp, *standardizer(x), name="standardize")
        head = VertexSpace(DenseSpace(3, "identity"), shielded=True, name="head")
        out = rescale_vertex(head(_dense_space()(r_in)), *destandardizer(y), name="to_units")
        parents.append(te.CompGraph(inp, out))
    return parents, x


def _conv_parents(n):
    x = _data((4, 3, 8, 8), loc=120.0, scale=40.0)
    parents = []
    for _ in range(n):
        inp = te.input_vertex("image", 3, "conv2d")
        r = rescale_vertex(inp, *standardizer(x), name="standardize")
        conv = VertexSpace(ConvSpace(2, range(4, 9), defaults.ACTIVATIONS, kernelsizes=(3,)))
        features = RepeatArchSpace(conv, range(1, 4))(r)
        pooled = te.vertex(GlobalPool(), features, shielded=True)
        out = te.vertex(Dense(pooled.nout, 3), pooled, name="head", shielded=True)
        parents.append(te.CompGraph(inp, out))
    return parents, x


def _snapshot(graph):
    return {v.name: {k: a.copy() for k, a in v.layer.arrays().items()}
            for v in graph.vertices if isinstance(v.layer, Rescale)}


def _assert_intact(graph, expected, x, outputs):
    """Both Rescale vertices still there, in place, shielded, with identical arrays; the graph
    runs."""
    assert _snapshot(graph).keys() == expected.keys()
    first = graph["standardize"]
    assert first.inputs == graph.inputs and graph.inputs[0].outputs == (first,)
    if "to_units" in expected:
        last = graph["to_units"]
        assert graph.outputs == (last,) and last.inputs[0].name == "head"
        assert last.inputs[0].shielded and last.inputs[0].nout == 3
    for name, arrays in expected.items():
        v = graph[name]
        assert v.shielded and is_shielded(v)
        for k, a in v.layer.arrays().items():
            np.testing.assert_array_equal(a, arrays[k])
    y = graph(x)
    assert y.shape == (len(x), outputs) and np.isfinite(y).all()


def _strong_mutation(kind):
    """Every graph mutation of the defaults, each tried on every vertex with p 0.3 (the growing
    ones only on graphs of up to 12 vertices, so that the test stays fast)."""
    def vm(m):
        return VertexMutation(MutationProbability(m, 0.3))

    grow = (VertexSpace(DenseSpace(range(4, 17), "relu")) if kind == "dense" else
            VertexSpace(ConvSpace(2, range(4, 9), "relu", kernelsizes=(3,))))
    growing = MutationChain(vm(NoutMutation(0.0, 0.3)), vm(AddVertexMutation(grow)),
                            vm(AddEdgeMutation()))
    other = [vm(NoutMutation(-0.3, 0.0)), vm(RemoveEdgeMutation()),
             vm(ActivationFunctionMutation()),
             VertexMutation(MutationProbability(RemoveVertexMutation(), 0.1))]
    if kind != "dense":
        other.append(vm(KernelSizeMutation(2, 5)))
    other = MutationChain(*other)

    def mutate(graph):
        if len(graph.vertices) <= 12:
            growing(graph)
        other(graph)
        te.select_neurons(graph)
        return graph
    return mutate


@pytest.mark.parametrize("kind", ["dense", "conv2d"])
def test_mutation_and_crossover_never_touch_a_shielded_rescale(kind):
    """The app's default mutation and crossover, and stronger versions of them, applied to a
    small population for 60 rounds (a graph left with no hidden layer is redrawn)."""
    te.seed(7)
    draw = _dense_parents if kind == "dense" else _conv_parents
    parents, x = draw(4)
    expected = _snapshot(parents[0])
    assert len(expected) == (2 if kind == "dense" else 1)
    rng = np.random.default_rng(0)
    mutations = [defaults.default_mutation(kind, 3), _strong_mutation(kind)]
    crossovers = [defaults.default_crossover(),
                  te.evolve_crossover(VertexCrossover(MutationProbability(CrossoverSwap(), 0.5)))]
    population = [te.CandidateModel(g) for g in parents]
    changed = 0
    for step in range(60):
        i, j = rng.choice(len(population), 2, replace=False)
        pair = (population[i], population[j])
        children = crossovers[step % 2](pair)
        changed += sum(_structure(c.graph()) != _structure(p.graph())
                       for c, p in zip(children, pair))
        for k, child in zip((i, j), children):
            graph = mutations[step % 2](child.graph())
            if len(graph.vertices) < len(parents[0].vertices) - 1:     # no hidden layer left
                graph = draw(1)[0][0]
            population[k] = te.CandidateModel(graph)
        for c in population:
            _assert_intact(c.graph(), expected, x, 3)
    assert changed >= 10, "crossover changed graph structures"


def _structure(graph):
    return [(v.name, v.nout) for v in graph.vertices]
