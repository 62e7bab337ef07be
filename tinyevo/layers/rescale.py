"""A fixed per-feature affine map, ``y = x * scale + offset`` along axis 1, and the arrays that
standardise data with it (features in, predictions out).

A model that starts with ``Rescale(*standardizer(x_train))`` takes raw features; one that ends
with ``Rescale(*destandardizer(y_train))`` gives predictions in the targets' units. Nothing
trains it (no parameters: both arrays are state), and resizing its input keeps the entries of
the kept neurons and gives new ones scale 1, offset 0.

    >>> scale, offset = standardizer(x); Rescale(scale, offset)(x).std(axis=0)   # ~ 1
"""

from __future__ import annotations

from typing import Any

import numpy as np

from tinyevo import backend as B
from tinyevo.layers._layout import from_cl, to_cl
from tinyevo.layers.base import Layer, register
from tinyevo.layers.dense import _check_size

__all__ = ["Rescale", "standardizer", "destandardizer"]


@register
class Rescale(Layer):
    """Rescale(scale, offset, dtype=None): ``y = x * scale + offset`` per feature or channel
    (axis 1 of (N, F), (N, C, L) or (N, C, H, W) data), fixed: no trained parameters.

        >>> Rescale([2.0, 1.0], [0.0, -1.0])(np.ones((3, 2), np.float32))[0]
        array([2., 0.], dtype=float32)
    """

    PARAM_AXES = {"scale": (0, 0), "offset": (0, 0)}
    SIZE_TRAIT = "invariant"

    def __init__(self, scale: Any, offset: Any, dtype: Any = None) -> None:
        super().__init__("identity")
        scale, offset = _vector(scale, "scale"), _vector(offset, "offset")
        if scale.shape != offset.shape:
            raise ValueError(f"Rescale: scale and offset need one entry per feature/channel "
                             f"each, got {scale.size} scales and {offset.size} offsets")
        dt = dtype or B.floatx()
        self.state = {"scale": B.to_device(scale, dtype=dt),
                      "offset": B.to_device(offset, dtype=dt)}

    @classmethod
    def identity(cls, n: int, dtype: Any = None) -> Rescale:
        """The Rescale of ``n`` features that changes nothing (scale 1, offset 0)."""
        _check_size("n", n)
        return cls(np.ones(n), np.zeros(n), dtype=dtype)

    @property
    def nin(self) -> int:
        return int(self.state["scale"].shape[0])

    @property
    def dtype(self) -> Any:
        return self.state["scale"].dtype

    def forward(self, x: Any, train: bool = False):
        if getattr(x, "ndim", 0) < 2:
            raise self._fail("wrong input rank", "(N, C) or (N, C, *spatial)",
                             f"shape {getattr(x, 'shape', type(x).__name__)}")
        x = self._check_channels(x, x.ndim, "(N, C, ...)")
        scale = self.state["scale"]
        # Channels last in memory, as the other layers keep activations (see layers.base).
        y = B.get_array_module(x).multiply(_last(x), scale)
        y += self.state["offset"]
        y = _first(y, x.ndim)

        def backprop(dy: Any, need_dx: bool = True) -> Any:
            self._check_dy(dy, x.shape)
            return _first(_last(dy) * scale, dy.ndim) if need_dx else None

        return y, backprop

    def _new_out_values(self, name: str, shape: tuple, axis: int,
                        rng: np.random.Generator) -> np.ndarray:
        return np.full(shape, 1.0 if name == "scale" else 0.0, dtype=np.float32)

    def to_spec(self) -> dict:
        return {"type": "Rescale", "n": self.nin}

    @classmethod
    def from_spec(cls, spec: dict, arrays: dict | None = None) -> Rescale:
        extra = sorted(set(spec) - {"type", "n"})
        if extra or "n" not in spec:
            raise ValueError(f"a Rescale spec is {{'type': 'Rescale', 'n': features}}, got "
                             f"{spec!r}; its scale and offset come as arrays")
        layer = cls.identity(spec["n"])
        if arrays:
            layer.load_arrays(arrays)
        return layer

    def __repr__(self) -> str:
        return f"Rescale({self.nin})"


def standardizer(x: Any) -> tuple[np.ndarray, np.ndarray]:
    """``(scale, offset)`` that standardise ``x`` per feature/channel (axis 1, statistics over
    every other axis): ``x * scale + offset`` has mean 0 and standard deviation 1. A constant
    feature gets scale 1 (it becomes 0). float32 arrays, statistics of ``x`` as float32.

        >>> scale, offset = standardizer(np.array([[1.0, 5.0], [3.0, 5.0]])); scale, offset
        (array([1., 1.], dtype=float32), array([-2., -5.], dtype=float32))
    """
    mean, std = _moments(_host(x, "standardizer"), "standardizer")
    scale = 1.0 / std
    return scale.astype(np.float32), (-mean * scale).astype(np.float32)


def destandardizer(y: Any) -> tuple[np.ndarray, np.ndarray]:
    """``(scale, offset)`` that undo the standardisation of targets ``y`` ((N,) or (N, K), per
    column): ``z * scale + offset`` maps standardised predictions back to ``y``'s units
    (scale = std, offset = mean; a constant column gets scale 1). float32 arrays.

        >>> destandardizer(np.array([1.0, 3.0]))
        (array([1.], dtype=float32), array([2.], dtype=float32))
    """
    host = _host(y, "destandardizer")
    mean, std = _moments(host.reshape(-1, 1) if host.ndim == 1 else host, "destandardizer")
    return std.astype(np.float32), mean.astype(np.float32)


# ---------------------------------------------------------------------- helpers

def _last(x: Any) -> Any:
    """(N, C, *S) as channels-last memory (free for a layer's own output); (N, F) as is."""
    return to_cl(x) if x.ndim > 2 else x


def _first(y: Any, ndim: int) -> Any:
    return from_cl(y) if ndim > 2 else y


def _vector(a: Any, name: str) -> np.ndarray:
    """``a`` as a finite, real 1-D float64 host array of at least one entry."""
    host = np.asarray(B.to_numpy(a))
    if host.dtype.kind not in "biuf":
        raise ValueError(f"Rescale: {name} must be real numbers, got dtype {host.dtype}")
    if host.ndim != 1 or host.size < 1:
        raise ValueError(f"Rescale: {name} must be a 1-D array with one entry per "
                         f"feature/channel, got shape {host.shape}")
    if not np.isfinite(host).all():
        raise ValueError(f"Rescale: {name} must be finite, got non-finite values at "
                         f"{np.flatnonzero(~np.isfinite(host))[:5].tolist()}")
    return host.astype(np.float64)


def _host(x: Any, who: str) -> np.ndarray:
    """``x`` (an array or nested lists of numbers) as a real NumPy array."""
    host = B.to_numpy(x)
    if host.dtype.kind not in "biuf":
        raise ValueError(f"{who}: expected real numbers, got dtype {host.dtype}; convert the "
                         "data to float first")
    return host


def _moments(host: np.ndarray, who: str) -> tuple[np.ndarray, np.ndarray]:
    """Per axis-1 mean and standard deviation (float64) of ``host`` as the model sees it
    (float32); a standard deviation of 0 (a constant column: exactly 0, as float32 values sum
    exactly in float64) becomes 1."""
    if host.ndim < 2 or host.shape[0] < 1 or host.shape[1] < 1:
        raise ValueError(f"{who}: expected (N, features) or (N, C, *spatial) data with at "
                         f"least one sample and one feature, got shape {tuple(host.shape)}")
    with np.errstate(over="ignore", invalid="ignore"):     # reported just below
        host = host.astype(np.float32, copy=False)
    bad = ~np.isfinite(host)
    if bad.any():
        where = tuple(np.argwhere(bad)[0].tolist())
        raise ValueError(f"{who}: the data has {int(bad.sum())} non-finite values (NaN, inf, "
                         f"or beyond float32's range; the first at index {where}); drop or "
                         "impute them first")
    axes = (0, *range(2, host.ndim))
    mean = host.mean(axis=axes, dtype=np.float64)
    std = host.std(axis=axes, dtype=np.float64)
    return mean, np.where(std > 0, std, 1.0)
