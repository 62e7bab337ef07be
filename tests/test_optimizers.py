"""Optimisers: agreement with PyTorch (or a direct formula), and the optimiser contract."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from tinyevo import backend as B
from tinyevo import optimizers as O
from tinyevo.layers import BatchNorm, Conv, Dense, Sequential

STEPS = 5


def _grads(shapes, seed=0):
    """A fixed sequence of gradients for every parameter, one dict per step."""
    rng = np.random.default_rng(seed)
    return [{k: rng.standard_normal(s) for k, s in shapes.items()} for _ in range(STEPS)]


def _run(opt, layer, grads, xp=np, lrs=None):
    """Apply ``opt`` for each step's gradients; returns the parameters after each step."""
    history = []
    for step, g in enumerate(grads):
        if lrs is not None:
            opt.learning_rate = lrs[step]
        for k, v in g.items():
            layer.grads[k][...] = xp.asarray(v)
        opt.update(layer)
        history.append({k: B.to_numpy(p).copy() for k, p in layer.params.items()})
    return history


def _dense64(seed=0):
    B.set_floatx(np.float64)
    layer = Dense(3, 2, rng=np.random.default_rng(seed))
    layer.params["bias"][...] = np.random.default_rng(seed + 1).standard_normal(2)
    return layer


TORCH_PAIRS = {
    "sgd": (lambda: O.SGD(0.1), lambda p, t: t.optim.SGD(p, lr=0.1)),
    "momentum": (lambda: O.Momentum(0.05, rho=0.8),
                 lambda p, t: t.optim.SGD(p, lr=0.05, momentum=0.8)),
    "nesterov": (lambda: O.Nesterov(0.05, rho=0.7),
                 lambda p, t: t.optim.SGD(p, lr=0.05, momentum=0.7, nesterov=True)),
    "adam": (lambda: O.Adam(0.01, beta1=0.8, beta2=0.99, eps=1e-6),
             lambda p, t: t.optim.Adam(p, lr=0.01, betas=(0.8, 0.99), eps=1e-6)),
    "adamw": (lambda: O.AdamW(0.01, weight_decay=0.1),
              lambda p, t: t.optim.AdamW(p, lr=0.01, betas=(0.9, 0.999), eps=1e-8,
                                         weight_decay=0.1)),
    "rmsprop": (lambda: O.RMSProp(0.01, rho=0.9, eps=1e-6),
                lambda p, t: t.optim.RMSprop(p, lr=0.01, alpha=0.9, eps=1e-6)),
    "adagrad": (lambda: O.AdaGrad(0.1, eps=1e-10),
                lambda p, t: t.optim.Adagrad(p, lr=0.1, eps=1e-10,
                                             initial_accumulator_value=0.0)),
}


@pytest.mark.parametrize("name", sorted(TORCH_PAIRS))
def test_matches_torch(name):
    torch = pytest.importorskip("torch")
    make, make_torch = TORCH_PAIRS[name]
    layer = _dense64()
    tparams = {k: torch.nn.Parameter(torch.from_numpy(v.copy())) for k, v in layer.params.items()}
    topt = make_torch(list(tparams.values()), torch)
    grads = _grads({k: v.shape for k, v in layer.params.items()})
    ours = _run(make(), layer, grads)
    for step, g in enumerate(grads):
        for k, p in tparams.items():
            p.grad = torch.from_numpy(g[k].copy())
        topt.step()
        for k, p in tparams.items():
            np.testing.assert_allclose(ours[step][k], p.detach().numpy(), rtol=1e-12,
                                       atol=1e-14, err_msg=f"{name} step {step} {k}")


def test_nadam_matches_formula():
    """Dozat's NAdam, as Keras/Flux state it (PyTorch's adds a momentum-decay schedule)."""
    lr, b1, b2, eps = 0.01, 0.9, 0.999, 1e-8
    layer = _dense64()
    p = {k: v.copy() for k, v in layer.params.items()}
    m = {k: np.zeros_like(v) for k, v in p.items()}
    v = {k: np.zeros_like(x) for k, x in p.items()}
    grads = _grads({k: a.shape for k, a in p.items()})
    ours = _run(O.NAdam(lr, b1, b2, eps), layer, grads)
    for t, g in enumerate(grads, start=1):
        for k in p:
            m[k] = b1 * m[k] + (1 - b1) * g[k]
            v[k] = b2 * v[k] + (1 - b2) * g[k] ** 2
            mhat = b1 * m[k] / (1 - b1 ** (t + 1)) + (1 - b1) * g[k] / (1 - b1 ** t)
            vhat = v[k] / (1 - b2 ** t)
            p[k] = p[k] - lr * mhat / (np.sqrt(vhat) + eps)
            np.testing.assert_allclose(ours[t - 1][k], p[k], rtol=1e-12, atol=1e-15)


def test_momentum_with_changing_learning_rate_matches_formula():
    """Our Momentum folds lr into the velocity (v = rho v + lr g), so an lr change takes effect
    gradually, unlike PyTorch's; check that definition directly."""
    layer = _dense64()
    grads = _grads({k: a.shape for k, a in layer.params.items()})
    lrs = [0.1, 0.1, 0.01, 0.5, 0.05]
    p = {k: a.copy() for k, a in layer.params.items()}
    vel = {k: np.zeros_like(a) for k, a in p.items()}
    ours = _run(O.Momentum(0.1, rho=0.9), layer, grads, lrs=lrs)
    for t, g in enumerate(grads):
        for k in p:
            vel[k] = 0.9 * vel[k] + lrs[t] * g[k]
            p[k] = p[k] - vel[k]
            np.testing.assert_allclose(ours[t][k], p[k], rtol=1e-12)


ALL = sorted(O.OPTIMIZERS)


@pytest.mark.parametrize("name", ALL)
def test_update_moves_params_and_zeroes_grads(xp, name):
    opt = O.OPTIMIZERS[name]()
    model = Sequential(Conv(2, 3, (3,), padding=1), BatchNorm(3, "relu"), Dense(3, 2))
    before = [{k: B.to_numpy(p).copy() for k, p in layer.params.items()}
              for layer in model.layers()]
    x = xp.asarray(np.random.default_rng(0).standard_normal((4, 2, 5)), dtype=np.float32)
    h, back1 = Sequential(model[0], model[1]).forward(x, train=True)
    y, back2 = model[2].forward(h.mean(axis=2), train=True)
    dh = back2(xp.ones_like(y))
    back1(xp.broadcast_to(dh[:, :, None] / 5, h.shape).copy())
    opt.update(model)
    for layer, old in zip(model.layers(), before):
        for k, p in layer.params.items():
            assert p.dtype == np.float32, f"{name} changed the dtype of {k}"
            assert not np.array_equal(B.to_numpy(p), old[k]), f"{name} did not move {layer} {k}"
            assert not B.to_numpy(layer.grads[k]).any(), f"{name} left grads in {layer} {k}"


@pytest.mark.parametrize("name", ALL)
def test_learning_rate_read_write(name):
    opt = O.OPTIMIZERS[name](learning_rate=0.5)
    assert opt.learning_rate == 0.5
    layer = _dense64()
    layer.grads["weight"][...] = 1.0
    w0 = layer.params["weight"].copy()
    opt.learning_rate = 0.0
    assert opt.learning_rate == 0.0
    opt.update(layer)
    np.testing.assert_array_equal(layer.params["weight"], w0)
    for bad in (-1.0, math.nan, math.inf):
        with pytest.raises(ValueError, match="learning_rate"):
            opt.learning_rate = bad
    assert opt.learning_rate == 0.0


@pytest.mark.parametrize("name", ALL)
def test_reset_wipes_state(name):
    layer_a, layer_b = _dense64(), _dense64()
    grads = _grads({k: a.shape for k, a in layer_a.params.items()})
    opt = O.OPTIMIZERS[name](learning_rate=0.01)
    _run(opt, layer_a, grads[:3])
    opt.reset()
    fresh = O.OPTIMIZERS[name](learning_rate=0.01)
    # After reset, a step on any layer equals the first step of a new optimiser.
    layer_c = _dense64()
    a = _run(opt, layer_b, grads[3:4])
    b = _run(fresh, layer_c, grads[3:4])
    for k in a[0]:
        np.testing.assert_array_equal(a[0][k], b[0][k])


@pytest.mark.parametrize("name", [n for n in ALL if n != "SGD"])
def test_state_persists_between_steps(name):
    """Stateful optimisers do not restart every step (a second step differs from a fresh one)."""
    grads = _grads({"weight": (2, 3), "bias": (2,)})
    cont, fresh = _dense64(), _dense64()
    opt = O.OPTIMIZERS[name](learning_rate=0.01)
    _run(opt, cont, grads[:1])
    _run(O.OPTIMIZERS[name](learning_rate=0.01), fresh, grads[:1])
    a = _run(opt, cont, grads[1:2])
    b = _run(O.OPTIMIZERS[name](learning_rate=0.01), fresh, grads[1:2])
    assert not np.allclose(a[0]["weight"], b[0]["weight"], rtol=1e-12, atol=0)


@pytest.mark.parametrize("name", ALL)
def test_changed_shape_gets_fresh_state(xp, name):
    opt = O.OPTIMIZERS[name](learning_rate=0.01)
    a, b = Dense(3, 4), Dense(4, 2)
    model = Sequential(a, b)
    x = xp.asarray(np.random.default_rng(0).standard_normal((5, 3)), dtype=np.float32)

    def step():
        y, back = model.forward(x, train=True)
        back(xp.ones_like(y), need_dx=False)
        opt.update(model)

    step()
    step()
    a.select_out([0, 1, 2, 3, -1, -1])
    b.select_in([0, 1, 2, 3, -1, -1])
    assert a.params["weight"].shape == (6, 3)
    step()                                     # must not crash on the stale state
    for layer in model.layers():
        for k, p in layer.params.items():
            assert np.isfinite(B.to_numpy(p)).all()
            assert not B.to_numpy(layer.grads[k]).any()
    # The grown parameter's first step equals that of a fresh optimiser on the same gradient.
    shrink = Dense(3, 4, rng=np.random.default_rng(1))
    twin = Dense(3, 4, rng=np.random.default_rng(1))
    other = O.OPTIMIZERS[name](learning_rate=0.01)
    shrink.grads["weight"][...] = 1.0
    opt.update(shrink)
    shrink.grads["weight"][...] = 1.0
    opt.update(shrink)
    shrink.select_out([2, 0])
    twin.select_out([2, 0])
    w = B.to_numpy(shrink.params["weight"]).copy()
    twin.params["weight"][...] = shrink.params["weight"]
    twin.params["bias"][...] = shrink.params["bias"]
    shrink.grads["weight"][...] = 0.5
    twin.grads["weight"][...] = 0.5
    opt.update(shrink)
    other.update(twin)
    np.testing.assert_allclose(B.to_numpy(shrink.params["weight"]),
                               B.to_numpy(twin.params["weight"]), rtol=1e-6)
    assert not np.array_equal(B.to_numpy(shrink.params["weight"]), w)


def test_state_is_per_layer():
    """Two layers with equal shapes keep separate state."""
    a, b = _dense64(0), _dense64(0)
    opt = O.Adam(0.1)
    grads = _grads({"weight": (2, 3), "bias": (2,)})
    _run(opt, a, grads[:2])
    ref = O.Adam(0.1)
    c = _dense64(0)
    _run(ref, c, grads[1:2])
    out = _run(opt, b, grads[1:2])
    np.testing.assert_array_equal(out[0]["weight"], c.params["weight"])


@pytest.mark.parametrize("name", ALL)
def test_spec_and_copy(name):
    opt = O.OPTIMIZERS[name](learning_rate=0.02)
    spec = json.loads(json.dumps(opt.to_spec()))
    assert spec["type"] == name
    again = O.optimizer_from_spec(spec)
    assert type(again) is type(opt)
    assert again.hyperparameters() == opt.hyperparameters()
    dup = opt.copy()
    assert dup is not opt and dup.hyperparameters() == opt.hyperparameters()
    assert name in repr(opt)
    with pytest.raises(ValueError, match="unknown optimiser"):
        O.optimizer_from_spec({"type": "LBFGS"})


def test_update_accepts_layers_iterables_and_rejects_others():
    a, b = Dense(2, 2), Dense(2, 2)
    for layer in (a, b):
        layer.grads["weight"][...] = 1.0
    w0 = a.params["weight"].copy()
    O.SGD(0.5).update([a, b])
    np.testing.assert_allclose(a.params["weight"], w0 - 0.5)
    assert not b.grads["weight"].any()
    with pytest.raises(TypeError, match="cannot optimise"):
        O.SGD().update(3)


def test_descent_is_sgd():
    assert O.Descent is O.SGD


@pytest.mark.parametrize("name", [n for n in ALL if n != "SGD"])
def test_same_size_surgery_gets_fresh_state(name):
    """Permuting neurons keeps every shape, yet the old moments belong to other neurons now:
    the optimiser must start afresh rather than apply them to the wrong rows."""
    grads = _grads({"weight": (2, 3), "bias": (2,)})
    layer, twin = _dense64(), _dense64()
    opt = O.OPTIMIZERS[name](learning_rate=0.01)
    _run(opt, layer, grads[:2])
    layer.select_out([1, 0])
    twin.load_arrays(layer.arrays())
    a = _run(opt, layer, grads[2:3])
    b = _run(O.OPTIMIZERS[name](learning_rate=0.01), twin, grads[2:3])
    np.testing.assert_array_equal(a[0]["weight"], b[0]["weight"])


# --------------------------------------------------------------------- state across models
def _graph_and_steps(seed=0):
    """A trained residual conv graph (3 Adam steps), its optimiser, input and a step function."""
    from graph_cases import data, randomise, residual

    B.set_floatx(np.float64)
    g = residual("conv2d")
    randomise(g)
    x = data(g, seed=seed)

    def step(model, opt):
        y, back = model.forward(x, train=True)
        back(np.cos(y), need_dx=False)
        opt.update(model)

    opt = O.Adam(0.01)
    for _ in range(3):
        step(g, opt)
    return g, opt, x, step


def test_a_copy_with_inherited_state_trains_exactly_like_its_parent():
    """Inheriting is continuing: a copy of the model with the parent optimiser's state takes
    the very steps the parent takes, and leaves the parent's own state alone."""
    g, opt, x, step = _graph_and_steps()
    child, copt = g.copy(), opt.copy()
    nparams = sum(len(layer.params) for layer in child.layers())
    assert copt.inherit(child, opt) == nparams
    for layer in child.layers():
        for name, st in copt._state.get(layer, {}).items():
            assert st["param"] is layer.params[name] and st["t"] == 3
            parent_st = opt._state[_twin(g, child, layer)][name]
            assert st["m"] is parent_st["m"] and not st["m"].flags.writeable   # copy-on-write
    for _ in range(2):
        step(g, opt)
        step(child, copt)
    np.testing.assert_array_equal(child(x), g(x))
    for layer in child.layers():
        for name, st in copt._state.get(layer, {}).items():
            assert st["t"] == 5 and st["m"].flags.writeable
            assert not np.shares_memory(st["m"], opt._state[_twin(g, child, layer)][name]["m"])
    fresh_child = g.copy()                 # without the state the steps differ
    step(g, opt)
    step(fresh_child, opt.copy())
    assert not np.allclose(fresh_child(x), g(x))


def _twin(g, child, layer):
    return dict(zip(child.layers(), g.layers()))[layer]


def test_inherit_skips_resized_parameters_and_other_optimiser_types():
    import tinyevo as te

    g, opt, x, step = _graph_and_steps()
    child = g.copy()
    te.change_nout(child, {child["c2"]: 2})                 # c2 grows; c3 reads it
    copt = opt.copy()
    copt.inherit(child, opt)
    for layer, name in ((child["c2"].layer, "weight"), (child["c2"].layer, "bias"),
                        (child["c3"].layer, "weight")):
        assert name not in copt._state.get(layer, {})       # a new array: fresh state
    assert "weight" in copt._state[child["c1"].layer]
    assert "bias" in copt._state[child["c3"].layer]        # c3's outputs did not change
    step(child, copt)                                       # and it trains
    assert O.Momentum(0.1).inherit(child, opt) == 0
    assert O.Adam().inherit(child, None) == 0


def test_state_arrays_round_trip_through_a_saved_model():
    from tinyevo.graph import CompGraph

    g, opt, x, step = _graph_and_steps()
    arrays = opt.state_arrays(g)
    assert all(isinstance(a, np.ndarray) for a in arrays.values())
    assert {k.rsplit("/", 1)[1] for k in arrays} == {"t", "m", "v"}
    again = CompGraph.from_spec(json.loads(json.dumps(g.to_spec())), g.arrays())
    restored = O.Adam(0.01)
    restored.load_state_arrays(again, {k: a.copy() for k, a in arrays.items()})
    step(g, opt)
    step(again, restored)
    np.testing.assert_array_equal(again(x), g(x))


@pytest.mark.parametrize("change, message", [
    (lambda a: a.update({"99/weight/m": a["0/weight/m"]}), "names no parameter"),
    (lambda a: a.update({"0/weight/m": np.zeros(3)}), "has shape"),
    (lambda a: a.pop("0/weight/t"), "lacks its step count"),
    (lambda a: a.update({"0/weight/t": np.float64(2.5)}), "step count"),
    (lambda a: a.update({"weight/m": np.zeros(3)}), "is not"),
    (lambda a: a.update({"0/weight/shape": a["0/weight/m"]}), "keeps"),
    (lambda a: a.update({"0/weight/m": np.full_like(a["0/weight/m"], np.nan)}), "finite"),
    (lambda a: a.pop("0/weight/v"), "lacks"),
])
def test_load_state_arrays_rejects_state_of_another_model(change, message):
    g, opt, x, step = _graph_and_steps()
    arrays = opt.state_arrays(g)
    change(arrays)
    with pytest.raises(ValueError, match=message):
        O.Adam().load_state_arrays(g, arrays)


def test_optimiser_state_survives_transport_with_shared_arrays():
    """A model that shares its arrays with a copy (read-only) travels to a worker with its
    optimiser: the state still finds its parameters, and training goes on as at home."""
    import pickle

    from tinyevo.app._workers import dumps as _dumps

    g, opt, x, step = _graph_and_steps()
    keep = g.copy()                                          # g's arrays are shared now
    o2, g2 = pickle.loads(_dumps((opt, g)))
    for layer in g2.layers():
        for name, st in o2._state.get(layer, {}).items():
            assert st["param"] is layer.params[name] and not st["param"].flags.writeable
    out = keep(x)
    step(g, opt)
    step(g2, o2)
    np.testing.assert_array_equal(g2(x), g(x))
    np.testing.assert_array_equal(keep(x), out)


def test_a_model_back_from_a_worker_still_passes_its_state_to_copies():
    """Arrays unpickled by the process transport (protocol 4) can be shared copy-on-write, so
    the children of a model that came back from a worker inherit its optimiser state."""
    import pickle

    from tinyevo.app._workers import dumps as _dumps
    from tinyevo.layers.base import share

    big = pickle.loads(pickle.dumps(np.zeros(1024, np.float32), protocol=4))
    assert share(big) is big and not big.flags.writeable
    g, opt, x, step = _graph_and_steps()
    o2, g2 = pickle.loads(_dumps((opt, g)))
    child, copt = g2.copy(), o2.copy()
    assert copt.inherit(child, o2) == sum(len(layer.params) for layer in child.layers())


@pytest.mark.parametrize("how", ["pickle", "deepcopy"])
def test_an_optimiser_copied_with_its_model_keeps_its_state(how):
    import copy
    import pickle

    g, opt, x, step = _graph_and_steps()
    child = g.copy()
    copt = opt.copy()
    copt.inherit(child, opt)                     # moments shared copy-on-write
    pair = (copt, child, opt, g)
    o2, c2, o1, g1 = (pickle.loads(pickle.dumps(pair)) if how == "pickle"
                      else copy.deepcopy(pair))
    for o, m in ((o2, c2), (o1, g1)):
        for layer in m.layers():
            for name, st in o._state.get(layer, {}).items():
                assert st["param"] is layer.params[name] and st["t"] == 3
    step(c2, o2)
    step(g, opt)
    np.testing.assert_array_equal(c2(x), g(x))   # as if never copied
    out = g1(x)
    step(c2, o2)
    np.testing.assert_array_equal(g1(x), out)    # and the twin it shared moments with is apart
