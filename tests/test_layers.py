"""Layers: gradient checks, agreement with PyTorch, seeds, specs, neuron surgery, bad input."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
from gradcheck import check_function, check_layer

import tinyevo
from tinyevo import backend as B
from tinyevo.layers import (
    LAYER_TYPES,
    BatchNorm,
    Conv,
    Dense,
    Dropout,
    Flatten,
    GlobalPool,
    Layer,
    MaxPool,
    MeanPool,
    Rescale,
    Sequential,
    activations,
    initialize,
    layer_from_spec,
)
from tinyevo.layers._layout import from_cl


def _data(xp, shape, seed=0, distinct=False):
    """float64 test input; ``distinct`` spaces values apart so max-pooling has no near-ties."""
    rng = np.random.default_rng(seed)
    if distinct:
        n = int(np.prod(shape))
        x = (rng.permutation(n) - n / 2) * 0.1 + rng.uniform(-0.01, 0.01, n)
        return xp.asarray(x.reshape(shape))
    return xp.asarray(rng.standard_normal(shape))


def _randomise(layer, seed=1):
    """Give every array a non-default value, so that checks cannot pass by symmetry."""
    rng = np.random.default_rng(seed)
    for d in (layer.params, layer.state):
        for k, a in d.items():
            v = rng.standard_normal(a.shape)
            if k == "running_var":
                v = rng.uniform(0.5, 2.0, a.shape)
            d[k] = B.to_device(v, dtype=a.dtype)
    return layer


def _np(a):
    return B.to_numpy(a)


# ----------------------------------------------------------------------------- gradient checks

DENSE_CASES = {
    "dense": (lambda: Dense(3, 4), (5, 3)),
    "dense-nobias": (lambda: Dense(3, 4, bias=False), (5, 3)),
    "dense-1x1": (lambda: Dense(1, 1), (2, 1)),
}

CONV_CASES = {
    "conv1d": (lambda: Conv(2, 3, (3,)), (2, 2, 7)),
    "conv1d-stride2-pad1": (lambda: Conv(2, 3, (3,), stride=2, padding=1), (2, 2, 8)),
    "conv1d-same-even-dil2": (lambda: Conv(2, 3, (4,), padding="same", dilation=2), (2, 2, 9)),
    "conv1d-same-stride3": (lambda: Conv(2, 2, (3,), stride=3, padding="same"), (2, 2, 10)),
    "conv1d-asym-pad": (lambda: Conv(2, 3, (2,), stride=2, padding=((2, 0),)), (2, 2, 7)),
    "conv1d-int-kernel": (lambda: Conv(2, 3, 3, ndim=1, activation="tanh"), (2, 2, 6)),
    "conv2d": (lambda: Conv(2, 3, (3, 3)), (2, 2, 6, 5)),
    "conv2d-stride-pad": (lambda: Conv(2, 3, (3, 2), stride=(2, 1), padding=(1, 2)), (2, 2, 6, 5)),
    "conv2d-same-stride2": (lambda: Conv(2, 2, (3, 2), stride=2, padding="same"), (2, 2, 7, 6)),
    "conv2d-same-dil": (lambda: Conv(2, 2, (3, 3), padding="same", dilation=(2, 1)), (2, 2, 7, 5)),
    "conv2d-dil-pad": (lambda: Conv(2, 3, (2, 2), dilation=(2, 3), padding=1), (2, 2, 6, 7)),
    "conv2d-pointwise": (lambda: Conv(3, 2, (1, 1)), (2, 3, 4, 3)),
    "conv2d-1x1-stride2": (lambda: Conv(3, 2, (1, 1), stride=2), (2, 3, 5, 4)),
    "conv2d-1x1-pad": (lambda: Conv(3, 2, (1, 1), padding=1), (2, 3, 3, 3)),
    "conv2d-elu": (lambda: Conv(2, 2, (3, 3), padding=1, activation="elu"), (2, 2, 4, 4)),
    "conv2d-nobias": (lambda: Conv(2, 2, (2, 2), bias=False), (2, 2, 4, 4)),
}

POOL_CASES = {
    "maxpool1d": (lambda: MaxPool(2), (2, 3, 8)),
    "maxpool1d-w3-s2-p1": (lambda: MaxPool((3,), stride=2, padding=1), (2, 3, 8)),
    "maxpool2d": (lambda: MaxPool((2, 2)), (2, 2, 4, 6)),
    "maxpool2d-overlap-pad": (lambda: MaxPool((3, 3), stride=1, padding=1), (2, 2, 4, 5)),
    "maxpool2d-stride-pad": (lambda: MaxPool((3, 2), stride=(2, 1), padding=(1, 0)), (2, 2, 5, 4)),
    "meanpool1d": (lambda: MeanPool(2), (2, 3, 8)),
    "meanpool1d-w3-s2-p1": (lambda: MeanPool((3,), stride=2, padding=1), (2, 3, 7)),
    "meanpool2d": (lambda: MeanPool((2, 2)), (2, 2, 4, 6)),
    "meanpool2d-overlap-pad": (lambda: MeanPool((3, 3), stride=1, padding=1), (2, 2, 4, 5)),
    "globalpool-mean-2d": (lambda: GlobalPool("mean"), (2, 3, 4, 3)),
    "globalpool-max-2d": (lambda: GlobalPool("max"), (2, 3, 4, 3)),
    "globalpool-mean-1d": (lambda: GlobalPool("mean"), (2, 3, 5)),
    "globalpool-max-1d": (lambda: GlobalPool("max"), (2, 3, 5)),
    "flatten-3d": (lambda: Flatten(), (2, 3, 4)),
    "flatten-4d": (lambda: Flatten(), (2, 3, 2, 2)),
    "dropout-eval": (lambda: Dropout(0.5), (3, 4)),
}

NORM_CASES = {
    "bn-nc": (lambda: BatchNorm(3), (6, 3)),
    "bn-ncl": (lambda: BatchNorm(3), (3, 3, 4)),
    "bn-nchw": (lambda: BatchNorm(2), (2, 2, 3, 3)),
    "bn-nchw-relu": (lambda: BatchNorm(2, "relu"), (2, 2, 3, 3)),
    "bn-nc-swish": (lambda: BatchNorm(3, "swish", eps=1e-3), (5, 3)),
}


def _grad_case(cases, case):
    make, shape = cases[case]
    B.set_floatx(np.float64)
    return make(), shape


@pytest.mark.parametrize("case", sorted(DENSE_CASES) + sorted(CONV_CASES))
def test_gradients_dense_conv(xp, case):
    layer, shape = _grad_case({**DENSE_CASES, **CONV_CASES}, case)
    _randomise(layer)
    grads = check_layer(layer, _data(xp, shape))
    assert set(grads) == {"x", *layer.params}


@pytest.mark.parametrize("name", activations.NAMES)
def test_gradients_dense_every_activation(xp, name):
    B.set_floatx(np.float64)
    layer = _randomise(Dense(3, 4, activation=name))
    # Pre-activations well away from 0, where relu-like kinks would spoil central differences.
    x = _data(xp, (6, 3), seed=3)
    check_layer(layer, x)


@pytest.mark.parametrize("name", activations.NAMES)
def test_activation_derivative_elementwise(xp, name):
    act = activations.get(name)
    z0 = xp.asarray(np.array([-3.0, -1.2, -0.3, 0.2, 0.7, 2.5]))

    def f(z):
        return act.forward(z.copy()).sum()

    z = z0.copy()
    y = act.forward(z.copy())
    check_function(f, z0, act.backward(xp.ones_like(y), z0.copy(), y))


@pytest.mark.parametrize("case", sorted(POOL_CASES))
def test_gradients_pool_flatten_dropout(xp, case):
    layer, shape = _grad_case(POOL_CASES, case)
    train = not case.startswith("dropout")          # dropout's eval mode is the deterministic one
    check_layer(layer, _data(xp, shape, distinct=True), train=train)


@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("case", sorted(NORM_CASES))
def test_gradients_batchnorm(xp, case, train):
    layer, shape = _grad_case(NORM_CASES, case)
    _randomise(layer)
    check_layer(layer, _data(xp, shape), train=train)


@pytest.mark.parametrize("train", [True, False])
def test_gradients_batchnorm_offset_data(xp, train):
    # |mean| >> std: the forward takes the two-pass (centred) statistics instead of E[x^2].
    layer, shape = _grad_case(NORM_CASES, "bn-nchw-relu")
    _randomise(layer)
    check_layer(layer, _data(xp, shape) + 20.0, train=train)


@pytest.mark.parametrize("offset", [0.0, 1.5, 1e3])
def test_batchnorm_float32_matches_float64(xp, offset):
    # The one-pass statistics (well-conditioned data) and the centred ones (large offsets)
    # both stay within float32 rounding of a float64 evaluation.
    rng = np.random.default_rng(0)
    x = rng.standard_normal((16, 4, 6, 6)) * rng.uniform(0.5, 2.0, (1, 4, 1, 1)) + offset
    dy = rng.standard_normal(x.shape)
    results = {}
    for dt in (np.float32, np.float64):
        B.set_floatx(dt)
        layer = BatchNorm(4, "relu")
        layer.params["weight"][:] = xp.asarray([0.5, 1.0, 1.5, 2.0])
        y, back = layer.forward(xp.asarray(x.astype(dt)), train=True)
        dx = back(xp.asarray(dy.astype(dt)))
        results[dt] = [_np(a) for a in (y, dx, layer.grads["weight"], layer.grads["bias"],
                                        layer.state["running_var"])]
    for a32, a64 in zip(results[np.float32], results[np.float64]):
        np.testing.assert_allclose(a32, a64, rtol=2e-4, atol=2e-4 * np.abs(a64).max())


def test_dropout_train_p0_and_backprop_matches_mask(xp):
    B.set_floatx(np.float64)
    x = _data(xp, (4, 5))
    y, back = Dropout(0.0).forward(x, train=True)
    np.testing.assert_array_equal(_np(y), _np(x))
    y, back = Dropout(0.5).forward(x, train=True, rng=np.random.default_rng(0))
    dx = _np(back(xp.ones_like(y)))
    kept = _np(y) != 0
    assert 0 < kept.sum() < kept.size
    np.testing.assert_allclose(dx[kept], 2.0)
    np.testing.assert_allclose(dx[~kept], 0.0)
    np.testing.assert_allclose(_np(y)[kept], 2.0 * _np(x)[kept])


def test_backprop_accumulates_into_grads(xp):
    layer = Conv(2, 3, (3,), padding=1)
    x = xp.asarray(np.random.default_rng(0).standard_normal((2, 2, 5)), dtype=np.float32)
    y, back = layer.forward(x, train=True)
    back(xp.ones_like(y))
    once = {k: _np(g).copy() for k, g in layer.grads.items()}
    assert all(np.abs(g).sum() > 0 for g in once.values())
    back(xp.ones_like(y))
    for k, g in layer.grads.items():
        np.testing.assert_allclose(_np(g), 2 * once[k], rtol=1e-5)
    layer.zero_grads()
    assert all(float(np.abs(_np(g)).sum()) == 0 for g in layer.grads.values())


@pytest.mark.parametrize("name", activations.NAMES)
def test_float32_stays_float32(xp, name):
    layers = [Dense(3, 4, name), Conv(2, 3, (3, 3), padding="same", activation=name),
              BatchNorm(3, name)]
    rng = np.random.default_rng(0)
    for layer, shape in zip(layers, [(2, 3), (2, 2, 4, 4), (4, 3)]):
        x = xp.asarray(rng.standard_normal(shape), dtype=np.float32)
        y, back = layer.forward(x, train=True)
        dx = back(xp.ones_like(y))
        assert y.dtype == np.float32 and dx.dtype == np.float32, (layer, y.dtype, dx.dtype)
        assert all(g.dtype == np.float32 for g in layer.grads.values())


def test_float64_input_is_cast_to_layer_dtype(xp):
    layer = Dense(3, 2)
    y = layer(xp.ones((2, 3), dtype=np.float64))
    assert y.dtype == np.float32


def test_activation_settable_after_construction(xp):
    layer = Dense(2, 3)
    x = xp.asarray(np.array([[1.0, -2.0], [-0.5, 0.3]]), dtype=np.float32)
    z = _np(layer(x))
    layer.activation = "relu"
    assert layer.activation == "relu"
    np.testing.assert_allclose(_np(layer(x)), np.maximum(z, 0), rtol=1e-6)
    layer.activation = "elu"
    np.testing.assert_allclose(_np(layer(x)), np.where(z > 0, z, np.expm1(z)), rtol=1e-5,
                               atol=1e-7)
    with pytest.raises(ValueError, match="unknown activation"):
        layer.activation = "nope"
    assert layer.activation == "elu"


def test_activations_extreme_values_finite(xp):
    z = np.array([-1e4, -80.0, 0.0, 80.0, 1e4], dtype=np.float32)
    for name in activations.NAMES:
        act = activations.get(name)
        y = act.forward(xp.asarray(z))
        dz = act.backward(xp.ones_like(y), xp.asarray(z), y)
        assert np.isfinite(_np(y)).all() or name in ("identity", "relu", "leaky_relu"), name
        assert np.isfinite(_np(dz)).all(), name
        assert y.dtype == np.float32, name


# ----------------------------------------------------------------------------- PyTorch agreement

def _torch():
    return pytest.importorskip("torch")


def _channels_last(x):
    """The same values as ``x`` (N, C, *S), in channels-last memory (as layers output them)."""
    return np.moveaxis(np.ascontiguousarray(np.moveaxis(x, 1, -1)), -1, 1)


TORCH_CONV = [
    ((3,), 1, 0, 1),
    ((3,), 2, 1, 1),
    ((4,), 1, "same", 2),
    ((3,), 3, 2, 2),
    ((3, 3), 1, 0, 1),
    ((3, 2), (2, 1), (1, 0), 1),
    ((3, 3), 1, "same", (2, 1)),
    ((2, 3), 1, "same", 1),
    ((3, 3), 2, 1, 2),
    ((1, 1), 1, 0, 1),
]


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel")
@pytest.mark.parametrize("layout", ["channels_first", "channels_last"])
@pytest.mark.parametrize("kernel,stride,padding,dilation", TORCH_CONV)
def test_conv_matches_torch(kernel, stride, padding, dilation, layout):
    torch = _torch()
    nd = len(kernel)
    B.set_floatx(np.float64)
    layer = _randomise(Conv(3, 4, kernel, stride=stride, padding=padding, dilation=dilation))
    shape = (2, 3, 9) if nd == 1 else (2, 3, 8, 7)
    x = np.random.default_rng(0).standard_normal(shape)
    # Conv unfolds C-contiguous input channels-first, and a layer's output (channels-last
    # memory behind a channels-first view) channels-last: both paths must agree with PyTorch.
    x_in = x if layout == "channels_first" else _channels_last(x)
    y, back = layer.forward(x_in)
    dy = np.random.default_rng(1).standard_normal(y.shape)
    dx = back(dy)

    cls = torch.nn.Conv1d if nd == 1 else torch.nn.Conv2d
    tpad = padding if isinstance(padding, str) else padding
    tconv = cls(3, 4, kernel, stride=stride, padding=tpad, dilation=dilation).double()
    with torch.no_grad():
        tconv.weight.copy_(torch.from_numpy(layer.params["weight"]))
        tconv.bias.copy_(torch.from_numpy(layer.params["bias"]))
    tx = torch.from_numpy(x).requires_grad_(True)
    ty = tconv(tx)
    ty.backward(torch.from_numpy(dy))
    np.testing.assert_allclose(y, ty.detach().numpy(), rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(dx, tx.grad.numpy(), rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(layer.grads["weight"], tconv.weight.grad.numpy(), rtol=1e-10,
                               atol=1e-10)
    np.testing.assert_allclose(layer.grads["bias"], tconv.bias.grad.numpy(), rtol=1e-10,
                               atol=1e-10)


def test_conv_same_stride2_output_size():
    layer = Conv(1, 1, (3, 3), stride=2, padding="same")
    assert layer.output_shape((7, 8)) == (4, 4)
    y = layer(np.zeros((1, 1, 7, 8), np.float32))
    assert y.shape == (1, 1, 4, 4)


def test_dense_matches_torch():
    torch = _torch()
    B.set_floatx(np.float64)
    layer = _randomise(Dense(5, 3))
    x = np.random.default_rng(0).standard_normal((4, 5))
    y, back = layer.forward(x)
    dy = np.random.default_rng(1).standard_normal(y.shape)
    dx = back(dy)
    lin = torch.nn.Linear(5, 3).double()
    with torch.no_grad():
        lin.weight.copy_(torch.from_numpy(layer.params["weight"]))
        lin.bias.copy_(torch.from_numpy(layer.params["bias"]))
    tx = torch.from_numpy(x).requires_grad_(True)
    ty = lin(tx)
    ty.backward(torch.from_numpy(dy))
    np.testing.assert_allclose(y, ty.detach().numpy(), rtol=1e-12)
    np.testing.assert_allclose(dx, tx.grad.numpy(), rtol=1e-12)
    np.testing.assert_allclose(layer.grads["weight"], lin.weight.grad.numpy(), rtol=1e-12)


@pytest.mark.parametrize("name", activations.NAMES)
def test_activation_matches_torch(name):
    torch = _torch()
    F = torch.nn.functional
    ref = {
        "identity": lambda t: t, "relu": F.relu, "leaky_relu": F.leaky_relu, "elu": F.elu,
        "selu": F.selu, "gelu": lambda t: F.gelu(t, approximate="tanh"),
        "sigmoid": torch.sigmoid, "tanh": torch.tanh, "softplus": F.softplus, "swish": F.silu,
    }[name]
    z = np.linspace(-6, 6, 41) + 0.013
    act = activations.get(name)
    y = act.forward(z.copy())
    tz = torch.from_numpy(z).requires_grad_(True)
    ty = ref(tz)
    ty.sum().backward()
    np.testing.assert_allclose(y, ty.detach().numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(act.backward(np.ones_like(y), z.copy(), y), tz.grad.numpy(),
                               rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("offset", [0.0, 30.0])
@pytest.mark.parametrize("shape", [(8, 3), (4, 3, 5), (2, 3, 4, 3)])
def test_batchnorm_matches_torch(shape, offset):
    torch = _torch()
    B.set_floatx(np.float64)
    layer = _randomise(BatchNorm(3, momentum=0.2, eps=1e-4))
    layer.state["running_mean"][:] = 0.0
    layer.state["running_var"][:] = 1.0
    cls = {2: torch.nn.BatchNorm1d, 3: torch.nn.BatchNorm1d, 4: torch.nn.BatchNorm2d}[len(shape)]
    tbn = cls(3, momentum=0.2, eps=1e-4).double()
    with torch.no_grad():
        tbn.weight.copy_(torch.from_numpy(layer.params["weight"]))
        tbn.bias.copy_(torch.from_numpy(layer.params["bias"]))
    rng = np.random.default_rng(0)
    tbn.train()
    for step in range(3):
        x = rng.standard_normal(shape) * (step + 1) + step + offset
        y, back = layer.forward(x, train=True)
        dy = rng.standard_normal(y.shape)
        tx = torch.from_numpy(x).requires_grad_(True)
        ty = tbn(tx)
        ty.backward(torch.from_numpy(dy))
        dx = back(dy)
        np.testing.assert_allclose(y, ty.detach().numpy(), rtol=1e-9, atol=1e-10)
        np.testing.assert_allclose(dx, tx.grad.numpy(), rtol=1e-8, atol=1e-10)
        np.testing.assert_allclose(layer.state["running_mean"], tbn.running_mean.numpy(),
                                   rtol=1e-10)
        np.testing.assert_allclose(layer.state["running_var"], tbn.running_var.numpy(),
                                   rtol=1e-10)
    np.testing.assert_allclose(layer.grads["weight"], tbn.weight.grad.numpy(), rtol=1e-8)
    np.testing.assert_allclose(layer.grads["bias"], tbn.bias.grad.numpy(), rtol=1e-8)
    tbn.eval()
    x = rng.standard_normal(shape)
    np.testing.assert_allclose(layer(x), tbn(torch.from_numpy(x)).detach().numpy(),
                               rtol=1e-10, atol=1e-12)


TORCH_POOL = [
    ("max", (2,), None, 0, (2, 3, 8)),
    ("max", (3,), 2, 1, (2, 3, 8)),
    ("max", (2, 2), None, 0, (2, 3, 6, 4)),
    ("max", (3, 3), (2, 1), 1, (2, 3, 7, 5)),
    ("max", (3, 2), 1, (1, 0), (2, 3, 5, 4)),
    ("mean", (2,), None, 0, (2, 3, 8)),
    ("mean", (3,), 2, 1, (2, 3, 7)),
    ("mean", (2, 2), None, 0, (2, 3, 6, 4)),
    ("mean", (3, 3), (2, 1), 1, (2, 3, 7, 5)),
]


@pytest.mark.parametrize("ties", [False, True], ids=["distinct", "ties"])
@pytest.mark.parametrize("mode,window,stride,padding,shape", TORCH_POOL)
def test_pool_matches_torch(mode, window, stride, padding, shape, ties):
    torch = _torch()
    F = torch.nn.functional
    B.set_floatx(np.float64)
    cls = MaxPool if mode == "max" else MeanPool
    layer = cls(window, stride=stride, padding=padding)
    rng = np.random.default_rng(0)
    # With ties (small integers) max-pooling must route the gradient to the first maximum.
    x = rng.integers(-2, 3, shape).astype(np.float64) if ties else rng.standard_normal(shape)
    y, back = layer.forward(x, train=True)
    dy = rng.standard_normal(y.shape)
    dx = back(dy)
    np.testing.assert_array_equal(layer(x), y)
    nd = len(window)
    tx = torch.from_numpy(x).requires_grad_(True)
    tstride = stride if stride is not None else window
    if mode == "max":
        fn = F.max_pool1d if nd == 1 else F.max_pool2d
        ty = fn(tx, window, tstride, padding)
    else:
        fn = F.avg_pool1d if nd == 1 else F.avg_pool2d
        ty = fn(tx, window, tstride, padding, count_include_pad=True)
    ty.backward(torch.from_numpy(dy))
    np.testing.assert_allclose(y, ty.detach().numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(dx, tx.grad.numpy(), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("mode", ["mean", "max"])
def test_globalpool_matches_torch(mode):
    torch = _torch()
    x = np.random.default_rng(0).standard_normal((2, 3, 4, 5))
    y, back = GlobalPool(mode).forward(x)
    dy = np.random.default_rng(1).standard_normal(y.shape)
    dx = back(dy)
    tx = torch.from_numpy(x).requires_grad_(True)
    ty = tx.mean(dim=(2, 3)) if mode == "mean" else tx.amax(dim=(2, 3))
    ty.backward(torch.from_numpy(dy))
    assert y.shape == (2, 3)
    np.testing.assert_allclose(y, ty.detach().numpy(), rtol=1e-12)
    np.testing.assert_allclose(dx, tx.grad.numpy(), rtol=1e-12, atol=1e-15)


def test_flatten_matches_torch_order():
    torch = _torch()
    x = np.arange(24, dtype=np.float32).reshape(2, 3, 2, 2)
    y = Flatten()(x)
    np.testing.assert_array_equal(y, torch.flatten(torch.from_numpy(x), 1).numpy())
    # Also after a channels-first view handed out by a conv layer.
    conv = Conv(3, 2, (1, 1))
    out = conv(x)
    ref = torch.flatten(torch.from_numpy(np.ascontiguousarray(out)), 1).numpy()
    np.testing.assert_array_equal(Flatten()(out), ref)


# ----------------------------------------------------------------------------- init

def test_identity_init_dense(xp):
    x = xp.asarray(np.random.default_rng(0).standard_normal((3, 4)), dtype=np.float32)
    y = Dense(4, 4, init="identity")(x)
    np.testing.assert_array_equal(_np(y), _np(x))
    y = Dense(4, 6, init="identity")(x)
    np.testing.assert_array_equal(_np(y)[:, :4], _np(x))
    np.testing.assert_array_equal(_np(y)[:, 4:], 0)
    y = Dense(4, 2, init="identity")(x)
    np.testing.assert_array_equal(_np(y), _np(x)[:, :2])


@pytest.mark.parametrize("kernel", [(3,), (4,), (1,), (3, 3), (2, 2), (3, 4), (5, 1)])
def test_identity_init_conv_same_is_identity_map(xp, kernel):
    shape = (2, 3, 7) if len(kernel) == 1 else (2, 3, 6, 5)
    x = xp.asarray(np.random.default_rng(0).standard_normal(shape), dtype=np.float32)
    layer = Conv(3, 3, kernel, padding="same", init="identity")
    y = layer(x)
    np.testing.assert_allclose(_np(y), _np(x), err_msg=f"kernel {kernel}")


def test_init_statistics_and_names():
    gen = np.random.default_rng(0)
    w = initialize("glorot_uniform", (200, 100), rng=gen)
    limit = np.sqrt(6 / 300)
    assert w.dtype == np.float32
    assert np.abs(w).max() <= limit and np.abs(w).max() > 0.95 * limit
    w = initialize("he", (64, 32, 3, 3), rng=gen)
    assert abs(w.std() - np.sqrt(2 / (32 * 9))) < 0.01
    assert not initialize("zeros", (3, 2)).any()
    assert initialize("he", (3, 2), dtype=np.float64).dtype == np.float64
    with pytest.raises(ValueError, match="unknown init"):
        initialize("orthogonal", (3, 3))
    with pytest.raises(ValueError, match="unknown init"):
        Dense(3, 3, init="nope")


# ----------------------------------------------------------------------------- seeds and specs

def _all_layers():
    """One of each layer kind, with input shapes, randomised so that specs must carry arrays."""
    return [
        (Dense(4, 3, "relu"), (5, 4)),
        (Dense(4, 3, bias=False), (5, 4)),
        (Conv(2, 3, (3, 3), stride=2, padding="same", dilation=1, activation="elu"), (2, 2, 6, 5)),
        (Conv(2, 3, (3,), padding=((1, 2),), dilation=2, activation="tanh"), (2, 2, 7)),
        (BatchNorm(3, "selu", momentum=0.3, eps=1e-3), (4, 3, 5)),
        (MaxPool((3, 3), stride=2, padding=1), (2, 2, 5, 5)),
        (MaxPool((2, 2), padding=((0, 1), (0, 1))), (2, 2, 5, 5)),   # nested tuples (odd sizes)
        (MeanPool(2), (2, 2, 6)),
        (GlobalPool("max"), (2, 3, 4)),
        (Flatten(), (2, 3, 2)),
        (Dropout(0.3), (3, 4)),
        (Rescale([1.0, 2.0, 3.0], [0.5, 0.0, -1.0]), (2, 3, 4, 5)),
    ]


LAYER_IDS = [f"{type(layer).__name__}{i}" for i, (layer, _) in enumerate(_all_layers())]


def test_every_registered_layer_is_covered():
    covered = {type(layer).__name__ for layer, _ in _all_layers()}
    assert covered == set(LAYER_TYPES)


@pytest.mark.parametrize("index", range(len(LAYER_IDS)), ids=LAYER_IDS)
def test_spec_round_trip_identical_outputs(xp, index):
    layer, shape = _all_layers()[index]
    _randomise(layer, seed=index)
    x = xp.asarray(np.random.default_rng(index).standard_normal(shape), dtype=np.float32)
    layer.forward(x, train=True)                   # moves running statistics where there are any
    spec = layer.to_spec()
    text = json.dumps(spec)
    rebuilt = layer_from_spec(json.loads(text), layer.arrays())
    assert type(rebuilt) is type(layer)
    assert rebuilt.to_spec() == spec
    assert repr(rebuilt) == repr(layer)

    def settings(lay):    # hyperparameters exactly as the layer keeps them (tuples stay tuples)
        return {k: v for k, v in vars(lay).items()
                if k not in ("params", "_grads", "state") and not hasattr(v, "shape")}

    assert settings(rebuilt) == settings(layer)
    y1 = layer(x)
    y2 = rebuilt(x)
    np.testing.assert_array_equal(_np(y1), _np(y2))
    for k, a in layer.arrays().items():
        b = rebuilt.arrays()[k]
        assert b is not a, "rebuilt layer must own its arrays"
        assert b.dtype == a.dtype


def test_spec_from_npz_arrays(tmp_path):
    layer = _randomise(Conv(2, 3, (3,), padding=1))
    path = tmp_path / "w.npz"
    np.savez(path, **{k: B.to_numpy(v) for k, v in layer.arrays().items()})
    with np.load(path) as f:
        rebuilt = layer_from_spec(layer.to_spec(), dict(f))
    x = np.ones((1, 2, 4), np.float32)
    np.testing.assert_array_equal(layer(x), rebuilt(x))


def test_sequential_spec_round_trip():
    model = Sequential(Conv(1, 2, (3, 3), padding="same", activation="relu"), BatchNorm(2),
                       MaxPool(2), GlobalPool(), Dense(2, 3))
    for layer in model.layers():
        _randomise(layer)
    x = np.random.default_rng(0).standard_normal((2, 1, 4, 4)).astype(np.float32)
    spec = json.loads(json.dumps(model.to_spec()))
    rebuilt = Sequential.from_spec(spec, [layer.arrays() for layer in model.layers()])
    np.testing.assert_array_equal(model(x), rebuilt(x))
    assert model.parameter_count() == rebuilt.parameter_count() == 18 + 2 + 4 + 9


def test_layer_from_spec_rejects_bad_specs():
    with pytest.raises(ValueError, match="unknown layer type"):
        layer_from_spec({"type": "Transformer"})
    with pytest.raises(ValueError, match="'type'"):
        layer_from_spec({"nin": 3})
    layer = Dense(3, 2)
    with pytest.raises(ValueError, match="shape"):
        layer_from_spec(layer.to_spec(), {"weight": np.zeros((3, 3)), "bias": np.zeros(2)})
    with pytest.raises(ValueError, match="missing"):
        layer_from_spec(layer.to_spec(), {"weight": np.zeros((2, 3))})


def test_equal_seeds_equal_weights_and_outputs(xp):
    def build():
        return [Dense(4, 3), Conv(2, 3, (3, 3)), Conv(2, 2, (3,), init="he")]

    tinyevo.seed(7)
    first = build()
    tinyevo.seed(7)
    second = build()
    tinyevo.seed(8)
    third = build()
    for a, b, c in zip(first, second, third):
        np.testing.assert_array_equal(_np(a.params["weight"]), _np(b.params["weight"]))
        assert not np.array_equal(_np(a.params["weight"]), _np(c.params["weight"]))
    x = xp.asarray(np.ones((2, 4)), dtype=np.float32)
    np.testing.assert_array_equal(_np(first[0](x)), _np(second[0](x)))
    # Dropout draws from the library generator too.
    tinyevo.seed(3)
    d1 = _np(Dropout(0.5).forward(xp.ones((4, 8), dtype=np.float32), train=True)[0])
    tinyevo.seed(3)
    d2 = _np(Dropout(0.5).forward(xp.ones((4, 8), dtype=np.float32), train=True)[0])
    np.testing.assert_array_equal(d1, d2)


def test_rng_argument_is_independent_of_library_generator():
    tinyevo.seed(1)
    a = Dense(4, 3, rng=np.random.default_rng(5))
    tinyevo.seed(2)
    b = Dense(4, 3, rng=np.random.default_rng(5))
    np.testing.assert_array_equal(a.params["weight"], b.params["weight"])
    tinyevo.seed(1)
    state = B.rng().bit_generator.state
    Conv(2, 2, (3, 3), rng=np.random.default_rng(0))
    assert B.rng().bit_generator.state == state, "rng= must not draw from the library generator"
    with pytest.raises(TypeError):
        Dense(2, 2, rng=0)


# ----------------------------------------------------------------------------- metadata

@pytest.mark.parametrize("index", range(len(LAYER_IDS)), ids=LAYER_IDS)
def test_param_axes_describe_every_array(index):
    layer, _ = _all_layers()[index]
    assert set(layer.grads) == set(layer.params)
    for name, a in layer.arrays().items():
        assert name in layer.PARAM_AXES, name
        out_axis, in_axis = layer.PARAM_AXES[name]
        assert a.shape[out_axis] == layer.nout
        if in_axis is not None:
            assert a.shape[in_axis] == layer.nin
    if layer.params:
        assert layer.parameter_count() == sum(a.size for a in layer.params.values())


def test_pytorch_parameter_shapes():
    assert Dense(3, 5).params["weight"].shape == (5, 3)
    assert Conv(3, 5, (2, 4)).params["weight"].shape == (5, 3, 2, 4)
    assert Conv(3, 5, (2,)).params["weight"].shape == (5, 3, 2)
    bn = BatchNorm(4)
    assert set(bn.params) == {"weight", "bias"}
    assert set(bn.state) == {"running_mean", "running_var"}
    for layer in (Dense(3, 5), Conv(3, 5, (2, 2)), bn, MaxPool(2), GlobalPool(), Flatten(),
                  Dropout(0.1)):
        assert isinstance(layer, Layer)
        assert repr(layer)


# ----------------------------------------------------------------------------- neuron surgery

def _grow(producer, consumer, extra, rng=None):
    n = producer.nout
    idx = list(range(n)) + [-1] * extra
    producer.select_out(idx, rng=rng)
    consumer.select_in(idx, rng=rng)


def test_grow_dense_dense_preserves_function(xp):
    B.set_floatx(np.float64)
    a, b = _randomise(Dense(4, 5, "relu")), _randomise(Dense(5, 3), seed=2)
    x = _data(xp, (6, 4))
    before = _np(b(a(x)))
    _grow(a, b, 3)
    assert (a.nout, b.nin) == (8, 8)
    assert a.grads["weight"].shape == a.params["weight"].shape == (8, 4)
    assert a.params["bias"].shape == (8,)
    assert float(np.abs(_np(a.params["weight"])[5:]).sum()) > 0, "new neurons need weights"
    np.testing.assert_array_equal(_np(b.params["weight"])[:, 5:], 0)
    np.testing.assert_allclose(_np(b(a(x))), before, rtol=0, atol=1e-12)


def test_new_neurons_get_the_seeds_spread():
    """New output neurons' weights: mean 0 and standard deviation 1 / prod(block), the seed's
    normal draws; their bias is zero."""
    conv = Conv(20, 4, (3, 3))
    conv.select_out([0, 1, 2, 3] + [-1] * 300, rng=np.random.default_rng(0))
    new = _np(conv.params["weight"])[4:]
    block = 20 * 3 * 3
    assert new.shape == (300, 20, 3, 3)
    assert abs(new.std() * block - 1.0) < 0.02 and abs(new.mean() * block) < 0.02
    assert np.abs(new).max() > 3.5 / block                    # normal tails, not uniform
    assert not _np(conv.params["bias"])[4:].any()


@pytest.mark.parametrize("nd", [1, 2])
def test_grow_conv_bn_conv_preserves_function(xp, nd):
    B.set_floatx(np.float64)
    k = (3,) * nd
    a = _randomise(Conv(2, 3, k, padding="same", activation="relu"))
    bn = _randomise(BatchNorm(3))
    c = _randomise(Conv(3, 2, k, stride=2), seed=3)
    x = _data(xp, (2, 2, 6) if nd == 1 else (2, 2, 5, 6))

    def forward():
        h = a(x)
        h = bn(h)
        return _np(c(h))

    before = forward()
    idx = [0, 1, 2, -1, -1]
    a.select_out(idx)
    bn.select_out(idx)
    c.select_in(idx)
    assert (a.nout, bn.nin, bn.nout, c.nin) == (5, 5, 5, 5)
    np.testing.assert_array_equal(_np(bn.state["running_var"])[3:], 1)
    np.testing.assert_array_equal(_np(bn.params["weight"])[3:], 1)
    np.testing.assert_allclose(forward(), before, rtol=0, atol=1e-12)
    # ...and the grown layers still train: gradients have the new shapes.
    y, back = c.forward(bn.forward(a(x), train=True)[0], train=True)
    back(xp.ones_like(y))
    assert c.grads["weight"].shape == c.params["weight"].shape


def test_shrink_selects_neurons_in_order(xp):
    B.set_floatx(np.float64)
    a, b = _randomise(Dense(3, 4, "tanh")), _randomise(Dense(4, 2), seed=2)
    wa, ba, wb = (_np(a.params["weight"]).copy(), _np(a.params["bias"]).copy(),
                  _np(b.params["weight"]).copy())
    keep = [3, 1]
    a.select_out(keep)
    b.select_in(keep)
    np.testing.assert_array_equal(_np(a.params["weight"]), wa[keep])
    np.testing.assert_array_equal(_np(a.params["bias"]), ba[keep])
    np.testing.assert_array_equal(_np(b.params["weight"]), wb[:, keep])
    x = _np(_data(xp, (5, 3)))
    expected = np.tanh(x @ wa[keep].T + ba[keep]) @ wb[:, keep].T + _np(b.params["bias"])
    np.testing.assert_allclose(_np(b(a(xp.asarray(x)))), expected, rtol=1e-12)


def test_select_rejects_bad_indices():
    layer = Dense(3, 4)
    with pytest.raises(ValueError, match="out of range"):
        layer.select_out([0, 4])
    with pytest.raises(ValueError, match="out of range"):
        layer.select_in([-2, 0])
    with pytest.raises(ValueError, match="1-D"):
        layer.select_out([[0, 1]])
    assert layer.params["weight"].shape == (4, 3), "a failed selection leaves the layer as is"


def test_select_in_on_batchnorm_adds_neutral_channels():
    """BatchNorm is size-invariant: growing its input must also add neutral channels, whichever
    side the graph resizes it from."""
    bn = _randomise(BatchNorm(2))
    bn.select_in([0, 1, -1])
    np.testing.assert_array_equal(bn.params["weight"][2:], 1)
    np.testing.assert_array_equal(bn.state["running_var"][2:], 1)
    np.testing.assert_array_equal(bn.params["bias"][2:], 0)
    np.testing.assert_array_equal(bn.state["running_mean"][2:], 0)


def test_selection_with_equal_seed_is_reproducible():
    def grown(seed):
        tinyevo.seed(0)
        layer = Dense(3, 2)
        tinyevo.seed(seed)
        layer.select_out([0, 1, -1, -1])
        return layer.params["weight"]

    np.testing.assert_array_equal(grown(4), grown(4))
    assert not np.array_equal(grown(4), grown(5))


# ----------------------------------------------------------------------------- bad input

BAD_INPUTS = [
    (lambda: Dense(4, 3), (2, 4, 1), "Dense", "(N, features)"),
    (lambda: Dense(4, 3), (2, 5), "Dense", "4"),
    (lambda: Conv(3, 2, (3, 3)), (2, 3, 8), "Conv", "(N, C, H, W)"),
    (lambda: Conv(3, 2, (3, 3)), (2, 4, 8, 8), "Conv", "3"),
    (lambda: Conv(3, 2, (3,)), (2, 3, 8, 8), "Conv", "(N, C, L)"),
    (lambda: Conv(3, 2, (3,)), (2, 2, 8), "Conv", "3"),
    (lambda: BatchNorm(3), (2, 4), "BatchNorm", "3"),
    (lambda: BatchNorm(3), (2, 4, 5, 5), "BatchNorm", "3"),
    (lambda: BatchNorm(3), (3,), "BatchNorm", "(N, C)"),
    (lambda: MaxPool(2), (2, 8), "MaxPool", "(N, C, *spatial)"),
    (lambda: MeanPool((2, 2)), (2, 3, 8), "MeanPool", "4-D"),
    (lambda: GlobalPool(), (2, 3), "GlobalPool", "(N, C, *spatial)"),
    (lambda: Flatten(), (3,), "Flatten", "(N, ...)"),
]


@pytest.mark.parametrize("make,shape,who,expected", BAD_INPUTS)
def test_bad_input_names_layer_and_shapes(xp, make, shape, who, expected):
    layer = make()
    with pytest.raises(ValueError) as info:
        layer(xp.zeros(shape, dtype=np.float32))
    msg = str(info.value)
    assert who in msg, msg
    assert expected in msg, msg
    assert str(tuple(shape)) in msg, msg


def test_input_too_small_for_kernel_or_window():
    with pytest.raises(ValueError, match="too small"):
        Conv(1, 1, (5, 5))(np.zeros((1, 1, 3, 3), np.float32))
    with pytest.raises(ValueError, match="too small"):
        MaxPool(4)(np.zeros((1, 1, 3), np.float32))


def test_non_array_input_raises_type_error():
    with pytest.raises(TypeError, match="array"):
        Dense(2, 2)([[1.0, 2.0]])


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("index", range(len(LAYER_IDS)), ids=LAYER_IDS)
def test_non_finite_input_does_not_crash(xp, index, bad):
    layer, shape = _all_layers()[index]
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    x.flat[1] = bad
    with np.errstate(all="ignore"):
        y, back = layer.forward(xp.asarray(x), train=True)
        dx = back(xp.ones_like(y))
        assert dx.shape == x.shape
        y, _ = layer.forward(xp.asarray(x), train=False)
    assert y.shape[0] == shape[0]
    assert np.isfinite(_np(y)).any(), "one bad element must not poison the whole batch output"


@pytest.mark.parametrize("index", range(len(LAYER_IDS)), ids=LAYER_IDS)
def test_backprop_after_eval_forward(xp, index):
    """The layer contract holds in evaluation too: ``backprop`` of an eval-mode forward returns
    the input gradient (saliency, neuron value, gradient checks), equal to the train-mode one for
    layers that behave the same in both modes."""
    layer, shape = _all_layers()[index]
    x = xp.asarray(np.random.default_rng(0).standard_normal(shape), dtype=np.float32)
    y, back = layer.forward(x, train=False)
    dx = back(xp.ones_like(y))
    assert dx.shape == x.shape
    if not isinstance(layer, (BatchNorm, Dropout)):
        y2, back2 = layer.forward(x, train=True)
        np.testing.assert_allclose(_np(dx), _np(back2(xp.ones_like(y2))), rtol=1e-6)


BAD_ARGS = [
    lambda: Dense(0, 3),
    lambda: Dense(3, 0),
    lambda: Dense(2.5, 3),
    lambda: Dense(3, 2, "nope"),
    lambda: Dense(3, 2, activation=5),
    lambda: Conv(0, 2, (3, 3)),
    lambda: Conv(2, 2, (3, 3), padding="valid"),
    lambda: Conv(2, 2, (3, 3), padding=-1),
    lambda: Conv(2, 2, (3, 3), padding=(1, 1, 1)),
    lambda: Conv(2, 2, (3, 0)),
    lambda: Conv(2, 2, (3, 3), stride=0),
    lambda: Conv(2, 2, (3, 3), dilation=(1,)),
    lambda: Conv(2, 2, (3, 3, 3)),
    lambda: Conv(2, 2, (3, 3), activation="nope"),
    lambda: BatchNorm(0),
    lambda: BatchNorm(3, momentum=1.5),
    lambda: BatchNorm(3, eps=0),
    lambda: BatchNorm(3, "nope"),
    lambda: MaxPool(0),
    lambda: MaxPool(2, padding="bad"),
    lambda: MeanPool((2, 2), stride=(1,)),
    lambda: MaxPool((2, 2, 2)),
    lambda: GlobalPool("sum"),
    lambda: Dropout(1.0),
    lambda: Dropout(-0.1),
]


@pytest.mark.parametrize("make", BAD_ARGS)
def test_bad_constructor_args_raise_value_error(make):
    with pytest.raises(ValueError):
        make()


# ----------------------------------------------------------------------------- the checker itself

class _WrongDense(Dense):
    """Dense whose backprop is subtly wrong, to prove that the gradient checks can fail."""

    def __init__(self, *args, flaw="weight", **kwargs):
        super().__init__(*args, **kwargs)
        self.flaw = flaw

    def forward(self, x, train=False):
        y, back = super().forward(x, train)

        def wrong(dy, need_dx=True):
            dx = back(dy)
            if self.flaw == "weight":
                self.grads["weight"][0, 0] += 1e-3
            else:
                dx = dx * 1.001
            return dx

        return y, wrong


@pytest.mark.parametrize("flaw", ["weight", "x"])
def test_gradcheck_detects_wrong_gradients(flaw):
    B.set_floatx(np.float64)
    with pytest.raises(AssertionError):
        check_layer(_randomise(_WrongDense(3, 2, flaw=flaw)), _data(np, (4, 3)))


# ----------------------------------------------------------------------------- properties

def _hypothesis():
    return pytest.importorskip("hypothesis")


def test_conv_random_geometry_matches_torch():
    torch = _torch()
    hyp = _hypothesis()
    st = hyp.strategies

    @hyp.settings(max_examples=40, deadline=None, derandomize=True)
    @hyp.given(nd=st.sampled_from([1, 2]), k=st.integers(1, 4), s=st.integers(1, 3),
               d=st.integers(1, 2), p=st.sampled_from([0, 1, 2, "same"]), n=st.integers(4, 9),
               cin=st.integers(1, 3), cout=st.integers(1, 3))
    def check(nd, k, s, d, p, n, cin, cout):
        hyp.assume(d * (k - 1) + 1 <= n + (0 if p == "same" else 2 * p))
        hyp.assume(p != "same" or s == 1)            # PyTorch's "same" is stride 1 only
        B.set_floatx(np.float64)
        kernel = (k,) * nd if nd == 1 else (k, max(1, k - 1))
        layer = _randomise(Conv(cin, cout, kernel, stride=s, padding=p, dilation=d))
        x = np.random.default_rng(n).standard_normal((2, cin) + (n,) * nd)
        y, back = layer.forward(x)
        dy = np.ones(y.shape)
        dx = back(dy)
        y_cl, back_cl = layer.forward(_channels_last(x))               # the channels-last unfolding
        np.testing.assert_allclose(y_cl, y, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(back_cl(dy), dx, rtol=1e-12, atol=1e-12)
        fn = torch.nn.functional.conv1d if nd == 1 else torch.nn.functional.conv2d
        tx = torch.from_numpy(x).requires_grad_(True)
        ty = fn(tx, torch.from_numpy(layer.params["weight"]),
                torch.from_numpy(layer.params["bias"]), stride=s, padding=p, dilation=d)
        ty.backward(torch.from_numpy(dy))
        np.testing.assert_allclose(y, ty.detach().numpy(), rtol=1e-10, atol=1e-10)
        np.testing.assert_allclose(dx, tx.grad.numpy(), rtol=1e-10, atol=1e-10)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        check()


def test_pool_random_geometry_matches_torch():
    torch = _torch()
    hyp = _hypothesis()
    st = hyp.strategies
    F = torch.nn.functional

    @hyp.settings(max_examples=40, deadline=None, derandomize=True)
    @hyp.given(nd=st.sampled_from([1, 2]), mode=st.sampled_from(["max", "mean"]),
               k=st.integers(1, 4), s=st.integers(1, 3), p=st.integers(0, 2),
               n=st.integers(4, 8))
    def check(nd, mode, k, s, p, n):
        hyp.assume(2 * p <= k)                        # PyTorch's limit on pool padding
        B.set_floatx(np.float64)
        layer = (MaxPool if mode == "max" else MeanPool)((k,) * nd, stride=s, padding=p)
        x = np.random.default_rng(n).integers(-3, 4, (2, 2) + (n,) * nd).astype(np.float64)
        y, back = layer.forward(x, train=True)
        dy = np.random.default_rng(0).standard_normal(y.shape)
        dx = back(dy)
        tx = torch.from_numpy(x).requires_grad_(True)
        if mode == "max":
            ty = (F.max_pool1d if nd == 1 else F.max_pool2d)(tx, k, s, p)
        else:
            ty = (F.avg_pool1d if nd == 1 else F.avg_pool2d)(tx, k, s, p)
        ty.backward(torch.from_numpy(dy))
        np.testing.assert_allclose(y, ty.detach().numpy(), rtol=1e-12)
        np.testing.assert_allclose(dx, tx.grad.numpy(), rtol=1e-12, atol=1e-12)

    check()


# ----------------------------------------------------------------------------- odds and ends

def test_to_changes_dtype_of_arrays_and_grads():
    layer = _randomise(BatchNorm(3))
    layer.to(np.float64)
    assert all(a.dtype == np.float64 for a in layer.arrays().values())
    assert all(g.dtype == np.float64 for g in layer.grads.values())
    y = layer(np.ones((2, 3), np.float32))
    assert y.dtype == np.float64


def test_sequential_backprop_matches_manual_chain(xp):
    B.set_floatx(np.float64)
    layers = [_randomise(Conv(2, 3, (3,), padding=1, activation="relu")), MaxPool(2),
              Flatten(), _randomise(Dense(6, 2), seed=4)]
    model = Sequential(*layers)
    x = _data(xp, (2, 2, 4))
    y, back = model.forward(x, train=True)
    assert back(xp.ones_like(y), need_dx=False) is None, "need_dx=False skips the input gradient"
    model_grads = {i: {k: _np(g).copy() for k, g in layer.grads.items()}
                   for i, layer in enumerate(layers)}
    for layer in layers:
        layer.zero_grads()
    h, backs = x, []
    for layer in layers:
        h, b = layer.forward(h, train=True)
        backs.append(b)
    np.testing.assert_array_equal(_np(h), _np(y))
    dy = xp.ones_like(h)
    for b in reversed(backs):
        dy = b(dy)
    for i, layer in enumerate(layers):
        for k, g in layer.grads.items():
            np.testing.assert_allclose(_np(g), model_grads[i][k], rtol=1e-12)
    y, back = model.forward(x, train=True)
    np.testing.assert_allclose(_np(back(xp.ones_like(y))), _np(dy), rtol=1e-12)
    with pytest.raises(TypeError, match="position 1"):
        Sequential(Dense(2, 2), "relu")


@pytest.mark.parametrize("make", [
    lambda: Dense(3, 2, "relu"), lambda: BatchNorm(3, "tanh"), lambda: Dropout(0.5),
    lambda: Sequential(Dense(3, 4, "relu"), BatchNorm(4), Dense(4, 2)),
], ids=["dense", "batchnorm", "dropout", "sequential"])
def test_call_is_inference_and_forward_returns_backprop(make):
    """One contract for every model: ``model(x)`` is the inference output, ``model.forward``
    returns ``(y, backprop)``, and ``backprop`` returns the input gradient unless told not to."""
    model = make()
    x = np.random.default_rng(0).standard_normal((5, 3)).astype(np.float32)
    y = model(x)
    y_eval, back = model.forward(x)
    np.testing.assert_array_equal(y, y_eval)
    assert back(np.ones_like(y)).shape == x.shape
    assert back(np.ones_like(y), need_dx=False) is None
    with pytest.raises(TypeError):
        model(x, train=True)        # training goes through forward


def test_neuron_value_tracking_follows_surgery(xp):
    layer = Dense(3, 4, "relu")
    layer.track_value(every=1, momentum=0.5)
    x = xp.asarray(np.random.default_rng(0).standard_normal((8, 3)), dtype=np.float32)
    y, back = layer.forward(x, train=True)
    back(xp.ones_like(y))
    value = _np(layer.neuron_value).copy()
    assert value.shape == (4,) and (value > 0).any()
    layer.select_out([2, 0, -1])
    np.testing.assert_allclose(_np(layer.neuron_value)[:2], value[[2, 0]])
    assert _np(layer.neuron_value)[2] < 1e-6
    with pytest.raises(ValueError, match="every"):
        layer.track_value(every=0)


@pytest.mark.parametrize("make", [lambda: BatchNorm(8, "relu"), lambda: BatchNorm(8, "swish"),
                                  lambda: BatchNorm(8), lambda: MaxPool(2), lambda: MeanPool(3),
                                  lambda: Conv(8, 4, (3, 3), padding="same")])
@pytest.mark.parametrize("train", [True, False])
def test_threads_do_not_change_results(make, train, monkeypatch):
    # Layers split their NumPy passes over fixed row/image blocks in threads: any thread
    # count gives bit-identical outputs, input gradients and parameter gradients.
    monkeypatch.setattr(B, "_MIN_THREAD_BYTES", 1)          # split even these small arrays
    monkeypatch.setattr(B, "blas_wait_tuned", lambda: True)
    x = from_cl(np.random.default_rng(0).standard_normal((16, 24, 24, 8), dtype=np.float32))
    dy = None
    results = []
    try:
        for threads in (1, 2, 3):
            B.set_num_threads(threads)
            tinyevo.seed(0)
            layer = make()
            y, back = layer.forward(x, train=train)
            if dy is None:
                dy = from_cl(np.random.default_rng(1).standard_normal(
                    np.moveaxis(y, 1, -1).shape, dtype=np.float32))
            dx = back(dy)
            results.append([np.array(y), np.array(dx), *(np.array(g) for g in
                                                         layer.grads.values())])
    finally:
        B.set_num_threads(None)
    for other in results[1:]:
        for a, b in zip(results[0], other):
            np.testing.assert_array_equal(a, b)


def test_grads_are_made_on_first_use_and_behave_as_a_mapping():
    layer = Dense(3, 2)
    assert not layer._grads and set(layer.grads) == {"weight", "bias"} and len(layer.grads) == 2
    g = layer.grads["weight"]
    assert g.shape == (2, 3) and not g.any() and layer.grads["weight"] is g
    g += 1.0
    layer.grads.clear()                                     # forgotten: zeros on next use
    assert not layer._grads and not layer.grads["weight"].any()
    with pytest.raises(KeyError):
        del layer.grads["nonesuch"]
    with pytest.raises(KeyError, match="no parameter"):
        layer.grads["nonesuch"] = g
    assert layer.grads == layer.grads and layer.grads != Dense(3, 2).grads
    layer.grads = {}                                        # subclasses may still reset them
    assert not layer._grads


@pytest.mark.parametrize("geometry", [dict(padding="same"), dict(padding=(2, 0), stride=2),
                                      dict(padding="same", dilation=2, stride=(1, 2))])
def test_conv_input_gradient_folded_by_offset_is_identical(geometry, monkeypatch):
    # On one thread the input gradient is folded one kernel offset at a time (conv.py,
    # _fold_by_offset), on more through the column matrix: the same additions in the same
    # order, so the same bits (products this large use OpenBLAS's regular kernel either way).
    from tinyevo.layers import conv
    x = from_cl(np.random.default_rng(0).standard_normal((16, 20, 20, 24), dtype=np.float32))
    results, folded = [], []
    real = conv._fold_by_offset
    monkeypatch.setattr(conv, "_fold_by_offset", lambda *a: folded.append(1) or real(*a))
    try:
        for threads in (1, 2):
            B.set_num_threads(threads)
            tinyevo.seed(0)
            layer = Conv(24, 40, (3, 3), **geometry)
            y, back = layer.forward(x, train=True)
            dy = np.random.default_rng(1).standard_normal(y.shape, dtype=np.float32)
            results.append([back(dy), *(np.array(g) for g in layer.grads.values())])
            assert len(folded) == 1                   # the one-thread pass took the new path
    finally:
        B.set_num_threads(None)
    for a, b in zip(*results):
        np.testing.assert_array_equal(a, b)
