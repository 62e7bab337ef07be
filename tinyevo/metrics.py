"""What a model's outputs say, in one place: outputs in batches, class probabilities, R².

    >>> out = outputs(model, x_test)                        # doctest: +SKIP
    >>> softmax(out).sum(axis=1)                            # doctest: +SKIP
    array([1., 1., ...])
    >>> r2_score(np.array([1.0, 2.0, 3.0]), np.array([1.0, 2.0, 3.5]))
    0.875
"""

from __future__ import annotations

from typing import Any

import numpy as np

from tinyevo import backend as B

__all__ = ["outputs", "softmax", "r2_score", "r2_from_sums"]


def outputs(model: Any, x: Any, batch_size: int = 256) -> np.ndarray:
    """``model``'s outputs on the samples of ``x`` as a host array (N, K), in batches of
    ``batch_size`` (moved to the current backend and back)."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    if getattr(x, "ndim", 0) < 1:
        raise ValueError(f"expected a batch-first array of samples, got {type(x).__name__}")
    parts = [B.to_numpy(model(B.to_device(x[i:i + batch_size])))
             for i in range(0, len(x), batch_size)]
    if not parts:
        return np.zeros((0, 0), dtype=np.float32)
    out = np.concatenate(parts)
    return out.reshape(len(out), -1)


def softmax(logits: Any) -> np.ndarray:
    """Class probabilities from logits (N, K), row by row, in float64."""
    z = np.asarray(B.to_numpy(logits), dtype=np.float64)
    z = np.exp(z - z.max(axis=1, keepdims=True))
    return z / z.sum(axis=1, keepdims=True)


def r2_score(y: Any, pred: Any) -> float:
    """The coefficient of determination, averaged over outputs (scikit-learn's ``r2_score``
    with ``multioutput="uniform_average"``): 1 is perfect, 0 is predicting the mean. An
    output whose targets are constant counts 1 where it is predicted exactly, else 0."""
    y = np.asarray(B.to_numpy(y), dtype=np.float64).reshape(len(y), -1)
    pred = np.asarray(B.to_numpy(pred), dtype=np.float64).reshape(len(y), -1)
    if y.shape != pred.shape:
        raise ValueError(f"r2_score: targets {y.shape} and predictions {pred.shape} differ")
    return r2_from_sums(((y - pred) ** 2).sum(axis=0), ((y - y.mean(axis=0)) ** 2).sum(axis=0))


def r2_from_sums(sse: Any, sst: Any) -> float:
    """R² averaged over outputs from each output's sum of squared errors ``sse`` and total sum
    of squares about the mean ``sst`` (what a pass in batches accumulates)."""
    sse, sst = np.asarray(sse, dtype=np.float64), np.asarray(sst, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        r2 = np.where(sst > 0, 1.0 - sse / np.where(sst > 0, sst, 1.0),
                      np.where(sse == 0, 1.0, 0.0))
    return float(r2.mean())
