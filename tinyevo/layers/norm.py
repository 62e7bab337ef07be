"""Batch normalisation over the channel axis of (N, C) or (N, C, *spatial) data."""

from __future__ import annotations

from typing import Any

import numpy as np

from tinyevo import backend as B
from tinyevo.layers._layout import colsum, from_cl, tiled, to_cl, untile
from tinyevo.layers.base import Layer, register
from tinyevo.layers.dense import _check_size

__all__ = ["BatchNorm"]


@register
class BatchNorm(Layer):
    """BatchNorm(n, activation="identity", momentum=0.1, eps=1e-5).

    Training normalises with the batch statistics and updates ``running_mean``/``running_var``
    (unbiased variance, as PyTorch); evaluation uses the running statistics.

        >>> bn = BatchNorm(4); bn(np.ones((8, 4), np.float32), train=True)[0].shape
        (8, 4)
    """

    PARAM_AXES = {"weight": (0, 0), "bias": (0, 0), "running_mean": (0, 0),
                  "running_var": (0, 0)}
    SIZE_TRAIT = "invariant"

    def __init__(self, n: int, activation: str = "identity", momentum: float = 0.1,
                 eps: float = 1e-5, dtype: Any = None) -> None:
        super().__init__(activation)
        _check_size("n", n)
        if not 0.0 <= momentum <= 1.0:
            raise ValueError(f"momentum must be in [0, 1], got {momentum}")
        if not eps > 0:
            raise ValueError(f"eps must be positive, got {eps}")
        self.momentum = float(momentum)
        self.eps = float(eps)
        xp = B.current()
        dt = dtype or B.floatx()
        self._set_params(weight=xp.ones(n, dtype=dt), bias=xp.zeros(n, dtype=dt))
        self.state = {"running_mean": xp.zeros(n, dtype=dt), "running_var": xp.ones(n, dtype=dt)}

    @property
    def nin(self) -> int:
        return int(self.params["weight"].shape[0])

    def __call__(self, x: Any, train: bool = False):
        if getattr(x, "ndim", 0) < 2:
            raise self._fail("wrong input rank", "(N, C) or (N, C, *spatial)",
                             f"shape {getattr(x, 'shape', type(x).__name__)}")
        x = self._check_channels(x, x.ndim, "(N, C, ...)")
        x_cl = to_cl(x) if x.ndim > 2 else x
        c = self.nin
        xm = x_cl.reshape(-1, c)
        m = xm.shape[0]
        gamma, beta = self.params["weight"], self.params["bias"]
        xp = B.get_array_module(x)
        if train:
            mean = colsum(xm) * (1.0 / m)
            xt, mean_t = tiled(xm, mean)
            xc = xt - mean_t                              # centred, in the tiled layout
            var = untile(_sumsq(xc), c) * (1.0 / m)
            invstd = 1.0 / xp.sqrt(var + self.eps)
            mom = self.momentum
            rm, rv = self.state["running_mean"], self.state["running_var"]
            rm *= 1.0 - mom
            rm += mom * mean
            rv *= 1.0 - mom
            rv += (mom * m / max(m - 1, 1)) * var
            _, scale_t, shift_t = tiled(xm, gamma * invstd, beta)
            z = xc * scale_t
        else:
            invstd = 1.0 / xp.sqrt(self.state["running_var"] + self.eps)
            scale = gamma * invstd
            xt, scale_t, shift_t = tiled(xm, scale, beta - self.state["running_mean"] * scale)
            z = xt * scale_t
            xc = None
        z += shift_t
        y, zkeep = self._activate(z)
        out = y.reshape(x_cl.shape)

        def backprop(dy: Any, need_dx: bool = True) -> Any:
            dy_cl = to_cl(dy) if dy.ndim > 2 else dy
            dyt = dy_cl.reshape(y.shape)
            dz = self._activation_backward(dyt, zkeep, y)
            self._track(out, dy_cl)
            centred = xc if xc is not None else tiled(xm, self.state["running_mean"])
            if xc is None:
                centred = centred[0] - centred[1]
            dbeta = untile(colsum(dz), c)
            dgamma = untile(xp.einsum("ij,ij->j", dz, centred), c) * invstd
            self.grads["bias"] += dbeta
            self.grads["weight"] += dgamma
            if not need_dx:
                return None
            k = gamma * invstd
            if xc is None:
                _, k_t = tiled(xm, k)
                dx = dz * k_t
            else:
                # dx = k * (dz - mean(dz) - xhat * mean(dz * xhat)), xhat = centred * invstd
                _, k_t, b_t, c_t = tiled(xm, k, k * invstd * dgamma * (-1.0 / m),
                                         k * dbeta * (-1.0 / m))
                dx = centred * b_t
                dx += c_t
                if dz is dyt:                  # identity activation: dz is the caller's dy
                    dx += dz * k_t
                else:                          # dz is this pass's own buffer: scale in place
                    dz *= k_t
                    dx += dz
            dx = dx.reshape(x_cl.shape)
            return from_cl(dx) if x.ndim > 2 else dx

        return (from_cl(out) if x.ndim > 2 else out), backprop

    def _new_out_values(self, name: str, shape: tuple, axis: int,
                        rng: np.random.Generator) -> np.ndarray:
        fill = 1.0 if name in ("weight", "running_var") else 0.0
        return np.full(shape, fill, dtype=np.float32)

    def to_spec(self) -> dict:
        return {"type": "BatchNorm", "n": self.nin, "activation": self.activation,
                "momentum": self.momentum, "eps": self.eps}

    def __repr__(self) -> str:
        return f"BatchNorm({self.nin}, {self.activation})"


def _sumsq(a: Any) -> Any:
    """Column sums of squares of a 2-D array without a squared temporary."""
    return B.get_array_module(a).einsum("ij,ij->j", a, a)
