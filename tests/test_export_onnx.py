"""ONNX export: onnxruntime gives tinyevo's inference outputs (within 1e-4) for every layer,
activation, padding and merge; errors for what cannot be exported."""

import subprocess
import sys

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tinyevo as te
from tinyevo.app.onnx_export import export_onnx
from tinyevo.layers import (
    BatchNorm,
    Conv,
    Dense,
    Dropout,
    Flatten,
    GlobalPool,
    MaxPool,
    MeanPool,
    Sequential,
)
from tinyevo.layers.activations import NAMES

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

TOL = 1e-4


# ---------------------------------------------------------------------- helpers

def randomise(layers, seed=1):
    """Non-trivial biases, BatchNorm affine parameters and running statistics."""
    rng = np.random.default_rng(seed)
    for layer in layers:
        for name, a in layer.arrays().items():
            if name == "running_var":
                a[...] = rng.uniform(0.5, 2.0, a.shape)
            elif name in ("bias", "running_mean"):
                a[...] = rng.normal(0.0, 0.5, a.shape)
            elif name == "weight" and isinstance(layer, BatchNorm):
                a[...] = rng.uniform(0.5, 1.5, a.shape)


def session(proto):
    return ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])


def run(proto, *xs):
    sess = session(proto)
    names = [i.name for i in sess.get_inputs()]
    return sess.run(None, {n: x.astype(np.float32) for n, x in zip(names, xs)})


def assert_agrees(model, proto, *xs):
    expect = model(*xs)
    expect = expect if isinstance(expect, tuple) else (expect,)
    got = run(proto, *xs)
    assert len(got) == len(expect)
    for g, e in zip(got, expect):
        assert g.shape == e.shape
        scale = max(1.0, float(np.abs(e).max()))
        np.testing.assert_allclose(g, e, atol=TOL * scale, rtol=0)


def normal(*shape, seed=0, scale=1.0):
    return (np.random.default_rng(seed).standard_normal(shape) * scale).astype(np.float32)


# ---------------------------------------------------------------------- graphs

def dense_every_activation():
    inp = te.input_vertex("x", 5, "dense")
    v = inp
    for act in NAMES:
        v = te.vertex(Dense(v.nout, 6, act), v, name=f"dense_{act}")
    v = te.vertex(BatchNorm(6, "tanh"), v, name="bn")
    v = te.vertex(Dropout(0.3), v, name="drop")
    v = te.vertex(Flatten(), v, name="flat")
    v = te.vertex(Dense(6, 3, bias=False), v, name="out")
    graph = te.CompGraph(inp, v)
    randomise(graph.layers())
    return graph


def conv2d_graph():
    inp = te.input_vertex("image", 3, "conv2d")
    c1 = te.vertex(Conv(3, 4, (3, 3), stride=2, padding="same", activation="relu"), inp, name="c1")
    c2 = te.vertex(Conv(4, 5, (3, 2), dilation=(2, 1), padding="same", activation="gelu"), c1,
                   name="c2")
    c3 = te.vertex(Conv(5, 4, (2, 3), padding=((1, 0), (0, 2)), stride=(1, 2),
                        activation="swish"), c2, name="c3")
    bn = te.vertex(BatchNorm(4, "elu"), c3, name="bn")
    mp = te.vertex(MaxPool((2, 2), stride=1, padding=((0, 1), (1, 0))), bn, name="maxpool")
    ap = te.vertex(MeanPool(3, stride=2, padding=1), mp, name="meanpool")
    c4 = te.vertex(Conv(4, 6, (1, 1), activation="selu"), ap, name="pointwise")
    gp = te.vertex(GlobalPool("mean"), c4, name="gap")
    out = te.vertex(Dense(6, 3), gp, name="logits")
    graph = te.CompGraph(inp, out)
    randomise(graph.layers())
    return graph


def conv1d_graph():
    inp = te.input_vertex("signal", 2, "conv1d")
    c1 = te.vertex(Conv(2, 4, 5, ndim=1, stride=3, padding="same", dilation=2,
                        activation="leaky_relu"), inp, name="c1")
    bn = te.vertex(BatchNorm(4, "softplus"), c1, name="bn")
    c2 = te.vertex(Conv(4, 4, (3,), padding=((2, 1),), activation="sigmoid"), bn, name="c2")
    mp = te.vertex(MaxPool(3, stride=2), c2, name="maxpool")
    ap = te.vertex(MeanPool((2,), padding=((1, 0),)), mp, name="meanpool")
    gp = te.vertex(GlobalPool("max"), ap, name="gmp")
    out = te.vertex(Dense(4, 2, "tanh"), gp, name="out")
    graph = te.CompGraph(inp, out)
    randomise(graph.layers())
    return graph


def fork_graph(kind="conv2d"):
    """Residual add, a three-way concat fork, a multiplicative gate and two outputs."""
    nd = {"conv1d": 1, "conv2d": 2}.get(kind)

    def layer(nin, nout, act):
        if nd is None:
            return Dense(nin, nout, act)
        return Conv(nin, nout, (3,) * nd, padding="same", activation=act)

    inp = te.input_vertex("in", 3, kind)
    stem = te.vertex(layer(3, 6, "relu"), inp, name="stem")
    p1 = te.vertex(layer(6, 2, "identity"), stem, name="p1")
    p2 = te.vertex(BatchNorm(3, "relu"), te.vertex(layer(6, 3, "elu"), stem, name="p2a"),
                   name="p2")
    p3 = te.vertex(layer(6, 1, "tanh"), stem, name="p3")
    if nd:
        p3 = te.vertex(MaxPool(3, stride=1, padding=1), p3, name="p3pool")
    cat = te.concat(p1, p2, p3, name="cat")
    res = te.add(stem, cat, stem, name="res")             # three inputs: Sum
    gate = te.vertex(layer(6, 6, "sigmoid"), res, name="gate")
    gated = te.mul(res, gate, name="gated")
    post = te.vertex(layer(6, 4, "relu"), gated, name="post")
    if nd:
        post = te.vertex(GlobalPool("mean"), post, name="gap")
    out1 = te.vertex(Dense(4, 3), post, name="out1")
    out2 = te.vertex(Dense(4, 2, "softplus"), post, name="out2")
    graph = te.CompGraph(inp, [out1, out2])
    randomise(graph.layers())
    return graph


# ---------------------------------------------------------------------- agreement

@pytest.mark.parametrize("opset", [17, 20])
def test_dense_chain_with_every_activation(opset):
    graph = dense_every_activation()
    proto = export_onnx(graph, None, opset=opset)
    assert_agrees(graph, proto, normal(7, 5, scale=2.0))
    ops = {n.op_type for n in proto.graph.node}
    assert ("Gelu" in ops) == (opset >= 20)
    assert {"Gemm", "Relu", "LeakyRelu", "Elu", "Selu", "Sigmoid", "Tanh", "Softplus",
            "BatchNormalization"} <= ops
    assert "Dropout" not in ops


@pytest.mark.parametrize("spatial", [(9, 7), (16, 16), (5, 6)])
def test_conv2d_dynamic_spatial_size(spatial):
    graph = conv2d_graph()
    proto = export_onnx(graph, None)
    assert_agrees(graph, proto, normal(2, 3, *spatial))


@pytest.mark.parametrize("spatial", [(9, 7), (12, 11)])
def test_conv2d_fixed_input_shape(spatial):
    graph = conv2d_graph()
    proto = export_onnx(graph, None, input_shape=(3, *spatial))
    assert not any(n.attribute and any(a.name == "auto_pad" for a in n.attribute)
                   for n in proto.graph.node)          # explicit pads for a known size
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_value for d in dims[1:]] == [3, *spatial]
    assert_agrees(graph, proto, normal(3, 3, *spatial, seed=4))


@pytest.mark.parametrize("length", [17, 30])
def test_conv1d(length):
    graph = conv1d_graph()
    for shape in (None, (2, length)):
        proto = export_onnx(graph, None, input_shape=shape)
        assert_agrees(graph, proto, normal(4, 2, length, seed=length))


@pytest.mark.parametrize("kind,spatial", [("dense", ()), ("conv1d", (11,)), ("conv2d", (6, 5))])
def test_fork_residual_gate_and_two_outputs(kind, spatial):
    graph = fork_graph(kind)
    proto = export_onnx(graph, None)
    assert [o.name for o in proto.graph.output] == ["out1", "out2"]
    assert {"Concat", "Sum", "Mul"} <= {n.op_type for n in proto.graph.node}
    assert_agrees(graph, proto, normal(3, 3, *spatial, seed=2))


def test_two_inputs():
    a, b = te.input_vertex("a", 2, "dense"), te.input_vertex("b", 3, "dense")
    ha = te.vertex(Dense(2, 4, "relu"), a, name="ha")
    hb = te.vertex(Dense(3, 4, "selu"), b, name="hb")
    out = te.vertex(Dense(8, 2), te.concat(te.add(ha, hb), hb), name="y")
    graph = te.CompGraph([a, b], out)
    proto = export_onnx(graph, None, input_shape=[(2,), (3,)])
    assert [i.name for i in proto.graph.input] == ["a", "b"]
    assert_agrees(graph, proto, normal(5, 2), normal(5, 3, seed=1))


def test_sequential_conv_flatten_dense():
    conv = Conv(1, 4, (3, 3), stride=2, padding="same", activation="relu")
    model = Sequential(conv, MaxPool(2), Flatten(), Dense(4 * 2 * 2, 3, "gelu"))
    randomise(model.layers())
    proto = export_onnx(model, None, input_shape=(1, 8, 7))
    out_dims = proto.graph.output[0].type.tensor_type.shape.dim
    assert out_dims[0].dim_param == "batch" and out_dims[1].dim_value == 3
    assert_agrees(model, proto, normal(6, 1, 8, 7))


def test_sequential_dense_needs_no_input_shape():
    model = Sequential(Dense(4, 5, "swish"), BatchNorm(5), Dense(5, 2))
    randomise(model.layers())
    assert_agrees(model, export_onnx(model, None), normal(3, 4))


def test_dynamic_batch_and_file(tmp_path):
    graph = conv2d_graph()
    path = tmp_path / "model.onnx"
    proto = export_onnx(graph, path)
    assert path.is_file() and not list(tmp_path.glob(".*tmp"))
    loaded = onnx.load(str(path))
    onnx.checker.check_model(loaded)
    assert loaded.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    assert loaded.producer_name == "tinyevo"
    assert loaded.SerializeToString() == proto.SerializeToString()
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for n in (1, 5):
        x = normal(n, 3, 10, 9, seed=n)
        np.testing.assert_allclose(sess.run(None, {"image": x})[0], graph(x), atol=TOL)


def test_float64_model_exports_float32():
    te.backend.set_floatx(np.float64)
    model = Sequential(Dense(3, 4, "tanh", dtype=np.float64), Dense(4, 2, dtype=np.float64))
    te.backend.set_floatx(np.float32)
    proto = export_onnx(model, None)
    assert all(t.data_type == onnx.TensorProto.FLOAT for t in proto.graph.initializer)
    x = normal(4, 3).astype(np.float64)
    np.testing.assert_allclose(run(proto, x)[0], model(x), atol=TOL)


def test_candidate_is_unwrapped():
    graph = fork_graph("dense")
    proto = export_onnx(te.CandidateModel(graph), None)
    assert_agrees(graph, proto, normal(2, 3))


@settings(max_examples=20, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_random_graphs_agree(data):
    """Random chains with forks (concat / add / mul) of conv or dense layers."""
    kind = data.draw(st.sampled_from(["dense", "conv1d", "conv2d"]))
    nd = {"dense": 0, "conv1d": 1, "conv2d": 2}[kind]
    inp = te.input_vertex("in", data.draw(st.integers(1, 4)), kind)
    v = inp
    size = (11,) * nd                      # the spatial size reaching the next layer
    for i in range(data.draw(st.integers(1, 4))):
        act = data.draw(st.sampled_from(NAMES))
        n = data.draw(st.integers(1, 5))
        if nd:
            k = data.draw(st.integers(1, 3))
            stride = data.draw(st.integers(1, 2))
            pad = data.draw(st.sampled_from(["same", 0, 1]))
            layer = Conv(v.nout, n, (k,) * nd, stride=stride, padding=pad, activation=act)
            if min(layer.output_shape(size)) < 1:       # too small for this kernel: keep size
                pad, stride = "same", 1
                layer = Conv(v.nout, n, (k,) * nd, padding=pad, activation=act)
            size = layer.output_shape(size)
        else:
            layer = Dense(v.nout, n, act)
        h = te.vertex(layer, v, name=f"h{i}")
        merge = data.draw(st.sampled_from([None, "concat", "add", "mul", "bn"]))
        if merge == "bn":
            h = te.vertex(BatchNorm(n, data.draw(st.sampled_from(NAMES))), h, name=f"bn{i}")
        elif merge and (not nd or layer.stride == (1,) * nd and pad == "same"):
            twin_layer = (Conv(v.nout, n, (3,) * nd, padding="same") if nd
                          else Dense(v.nout, n, "tanh"))
            twin = te.vertex(twin_layer, v, name=f"t{i}")
            h = {"concat": te.concat, "add": te.add, "mul": te.mul}[merge](h, twin,
                                                                          name=f"m{i}")
        v = h
    if nd:
        v = te.vertex(GlobalPool(data.draw(st.sampled_from(["mean", "max"]))), v, name="gp")
    graph = te.CompGraph(inp, te.vertex(Dense(v.nout, 2), v, name="out"))
    randomise(graph.layers(), seed=data.draw(st.integers(0, 100)))
    spatial = (11,) * nd
    x = normal(3, inp.nout, *spatial, seed=data.draw(st.integers(0, 100)))
    fixed = data.draw(st.booleans())
    proto = export_onnx(graph, None, input_shape=(inp.nout, *spatial) if fixed else None)
    assert_agrees(graph, proto, x)


# ---------------------------------------------------------------------- errors

def test_missing_onnx_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "onnx", None)
    with pytest.raises(ImportError, match=r"pip install 'tinyevo\[onnx\]'"):
        export_onnx(dense_every_activation(), None)


def test_import_tinyevo_does_not_import_onnx():
    code = "import sys, tinyevo; print('onnx' in sys.modules, 'onnxruntime' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


def test_bad_arguments():
    graph = conv2d_graph()
    with pytest.raises(ValueError, match=r"takes \(3, \*spatial\)"):
        export_onnx(graph, None, input_shape=(4, 8, 8))
    with pytest.raises(ValueError, match="without the batch axis"):
        export_onnx(graph, None, input_shape="3x8x8")
    with pytest.raises(ValueError, match="too small"):
        export_onnx(conv1d_graph(), None, input_shape=(2, 1))
    with pytest.raises(ValueError, match="opset"):
        export_onnx(graph, None, opset=9)
    with pytest.raises(TypeError, match="CompGraph"):
        export_onnx(object(), None)
    with pytest.raises(ValueError, match="input_shape"):
        export_onnx(Sequential(MaxPool(2), Flatten()), None)


def test_pending_size_change_is_refused():
    graph = dense_every_activation()
    assert te.change_nout(graph, {graph["dense_relu"]: 2}, select=False)
    with pytest.raises(ValueError, match="select_neurons"):
        export_onnx(graph, None)


def test_export_from_each_backend(xp):
    model = Sequential(Conv(2, 3, (3, 3), stride=2, padding="same", activation="relu"),
                       GlobalPool("mean"), Dense(3, 2))
    x = normal(2, 2, 7, 6)
    got = run(export_onnx(model, None), x)[0]
    np.testing.assert_allclose(got, te.backend.to_numpy(model(xp.asarray(x))), atol=TOL)
