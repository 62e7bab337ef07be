"""Losses: each returns ``(loss, dlogits)``, the mean loss over the batch (a 0-d array, so no
device sync) and its gradient with respect to the model output.

    >>> loss, d = logit_cross_entropy(np.zeros((2, 3), np.float32), np.array([0, 2]))
    >>> round(float(loss), 4)
    1.0986
"""

from __future__ import annotations

from typing import Any

import numpy as np

from tinyevo.backend import get_array_module

__all__ = ["logit_cross_entropy", "mse", "LOSSES", "get"]


def logit_cross_entropy(logits: Any, labels: Any) -> tuple[Any, Any]:
    """Softmax cross entropy from logits (N, K) and integer labels (N,) or one-hot/soft (N, K)."""
    xp = get_array_module(logits)
    if getattr(logits, "ndim", None) != 2:
        raise ValueError(f"logit_cross_entropy: expected logits of shape (N, K), got "
                         f"{getattr(logits, 'shape', type(logits).__name__)}")
    n, k = logits.shape
    labels = xp.asarray(labels)
    shifted = logits - logits.max(axis=1, keepdims=True)
    logz = xp.log(xp.exp(shifted).sum(axis=1, keepdims=True))
    logp = shifted - logz
    probs = xp.exp(logp)
    if labels.ndim == 1:
        if labels.shape[0] != n:
            raise ValueError(f"logit_cross_entropy: {n} logits rows but {labels.shape[0]} labels")
        if labels.dtype.kind not in "iu":
            raise ValueError(f"logit_cross_entropy: integer labels expected, got dtype "
                             f"{labels.dtype}; pass int labels or one-hot (N, K) targets")
        if xp is np and n and (labels.min() < 0 or labels.max() >= k):
            raise ValueError(f"logit_cross_entropy: labels must lie in [0, {k}), got range "
                             f"[{labels.min()}, {labels.max()}]")
        rows = xp.arange(n)
        loss = -logp[rows, labels].mean()
        grad = probs
        grad[rows, labels] -= 1.0
    elif labels.shape == (n, k):
        target = labels.astype(logits.dtype, copy=False)
        loss = -(target * logp).sum(axis=1).mean()
        grad = probs - target
    else:
        raise ValueError(f"logit_cross_entropy: labels must be (N,) integers or (N, K) one-hot "
                         f"matching logits {tuple(logits.shape)}, got {tuple(labels.shape)}")
    grad *= 1.0 / n
    return loss, grad


def mse(pred: Any, target: Any) -> tuple[Any, Any]:
    """Mean squared error over all elements."""
    xp = get_array_module(pred)
    target = xp.asarray(target, dtype=pred.dtype)
    if target.shape != pred.shape:
        if target.ndim == 1 and pred.ndim == 2 and pred.shape == (target.shape[0], 1):
            target = target[:, None]
        else:
            raise ValueError(f"mse: prediction shape {tuple(pred.shape)} and target shape "
                             f"{tuple(target.shape)} differ")
    diff = pred - target
    loss = (diff * diff).mean()
    return loss, diff * (2.0 / diff.size)


LOSSES = {"logit_cross_entropy": logit_cross_entropy, "mse": mse}


def get(name: Any) -> Any:
    """A loss by name, or the callable itself."""
    if callable(name):
        return name
    if name not in LOSSES:
        raise ValueError(f"unknown loss {name!r}: expected one of {sorted(LOSSES)}")
    return LOSSES[name]
