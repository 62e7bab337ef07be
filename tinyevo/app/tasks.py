"""What ``fit`` learns: class labels (classification) or numbers (regression).

A task says how a run reads its targets, trains and scores a candidate:

==================  =============================  ==========================================
                    classification                 regression
==================  =============================  ==========================================
targets ``y``       int64 labels 0..K-1 (N,)       float32 (N, K) (a 1-D ``y`` is K = 1)
model output        K logits                       K predictions in ``y``'s units
training loss       cross entropy                  MSE on targets standardised per output
fitness             validation accuracy (+ tie)    validation R² (mean over outputs), >= -1
test score          accuracy                       R²
==================  =============================  ==========================================

:func:`infer_task` tells them apart where ``fit`` is not told (``task=None``):

    >>> infer_task(np.array([0, 2, 1]))
    'classification'
    >>> infer_task(np.array([0.5, 2.0, 1.25]))
    'regression'
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from tinyevo.backend import get_array_module

__all__ = ["TASKS", "infer_task", "regression_targets", "ScaledMSE", "R2_FLOOR",
           "MAX_INFERRED_CLASSES", "SCORE_NAMES", "r2_standard_error"]

TASKS = ("classification", "regression")
SCORE_NAMES = {"classification": "test_accuracy", "regression": "test_r2"}  # result tables
R2_FLOOR = -1.0              # a regression fitness is R² floored here; invalid candidates get it
# Float targets with integral values are class labels when fit infers the task, unless they
# take more distinct values than this: then fit asks (a price in whole dollars is no class).
MAX_INFERRED_CLASSES = 50


def infer_task(y: Any) -> str:
    """"classification" for integer or boolean labels (N,), rows of 0s and 1s (one-hot) and
    floats that are all whole numbers (taking at most :data:`MAX_INFERRED_CLASSES` values);
    "regression" for other float targets. A ValueError where it cannot tell (many
    whole-number float values; integer columns that are not 0/1)."""
    y = np.asarray(y)
    if not np.issubdtype(y.dtype, np.number) or (
            y.dtype.kind in "iub" and (y.ndim == 1 or y.ndim == 2 and y.shape[1] == 1)):
        return "classification"
    if y.ndim == 2 and y.shape[1] > 1:
        if np.isin(y, (0, 1)).all():        # one-hot rows (each marks one class: checked later)
            return "classification"
        if y.dtype.kind in "iub":
            raise ValueError("fit: the targets are integer columns (N, K) but not one-hot "
                             "rows: class labels or numbers to predict? Say which: "
                             "task='regression' for K numbers, or pass the labels as (N,)")
        return "regression"
    finite = y[np.isfinite(y)]
    if finite.size and not np.all(finite == np.round(finite)):
        return "regression"
    distinct = len(np.unique(finite))
    if distinct > MAX_INFERRED_CLASSES:
        raise ValueError(f"fit: the targets are floats with whole-number values only, {distinct} "
                         "distinct ones: class labels or numbers to predict? Say which: "
                         "task='regression' (the command: --task regression) or "
                         "task='classification'")
    return "classification"


def regression_targets(y: Any, n: int, what: str) -> np.ndarray:
    """``y`` as checked float32 targets (N, K): from (N,) or (N, K) finite numbers."""
    y = np.asarray(y)
    if not np.issubdtype(y.dtype, np.number) or np.issubdtype(y.dtype, np.complexfloating):
        raise ValueError(f"fit: {what}: regression targets must be real numbers, got dtype "
                         f"{y.dtype}")
    if y.ndim == 1:
        y = y[:, None]
    if y.ndim != 2 or y.shape[0] != n or y.shape[1] < 1:
        raise ValueError(f"fit: {what}: expected {n} regression targets, (N,) or (N, K), got "
                         f"shape {y.shape}")
    if not np.all(np.isfinite(y)):
        raise ValueError(f"fit: {what}: the targets contain NaN or Inf; drop or impute those "
                         "samples first")
    if n > 1 and np.all(y == y[:1]):
        raise ValueError(f"fit: {what}: every target is the same ({y[0].tolist()}); there is "
                         "nothing to learn")
    with np.errstate(over="ignore"):
        y32 = y.astype(np.float32)
    if not np.all(np.isfinite(y32)):
        raise ValueError(f"fit: {what}: targets too large for float32 (up to "
                         f"{float(np.abs(y).max()):.3g}); rescale them")
    return y32


def r2_standard_error(r2: float, n: int) -> float:
    """About one standard error of a validation R² on ``n`` samples: the mean squared error
    of n roughly normal residuals varies by sqrt(2/n) of itself, and 1 - R² with it."""
    return max(0.0, 1.0 - r2) * math.sqrt(2.0 / max(1, n))


class ScaledMSE:
    """The regression loss: mean squared error with each output's errors divided by that
    output's training standard deviation, i.e. the MSE on standardised targets, so that every
    output weighs alike and the gradients do not grow with ``y``'s units. Returns
    ``(loss, dloss/dpred)`` like the losses of :mod:`tinyevo.losses`."""

    def __init__(self, scale: Any) -> None:
        self.inv_var = (1.0 / np.square(np.asarray(scale, dtype=np.float32))).reshape(1, -1)

    def __call__(self, pred: Any, target: Any) -> tuple[Any, Any]:
        xp = get_array_module(pred)
        target = xp.asarray(target, dtype=pred.dtype).reshape(pred.shape)
        weight = xp.asarray(self.inv_var, dtype=pred.dtype)
        diff = pred - target
        loss = (diff * diff * weight).mean()
        return loss, diff * weight * (2.0 / diff.size)

    def __repr__(self) -> str:
        return f"ScaledMSE({self.inv_var.shape[1]} outputs)"
