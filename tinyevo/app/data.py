"""The data of a ``fit`` run: its arrays checked, the validation split, and the stream of
training batches that every candidate of a generation trains on.

    >>> x, y, task = as_arrays(batches, None, "training data")  # doctest: +SKIP
    >>> (x, y), (xv, yv) = split_validation(x, y, 0.3, seed=0)  # doctest: +SKIP
    >>> GenerationBatches(x, y, FitConfig(seed=0)).itergeneration(2)  # doctest: +SKIP
    <generation 2: batches 30...62 of the stream>
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from tinyevo import backend as B
from tinyevo.app.config import FitConfig
from tinyevo.app.tasks import infer_task, regression_targets

__all__ = ["as_arrays", "checked_float32", "classes", "noutputs", "validation_arrays",
           "split_validation", "GenerationBatches", "KIND_OF_RANK"]

KIND_OF_RANK = {2: "dense", 3: "conv1d", 4: "conv2d"}
MAX_SPARSE_CLASSES = 1000   # labels may skip classes, but not up to more than this (or 10x)


def as_arrays(x: Any, y: Any, what: str, task: str | None = None
              ) -> tuple[np.ndarray, np.ndarray, str]:
    """Validated float32 samples (N, ...) and targets from arrays, an ``(x, y)`` tuple or an
    iterable of ``(x, y)`` batches, with the task (``task``, else :func:`infer_task`'s):
    int64 labels (N,) for classification, float32 (N, K) for regression."""
    if y is None:
        if isinstance(x, tuple) and len(x) == 2:
            x, y = x
        elif isinstance(x, Iterable) and not hasattr(x, "shape"):
            batches = list(x)
            if not batches or not all(isinstance(b, tuple) and len(b) == 2 for b in batches):
                raise ValueError(f"fit: {what} given as an iterable must yield (x, y) batches")
            x = np.concatenate([B.to_numpy(b[0]) for b in batches])
            y = np.concatenate([B.to_numpy(b[1]) for b in batches])
        else:
            raise ValueError(f"fit: {what}: labels y are missing; pass fit(x, y), fit((x, y)) "
                             "or an iterable of (x, y) batches")
    x, y = B.to_numpy(x), B.to_numpy(y)
    if x.ndim not in KIND_OF_RANK:
        raise ValueError(f"fit: {what} must be (N, F), (N, C, L) or (N, C, H, W), got shape "
                         f"{x.shape}")
    if not np.issubdtype(x.dtype, np.number) or np.issubdtype(x.dtype, np.complexfloating):
        raise ValueError(f"fit: {what} must be real numbers, got dtype {x.dtype}")
    task = task or infer_task(y)
    y = regression_targets(y, x.shape[0], what) if task == "regression" else _labels(y, x, what)
    if x.shape[0] < 2:
        raise ValueError(f"fit: {what} needs at least 2 samples, got {x.shape[0]}")
    if not np.all(np.isfinite(x)):
        raise ValueError(f"fit: {what} contains NaN or Inf values; clean or impute them first")
    return checked_float32(x, f"fit: {what}"), y, task


def checked_float32(x: Any, what: str) -> np.ndarray:
    """Finite numbers ``x`` as a contiguous float32 array, which tinyevo computes in; a
    ValueError (its message starting with ``what``) for values float32 cannot hold."""
    x = np.asarray(x)
    with np.errstate(over="ignore"):        # checked just below
        x32 = np.ascontiguousarray(x, dtype=np.float32)
    if x32.dtype != x.dtype and not np.all(np.isfinite(x32)):
        big = float(np.abs(x[np.isfinite(x)]).max())
        raise ValueError(f"{what} has values too large for float32 (up to {big:.3g}; "
                         "float32 holds up to 3.4e38), which tinyevo computes in; rescale "
                         "them (for example standardise each feature)")
    return x32


def _labels(y: np.ndarray, x: np.ndarray, what: str) -> np.ndarray:
    """Class labels as int64 (N,), from labels (N,) or (N, 1) or one-hot rows (N, K)."""
    if y.ndim == 2 and y.shape[0] == x.shape[0] and y.shape[1] == 1:
        y = y[:, 0]                                # a column of labels
    elif y.ndim == 2 and y.shape[0] == x.shape[0]:
        if not np.issubdtype(y.dtype, np.number) or not np.all(np.isfinite(y)):
            raise ValueError(f"fit: {what}: one-hot labels must be finite numbers, got dtype "
                             f"{y.dtype}")
        empty = np.flatnonzero(y.max(axis=1) <= 0)
        if empty.size:
            raise ValueError(f"fit: {what}: one-hot label rows must mark a class, but "
                             f"{empty.size} rows are all zero (the first is row {empty[0]}); "
                             "pass integer labels 0..K-1 or fix those rows")
        marks = (y != 0).sum(axis=1)
        if not np.isin(y, (0, 1)).all() or marks.max() > 1:
            row = int(np.argmax((marks > 1) | ~np.isin(y, (0, 1)).all(axis=1)))
            raise ValueError(f"fit: {what}: label rows (N, K) must be one-hot (a single 1, "
                             f"the rest 0), but row {row} is {y[row].tolist()}; multi-label "
                             "and soft labels are not supported (for K numbers to predict, "
                             "pass task='regression')")
        y = y.argmax(axis=1)                       # one-hot labels
    if y.ndim != 1 or y.shape[0] != x.shape[0]:
        raise ValueError(f"fit: {what}: expected {x.shape[0]} labels (N,) or one-hot (N, K), "
                         f"got shape {y.shape}")
    if not np.issubdtype(y.dtype, np.integer):
        if np.issubdtype(y.dtype, np.floating) and np.all(y == np.round(y)):
            y = y.astype(np.int64)
        else:
            hint = ("for numbers to predict pass task='regression'"
                    if np.issubdtype(y.dtype, np.number) else
                    "map text labels to 0..K-1 with numpy.unique(y, return_inverse=True), "
                    "or use tinyevo.EvoClassifier, which takes labels of any kind")
            raise ValueError(f"fit: {what}: labels must be integers 0..K-1, got dtype "
                             f"{y.dtype}; {hint}")
    if len(y) and (y.min() < 0):
        raise ValueError(f"fit: {what}: labels must be integers 0..K-1, got minimum {y.min()}; "
                         "remap them with numpy.unique(y, return_inverse=True)")
    return y.astype(np.int64)


def noutputs(y: np.ndarray, task: str) -> int:
    """The model's outputs for targets ``y``: the classes (:func:`classes`), or the columns of
    regression targets."""
    return classes(y) if task == "classification" else int(y.shape[1])


def classes(y: np.ndarray) -> int:
    """The number of classes of labels ``y`` (0..K-1): a ValueError for one class only, or for
    labels that skip far more classes than they use."""
    nclasses = int(y.max()) + 1
    distinct = len(np.unique(y))
    if distinct < 2:
        raise ValueError(f"fit: the training data has one class only (label {int(y[0])}); a "
                         "classifier needs at least two")
    if nclasses > max(MAX_SPARSE_CLASSES, 10 * distinct):
        raise ValueError(f"fit: labels must be 0..K-1, but the largest is {nclasses - 1} and "
                         f"only {distinct} distinct labels appear (a model with {nclasses:,} "
                         "outputs); remap them with numpy.unique(y, return_inverse=True)")
    return nclasses


def validation_arrays(valid: Any, x: np.ndarray, task: str, nout: int
                      ) -> tuple[np.ndarray, np.ndarray]:
    """``fit``'s ``valid=`` as checked arrays: samples shaped as ``x``'s, labels among its
    ``nout`` classes (or ``nout`` regression targets a sample)."""
    xv, yv, _ = as_arrays(*valid, "validation data", task) if isinstance(valid, tuple) and \
        len(valid) == 2 else as_arrays(valid, None, "validation data", task)
    if xv.shape[1:] != x.shape[1:]:
        raise ValueError(f"fit: validation samples have shape {xv.shape[1:]}, training "
                         f"samples {x.shape[1:]}; they must match")
    if task == "regression" and yv.shape[1] != nout:
        raise ValueError(f"fit: validation targets have {yv.shape[1]} columns, training "
                         f"targets {nout}; they must match")
    if task == "classification" and yv.max() >= nout:
        raise ValueError(f"fit: validation label {int(yv.max())} is not a class of the "
                         f"training data (labels 0..{nout - 1}); every validation "
                         "sample would count as wrong. Use the same label coding for both")
    return xv, yv


def split_validation(x: np.ndarray, y: np.ndarray, fraction: float, seed: int,
                     max_samples: int | None = None) -> tuple[tuple, tuple]:
    """A stratified, seeded split: ``fraction`` of each class to validation (at least one
    sample of classes with two or more), and with ``max_samples``, at most that many in all
    (each class in proportion to its size). Regression targets (float, (N, K)) are one group."""
    rng = np.random.default_rng([seed, 7])
    if max_samples is not None:
        fraction = min(fraction, max_samples / len(y))
    valid_idx = []
    groups = y if y.ndim == 1 else np.zeros(len(y), dtype=np.int64)
    for label in np.unique(groups):
        idx = np.flatnonzero(groups == label)
        take = min(len(idx) - 1, max(1, int(round(fraction * len(idx))))) if len(idx) > 1 else 0
        valid_idx.extend(rng.permutation(idx)[:take])
    mask = np.zeros(len(y), dtype=bool)
    mask[np.asarray(valid_idx, dtype=np.int64)] = True
    if mask.all() or not mask.any():
        raise ValueError(f"fit: cannot split {len(y)} samples into training and validation; "
                         "pass valid=(x_valid, y_valid)")
    return (x[~mask], y[~mask]), (x[mask], y[mask])


class GenerationBatches:
    """The training batches of a generation: the next slice of one shuffled stream.

    The stream runs through the training samples epoch after epoch, each epoch in an order
    drawn from the run seed and the epoch number alone. Generation ``g`` trains on the
    ``config.batches_at(g)`` batches that follow those of generations 1..g-1 (the seed's
    RepeatPartitionIterator), so every candidate of a generation trains on the same batches,
    a long run sees all the data, and the cost of a generation does not grow with the data.
    Stateless: every candidate, process and resumed run gets the same batches.
    ``itergeneration(g)`` (what TrainThenFitness asks for) returns them as a lazy sequence
    (``len()`` works; batches are gathered as they are iterated), optionally shifted by up to
    one pixel (``config.augment``).
    """

    def __init__(self, x: np.ndarray, y: np.ndarray, config: FitConfig) -> None:
        if config.seed is None:
            raise ValueError("GenerationBatches draws its orders from the run seed: give the "
                             "config a seed (FitConfig(seed=...))")
        self.x, self.y, self.config = x, y, config
        self._device: tuple | None = None

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_device": None}    # workers move the data themselves

    def span(self, generation: int) -> tuple[int, int]:
        """``(first, count)``: the stream's batches that ``generation`` trains on."""
        n = len(self.y)
        first = sum(self.config.batches_at(g, n) for g in range(1, generation))
        return first, self.config.batches_at(generation, n)

    def itergeneration(self, generation: int | None) -> _StreamSlice:
        g = 1 if generation is None else int(generation)
        first, count = self.span(g)
        return self.batches(first, count, g)

    def batches(self, first: int, count: int, generation: int = 0) -> _StreamSlice:
        """The stream's batches ``first .. first + count - 1``, shifted (with ``augment``) by
        draws of ``generation``'s generator."""
        return _StreamSlice(self, generation, first, count)

    def order(self, epoch: int) -> np.ndarray:
        """The sample order of ``epoch`` (0-based) of the stream."""
        return np.random.default_rng([self.config.seed, 1, epoch]).permutation(len(self.y))

    def indices(self, first: int, count: int) -> np.ndarray:
        """The sample indices of the stream's batches ``first .. first + count - 1``."""
        n, bs = len(self.y), self.batch_size
        start, stop = first * bs, (first + count) * bs
        epochs = range(start // n, (stop - 1) // n + 1)
        stream = np.concatenate([self.order(e) for e in epochs])
        offset = epochs[0] * n
        return stream[start - offset:stop - offset]

    @property
    def batch_size(self) -> int:
        return min(self.config.batch_size, len(self.y))

    def _device_arrays(self) -> tuple[Any, Any]:
        if self._device is None or self._device[0] != B.name():
            self._device = (B.name(), B.to_device(self.x), B.to_device(self.y))
        return self._device[1:]

    def __iter__(self):
        return iter(self.itergeneration(1))

    def __repr__(self) -> str:
        return f"GenerationBatches({len(self.y)} samples, batch {self.config.batch_size})"


class _StreamSlice:
    """The batches of one generation (see :class:`GenerationBatches`), gathered lazily."""

    def __init__(self, source: GenerationBatches, generation: int, first: int,
                 count: int) -> None:
        self.source, self.generation, self.first, self.count = source, generation, first, count

    def __len__(self) -> int:
        return self.count

    @property
    def nsamples(self) -> int:
        """Samples of the generation (what a candidate re-batching them counts its steps by)."""
        return self.count * self.source.batch_size

    def __iter__(self):
        src, cfg, bs = self.source, self.source.config, self.source.batch_size
        order = src.indices(self.first, self.count)
        if B.name() != "numpy" and not cfg.augment:
            # On a GPU the samples move there once; batches are gathered there.
            x, y = src._device_arrays()
            index = B.to_device(order)
            for b in range(self.count):
                yield x[index[b * bs:(b + 1) * bs]], y[index[b * bs:(b + 1) * bs]]
            return
        rng = np.random.default_rng([cfg.seed, self.generation, 2])
        for b in range(self.count):
            idx = order[b * bs:(b + 1) * bs]
            xb = src.x[idx]
            if cfg.augment and xb.ndim == 4:
                xb = _shift(xb, rng)
            yield B.to_device(xb), B.to_device(src.y[idx])

    def __repr__(self) -> str:
        return (f"<generation {self.generation}: batches {self.first}..."
                f"{self.first + self.count - 1} of the stream>")


def _shift(xb: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Shift each image by -1, 0 or +1 pixels in each direction (zeros come in)."""
    n, _, h, w = xb.shape
    padded = np.pad(xb, ((0, 0), (0, 0), (1, 1), (1, 1)))
    dy, dx = rng.integers(0, 3, n), rng.integers(0, 3, n)
    out = np.empty_like(xb)
    for oy in range(3):
        for ox in range(3):
            sel = np.flatnonzero((dy == oy) & (dx == ox))
            if sel.size:
                out[sel] = padded[sel, :, oy:oy + h, ox:ox + w]
    return out
