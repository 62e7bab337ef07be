"""Finite-difference gradient checks for the layer contract, in float64 (chainer-style).

The scalar checked is ``L = sum(layer(x) * dy)`` for a fixed random ``dy``; its analytic gradient
with respect to the input is ``backprop(dy)`` and with respect to each parameter what backprop
adds into ``layer.grads``. Every input and parameter is checked along a random direction
(central differences) and, where it is small, element by element.

    >>> check_layer(Dense(3, 2, dtype=np.float64), np.ones((4, 3)))
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from tinyevo import backend as B

ELEMENTWISE_MAX = 200          # check element by element up to this many entries


def check_layer(layer: Any, x: Any, train: bool = False, *, eps: float = 1e-6,
                rtol: float = 1e-6, atol: float = 1e-8, seed: int = 0,
                elementwise: bool = True) -> dict:
    """Assert that ``layer``'s backprop matches central differences for ``x`` and every param.

    Returns the analytic gradients (as NumPy arrays), keyed "x" and by parameter name.
    """
    xp = B.get_array_module(x)
    rng = np.random.default_rng(seed)
    assert x.dtype == np.float64, "gradient checks run in float64"
    y, back = layer.forward(x, train=train)
    assert y.dtype == np.float64, f"{layer!r} returned {y.dtype} for float64 input"
    dy = xp.asarray(rng.standard_normal(y.shape))
    layer.zero_grads()
    dx = back(dy)
    assert dx.shape == x.shape, f"{layer!r}: dx shape {dx.shape} != x shape {x.shape}"
    analytic = {"x": B.to_numpy(dx).copy()}
    analytic.update({k: B.to_numpy(g).copy() for k, g in layer.grads.items()})
    assert set(layer.grads) == set(layer.params), "grads and params must share keys"

    inputs = {"x": x}

    def objective() -> float:
        out, _ = layer.forward(inputs["x"], train=train)
        return float(B.to_numpy((out * dy).sum()))

    def targets() -> dict[str, Callable[[], Any]]:
        return {"x": lambda: inputs["x"], **{k: (lambda k=k: layer.params[k])
                                              for k in layer.params}}

    for name, get in targets().items():
        def perturb(delta: Any, name: str = name, get: Callable[[], Any] = get) -> None:
            if name == "x":
                inputs["x"] = inputs["x"] + delta
            else:
                layer.params[name] += delta
        _check_one(name, get(), analytic[name], objective, perturb, xp, rng, eps, rtol, atol,
                   elementwise, repr(layer))
    return analytic


def check_function(f: Callable[[Any], Any], x: Any, grad: Any, *, eps: float = 1e-6,
                   rtol: float = 1e-6, atol: float = 1e-8, seed: int = 0) -> None:
    """Assert that ``grad`` is the gradient of the scalar function ``f`` at ``x``."""
    xp = B.get_array_module(x)
    rng = np.random.default_rng(seed)
    state = {"x": x}

    def objective() -> float:
        return float(B.to_numpy(f(state["x"])))

    def perturb(delta: Any) -> None:
        state["x"] = state["x"] + delta

    _check_one("x", x, B.to_numpy(grad), objective, perturb, xp, rng, eps, rtol, atol, True,
               getattr(f, "__name__", "f"))


def _check_one(name, value, analytic, objective, perturb, xp, rng, eps, rtol, atol,
               elementwise, who) -> None:
    assert analytic.shape == tuple(value.shape), f"{who}: grad {name} has the wrong shape"
    # Along a random direction: d/dt L(theta + t * d) at t = 0 equals <grad, d>.
    direction = rng.standard_normal(value.shape)
    d = xp.asarray(direction)
    perturb(eps * d)
    plus = objective()
    perturb(-2 * eps * d)
    minus = objective()
    perturb(eps * d)
    numeric = (plus - minus) / (2 * eps)
    expected = float((analytic * direction).sum())
    scale = max(1.0, abs(expected))
    assert abs(numeric - expected) <= rtol * 10 * scale + atol * 10, (
        f"{who}: directional derivative for {name!r}: numeric {numeric!r}, "
        f"analytic {expected!r}")
    if not elementwise or value.size > ELEMENTWISE_MAX:
        return
    numeric_all = np.zeros(value.shape)
    for idx in np.ndindex(*value.shape):
        e = np.zeros(value.shape)
        e[idx] = eps
        de = xp.asarray(e)
        perturb(de)
        plus = objective()
        perturb(-2 * de)
        minus = objective()
        perturb(de)
        numeric_all[idx] = (plus - minus) / (2 * eps)
    np.testing.assert_allclose(analytic, numeric_all, rtol=rtol * 100, atol=atol * 100,
                               err_msg=f"{who}: elementwise gradient of {name!r}")
