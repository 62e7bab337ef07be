"""Batch normalisation over the channel axis of (N, C) or (N, C, *spatial) data."""

from __future__ import annotations

from typing import Any

import numpy as np

from tinyevo import _kernels
from tinyevo import backend as B
from tinyevo.layers._layout import block_rows, for_blocks, from_cl, tiled, to_cl, untile
from tinyevo.layers.base import Layer, own, register
from tinyevo.layers.dense import _check_size

__all__ = ["BatchNorm"]

# Largest mean^2 / variance for which the one-pass statistics are used (|mean| <= 4 std).
_WELL_CONDITIONED = 16.0


@register
class BatchNorm(Layer):
    """BatchNorm(n, activation="identity", momentum=0.1, eps=1e-5).

    Training normalises with the batch statistics and updates ``running_mean``/``running_var``
    (unbiased variance, as PyTorch); evaluation uses the running statistics.

        >>> bn = BatchNorm(4); bn.forward(np.ones((8, 4), np.float32), train=True)[0].shape
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

    def forward(self, x: Any, train: bool = False):
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
        gpu = xp is not np
        act = self._activation
        # Every pass runs over row blocks of the tiled (M / r, r * C) view, in threads on NumPy:
        # elementwise work that NumPy would run on one core over several large temporaries.
        xt = tiled(xm)[0]
        nblocks = -(-xt.shape[0] // block_rows(xt))
        centred = None
        if train and gpu:
            # On a GPU: the centred two-pass statistics always (choosing, as below, would cost
            # a host sync), column sums as matrix-vector products (a reduction over axis 0
            # with few channels leaves most of the GPU idle), and the per-channel arithmetic
            # in one kernel.
            ones = xp.ones(m, dtype=xm.dtype)
            mean = (ones @ xm) * (1.0 / m)
            centred = xm - mean
            var = (ones @ (centred * centred)) * (1.0 / m)
            rm, rv = own(self.state, "running_mean"), own(self.state, "running_var")
            invstd, scale = _kernels.bn_train_stats(mean, var, gamma, rm, rv, self.eps,
                                                    self.momentum, m)
            shift = beta
        elif train:
            part = xp.empty((2, nblocks, xt.shape[1]), dtype=xt.dtype)

            def stats(k: int, a: int, b: int) -> None:
                v = xt[a:b]
                part[0, k] = v.sum(axis=0)
                part[1, k] = xp.einsum("ij,ij->j", v, v)

            for_blocks(stats, xt)
            sums = part.sum(axis=1)
            mean = untile(sums[0], c) * (1.0 / m)
            # One pass for the variance, E[x^2] - mean^2, where the data is well conditioned
            # (|mean| <= 4 std: float32 loses at most ~17x its rounding there); otherwise the
            # two-pass centred form, keeping the centred data for the backward pass.
            var = untile(sums[1], c) * (1.0 / m) - mean * mean
            if not bool(xp.all(mean * mean <= _WELL_CONDITIONED * var)):
                centred = xt - tiled(xm, mean)[1]
                var = untile(_sumsq(centred), c) * (1.0 / m)
            var = xp.maximum(var, 0.0)
            invstd = 1.0 / xp.sqrt(var + self.eps)
            mom = self.momentum
            rm, rv = own(self.state, "running_mean"), own(self.state, "running_var")
            rm *= 1.0 - mom
            rm += mom * mean
            rv *= 1.0 - mom
            rv += (mom * m / max(m - 1, 1)) * var
            scale = gamma * invstd
            shift = beta if centred is not None else beta - mean * scale
        else:
            mean = self.state["running_mean"]
            invstd = 1.0 / xp.sqrt(self.state["running_var"] + self.eps)
            scale = gamma * invstd
            shift = beta - mean * scale
        src = centred if centred is not None else xt
        _, scale_t, shift_t = tiled(xm, scale, shift)
        y = xp.empty_like(xt)
        keep = xp.empty_like(xt) if act.needs_z else None

        def normalise(k: int, a: int, b: int) -> None:
            yb = y[a:b]
            xp.multiply(src[a:b], scale_t, out=yb)
            yb += shift_t
            if keep is not None:
                keep[a:b] = yb
            act.forward_into(yb)

        if gpu and keep is None and act.name in ("identity", "relu"):
            _kernels.bn_affine(src, scale_t, shift_t, y, relu=act.name == "relu")
        else:
            for_blocks(normalise, xt)
        out = y.reshape(x_cl.shape)

        def backprop(dy: Any, need_dx: bool = True) -> Any:
            self._check_dy(dy, x.shape)
            dy_cl = to_cl(dy) if dy.ndim > 2 else dy
            dyt = dy_cl.reshape(y.shape)
            self._track(out, dy_cl)
            identity = act.name == "identity"
            dz = dyt if identity else xp.empty_like(dyt)
            # sum(dz * (x - mean)): from x itself where the forward found it well conditioned.
            cen = src if train else xt - tiled(xm, mean)[1]
            if gpu and train:
                return gpu_backprop(dyt, dz, cen, identity, need_dx)
            part = xp.empty((2, nblocks, dyt.shape[1]), dtype=dyt.dtype)

            def reduce(k: int, a: int, b: int) -> None:
                if not identity:
                    act.backward_into(dyt[a:b], None if keep is None else keep[a:b], y[a:b],
                                      dz[a:b])
                d = dz[a:b]
                part[0, k] = d.sum(axis=0)
                part[1, k] = xp.einsum("ij,ij->j", d, cen[a:b])

            for_blocks(reduce, xt)
            sums = part.sum(axis=1)
            dbeta = untile(sums[0], c)
            dot = untile(sums[1], c)
            if cen is xt:
                dot = dot - mean * dbeta
            dgamma = dot * invstd
            self.grads["bias"] += dbeta
            self.grads["weight"] += dgamma
            if not need_dx:
                return None
            k = gamma * invstd
            if train:
                # dx = k * (dz - mean(dz) - xhat * mean(dz * xhat)), xhat = (x - mean) * invstd
                #    = k * dz + b * x + c, per channel b and c.
                bb = k * invstd * dgamma * (-1.0 / m)
                cc = k * dbeta * (-1.0 / m) - (bb * mean if cen is xt else 0.0)
                _, k_t, b_t, c_t = tiled(xm, k, bb, cc)
            else:
                _, k_t = tiled(xm, k)
            dx = xp.empty_like(dz) if identity else dz       # dz is this pass's own buffer

            def gradient(kb: int, a: int, b: int) -> None:
                o = dx[a:b]
                xp.multiply(dz[a:b], k_t, out=o)
                if train:
                    o += c_t
                    o += cen[a:b] * b_t

            for_blocks(gradient, xt)
            dx = dx.reshape(x_cl.shape)
            return from_cl(dx) if x.ndim > 2 else dx

        def gpu_backprop(dyt: Any, dz: Any, cen: Any, identity: bool, need_dx: bool) -> Any:
            # The training backward pass of ``backprop`` in four launches on CuPy: the
            # activation's gradient, two reductions, the per-channel coefficients, dx.
            if not identity:
                act.backward_into(dyt, keep, y, dz)
            k, bb, cc = _kernels.bn_backward_coeffs(
                ones @ dz, ones @ (dz * cen), gamma, invstd, self.grads["weight"],
                self.grads["bias"], m)
            if not need_dx:
                return None
            dx = xp.empty_like(dz) if identity else dz
            _kernels.bn_grad_train(dz, cen, k, bb, cc, dx)
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
