"""Fused CuPy kernels for passes that the NumPy code writes as several array operations.

On a GPU every array operation is a kernel launch costing ~10 us of host time, and a small
model's training step is bound by those launches rather than by arithmetic (Adam's update, for
one, is about a dozen array operations per parameter). Each kernel here does one such pass in
a single launch, with the same arithmetic as the NumPy code beside its call (up to the
compiler's fused multiply-adds; the NumPy code stays the reference the GPU tests compare with).

Kernels are compiled on first use, from the CuPy module that :mod:`tinyevo.backend` holds (the
one place that imports CuPy), and are used only for CuPy arrays (callers check
:func:`tinyevo.backend.is_gpu`).
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

from tinyevo import backend as B

# name: (input parameters, output parameters, body). Outputs that are read before being
# written are updated in place.
_SOURCES = {
    # Adam (Kingma & Ba), as Adam._step: lr_t = lr / (1 - b1^t), c2 = 1 / sqrt(1 - b2^t).
    "adam": (
        "T g, T b1, T a1, T b2, T a2, T lr_t, T c2, T eps",
        "T p, T m, T v",
        """
        m = m * b1 + a1 * g;
        v = v * b2 + a2 * (g * g);
        p -= (m / (sqrt(v) * c2 + eps)) * lr_t;
        """,
    ),
    # BatchNorm, per channel, after the batch statistics: 1/std, the affine map of the centred
    # data, and the running statistics (updated in place).
    "bn_train_stats": (
        "T mean, T var, T gamma, T eps, T keep, T mom, T mom_unbiased",
        "T invstd, T scale, T rm, T rv",
        """
        T v = var > 0 ? var : (T)0;
        invstd = (T)1 / sqrt(v + eps);
        scale = gamma * invstd;
        rm = rm * keep + mom * mean;
        rv = rv * keep + mom_unbiased * v;
        """,
    ),
    # y = x * scale + shift per channel, with ReLU or without. NaN passes through ReLU as
    # through NumPy's maximum, so that the loss check still sees a diverged model.
    "bn_affine": ("T x, T scale, T shift", "T y", "y = x * scale + shift;"),
    "bn_affine_relu": ("T x, T scale, T shift", "T y",
                       "T z = x * scale + shift; y = z <= (T)0 ? (T)0 : z;"),
    # ReLU's backward pass into dz: dy * (y > 0), as NumPy (a NaN or Inf dy stays non-finite).
    "relu_backward": ("T dy, T y", "T dz", "dz = dy * (T)(y > (T)0);"),
    # BatchNorm backward (training), per channel, from sum(dz) and sum(dz * centred): the
    # parameter gradients (accumulated in place) and the coefficients of dx below.
    "bn_backward_coeffs": (
        "T dbeta, T dot, T gamma, T invstd, T neg_inv_m",
        "T gw, T gb, T k, T b, T c",
        """
        T dgamma = dot * invstd;
        gb += dbeta;
        gw += dgamma;
        k = gamma * invstd;
        b = k * invstd * dgamma * neg_inv_m;
        c = k * dbeta * neg_inv_m;
        """,
    ),
    # BatchNorm backward (training): dx = k * dz + c + centred * b, per channel k, b, c.
    "bn_grad_train": ("T dz, T cen, T k, T b, T c", "T dx", "dx = dz * k + c + cen * b;"),
}


def _kernel(name: str, a: Any) -> Any:
    """The kernel ``name`` for the module of the CuPy array ``a``."""
    return _build(name, B.get_array_module(a))


@functools.cache
def _build(name: str, cupy: Any) -> Any:
    params_in, params_out, body = _SOURCES[name]
    return cupy.ElementwiseKernel(params_in, params_out, body, f"tinyevo_{name}")


def _scalars(dtype: Any, *values: float) -> list:
    t = np.dtype(dtype).type
    return [t(v) for v in values]


def adam(p: Any, g: Any, m: Any, v: Any, b1: float, b2: float, lr_t: float, c2: float,
         eps: float) -> None:
    """One Adam step on CuPy arrays, in place on ``p``, ``m`` and ``v``."""
    a1, a2 = 1.0 - b1, 1.0 - b2
    _kernel("adam", p)(g, *_scalars(p.dtype, b1, a1, b2, a2, lr_t, c2, eps), p, m, v)


def bn_train_stats(mean: Any, var: Any, gamma: Any, rm: Any, rv: Any, eps: float,
                   momentum: float, count: int) -> tuple[Any, Any]:
    """(invstd, scale) from the batch statistics; ``rm``/``rv`` updated in place."""
    xp = B.get_array_module(mean)
    invstd, scale = xp.empty_like(mean), xp.empty_like(mean)
    unbiased = momentum * count / max(count - 1, 1)
    _kernel("bn_train_stats", mean)(mean, var, gamma,
                                    *_scalars(mean.dtype, eps, 1.0 - momentum, momentum,
                                              unbiased),
                                    invstd, scale, rm, rv)
    return invstd, scale


def bn_affine(x: Any, scale: Any, shift: Any, y: Any, relu: bool) -> Any:
    """``y = x * scale + shift`` over rows of per-channel vectors, then ReLU if ``relu``."""
    return _kernel("bn_affine_relu" if relu else "bn_affine", x)(x, scale, shift, y)


def relu_backward(dy: Any, y: Any, dz: Any) -> Any:
    return _kernel("relu_backward", dy)(dy, y, dz)


def bn_backward_coeffs(dbeta: Any, dot: Any, gamma: Any, invstd: Any, gw: Any, gb: Any,
                       count: int) -> tuple[Any, Any, Any]:
    """BatchNorm's per-channel backward arithmetic: ``gw``/``gb`` (the weight and bias
    gradients) accumulated in place; returns dx's coefficients (k, b, c)."""
    xp = B.get_array_module(dbeta)
    k, b, c = xp.empty_like(dbeta), xp.empty_like(dbeta), xp.empty_like(dbeta)
    _kernel("bn_backward_coeffs", dbeta)(dbeta, dot, gamma, invstd,
                                         *_scalars(dbeta.dtype, -1.0 / count), gw, gb, k, b, c)
    return k, b, c


def bn_grad_train(dz: Any, cen: Any, k: Any, b: Any, c: Any, dx: Any) -> Any:
    return _kernel("bn_grad_train", dz)(dz, cen, k, b, c, dx)
