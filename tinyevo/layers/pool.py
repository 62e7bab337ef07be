"""Pooling (max, mean; 1-D and 2-D), global pooling, flatten and dropout: layers without
parameters that take any number of channels."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import numpy as np

from tinyevo import backend as B
from tinyevo.layers._layout import from_cl, to_cl
from tinyevo.layers.base import Layer, register
from tinyevo.layers.conv import (
    _check_padding,
    _pad_cl,
    _tuple,
    _window_slices,
    conv_output_size,
    resolve_padding,
)

__all__ = ["MaxPool", "MeanPool", "GlobalPool", "Flatten", "Dropout"]


class _Pool(Layer):
    """Shared window logic; ``ndim`` None means: 1-D or 2-D, from the input's rank."""

    MODE = ""

    def __init__(self, window: int | Sequence[int] = 2, stride: int | Sequence[int] | None = None,
                 padding: Any = 0, ndim: int | None = None) -> None:
        super().__init__("identity")
        if ndim is None and isinstance(window, (tuple, list)):
            ndim = len(window)
        elif ndim is None and isinstance(padding, (tuple, list)):
            ndim = len(padding)
        if ndim not in (None, 1, 2):
            raise ValueError(f"{type(self).__name__} supports 1-D and 2-D, got ndim={ndim}")
        self.ndim = ndim
        self.window = tuple(window) if isinstance(window, (tuple, list)) else window
        stride = self.window if stride is None else stride
        self.stride = tuple(stride) if isinstance(stride, (tuple, list)) else stride
        self.padding = _tuples(padding)   # lists (from a JSON spec) as tuples, as given in code
        self.geometry(ndim or 1)                          # validate now, not at the first call

    def geometry(self, nd: int) -> tuple:
        """(window, stride, padding) for ``nd`` spatial dimensions; padding is ((lo, hi), ...)
        or "same" (ceil(n / stride) outputs, resolved per input size by :meth:`padding_for`)."""
        pad = "same" if self.padding == "same" else _check_padding(self.padding, nd)
        return _tuple(self.window, nd, "window"), _tuple(self.stride, nd, "stride"), pad

    def padding_for(self, spatial: Sequence[int]) -> tuple:
        """Explicit ((lo, hi), ...) padding for an input of spatial size ``spatial``."""
        win, st, pad = self.geometry(len(spatial))
        return resolve_padding(pad, spatial, win, st, (1,) * len(spatial))

    def output_shape(self, spatial: Sequence[int]) -> tuple[int, ...]:
        win, st, _ = self.geometry(len(spatial))
        pad = self.padding_for(spatial)
        return tuple(conv_output_size(n, k, s, 1, p) for n, k, s, p in zip(spatial, win, st, pad))

    def forward(self, x: Any, train: bool = False):
        ranks = (self.ndim + 2,) if self.ndim else (3, 4)
        if getattr(x, "ndim", None) not in ranks:
            raise self._fail("wrong input rank",
                             " or ".join(f"{r}-D (N, C, *spatial)" for r in ranks),
                             f"shape {getattr(x, 'shape', type(x).__name__)}")
        self._check_real(x)
        nd = x.ndim - 2
        win, st, _ = self.geometry(nd)
        pad = self.padding_for(x.shape[2:])
        out = self.output_shape(x.shape[2:])
        if min(out) < 1:
            raise self._fail("input too small for the window", f"spatial size >= {win}",
                             f"shape {tuple(x.shape)}", "use a smaller window or padding")
        xp = B.get_array_module(x)
        x_cl = to_cl(x)
        fill = -np.inf if self.MODE == "max" else 0.0
        xpad = _pad_cl(x_cl, pad, fill)
        ones = (1,) * nd
        offsets = list(itertools.product(*(range(k) for k in win)))
        # Window slices of one image block (the batch axis is sliced per block).
        slices = [(slice(None), *_window_slices(o, ones, st, out), slice(None)) for o in offsets]
        n, c = x_cl.shape[0], x_cl.shape[-1]
        y = xp.empty((n, *out, c), dtype=x_cl.dtype)
        code = np.uint8 if len(slices) < 256 else np.int32
        argmax = xp.empty(y.shape, dtype=code) if self.MODE == "max" and train else None

        def pool(a: int, b: int) -> None:
            src, yb = xpad[a:b], y[a:b]
            yb[...] = src[slices[0]]
            if argmax is not None:
                _first_argmax(src, slices, yb, argmax[a:b])
            elif self.MODE == "max":
                for sl in slices[1:]:
                    xp.maximum(yb, src[sl], out=yb)
            else:
                for sl in slices[1:]:
                    yb += src[sl]
                yb *= 1.0 / len(slices)

        per_image = xpad[:1].nbytes
        B.parallel_chunks(pool, n, item_bytes=per_image)     # image blocks in threads
        # Windows that tile the padded input exactly can assign gradients instead of adding.
        tiling = all(s == k and o * s == n + lo + hi
                     for s, k, o, n, (lo, hi) in zip(st, win, out, x.shape[2:], pad))

        def backprop(dy: Any, need_dx: bool = True) -> Any:
            self._check_dy(dy, (n, c, *out))
            if not need_dx:
                return None
            codes = argmax
            if codes is None and self.MODE == "max":     # forward ran in inference mode
                codes = xp.empty(y.shape, dtype=code)
                B.parallel_chunks(lambda a, b: _first_argmax(
                    xpad[a:b], slices, xpad[a:b][slices[0]].copy(), codes[a:b]), n,
                    item_bytes=per_image)
            dy_cl = to_cl(dy)
            alloc = xp.empty if tiling else xp.zeros
            dx = alloc(xpad.shape, dtype=dy_cl.dtype)

            def backward(a: int, b: int) -> None:
                dxb = dx[a:b]
                g = dy_cl[a:b] if self.MODE == "max" else dy_cl[a:b] * (1.0 / len(slices))
                for k, sl in enumerate(slices):
                    if self.MODE == "max" and tiling:
                        xp.multiply(g, codes[a:b] == k, out=dxb[sl])   # straight into place
                    elif tiling:
                        dxb[sl] = g
                    else:
                        dxb[sl] += g * (codes[a:b] == k) if self.MODE == "max" else g

            B.parallel_chunks(backward, n, item_bytes=per_image)
            if any(map(any, pad)):
                inner = tuple(slice(lo, lo + s) for s, (lo, _) in zip(x_cl.shape[1:-1], pad))
                dx = xp.ascontiguousarray(dx[(slice(None), *inner, slice(None))])
            return from_cl(dx)

        return from_cl(y), backprop

    def to_spec(self) -> dict:
        def js(v):
            return [js(i) for i in v] if isinstance(v, (tuple, list)) else v
        return {"type": type(self).__name__, "window": js(self.window),
                "stride": js(self.stride), "padding": js(self.padding), "ndim": self.ndim}

    def __repr__(self) -> str:
        return f"{type(self).__name__}(window={self.window}, stride={self.stride})"


def _first_argmax(xpad: Any, slices: list, y: Any, argmax: Any) -> None:
    """Running max into ``y`` (holding the first window offset's values) and, into ``argmax``,
    the index of the first offset that holds the maximum (as PyTorch routes gradients)."""
    xp = B.get_array_module(y)
    code = argmax.dtype.type
    argmax[...] = 0
    for k, sl in enumerate(slices[1:], 1):
        xs = xpad[sl]
        # k exceeds every earlier offset, so max(argmax, k * (xs > y)) updates in place.
        hit = (xs > y).view(np.uint8) if code is np.uint8 else (xs > y).astype(code)
        xp.maximum(argmax, hit * code(k), out=argmax)
        xp.maximum(y, xs, out=y)


@register
class MaxPool(_Pool):
    """MaxPool(window=2, stride=window, padding=0): maximum over each window.

        >>> MaxPool(2)(np.arange(16, dtype=np.float32).reshape(1, 1, 4, 4))[0, 0]
        array([[ 5.,  7.],
               [13., 15.]], dtype=float32)
    """

    MODE = "max"


@register
class MeanPool(_Pool):
    """MeanPool(window=2, stride=window, padding=0): mean over each window (padding counts)."""

    MODE = "mean"


@register
class GlobalPool(Layer):
    """GlobalPool("mean" | "max"): (N, C, *spatial) -> (N, C)."""

    def __init__(self, mode: str = "mean") -> None:
        super().__init__("identity")
        if mode not in ("mean", "max"):
            raise ValueError(f"GlobalPool mode must be 'mean' or 'max', got {mode!r}")
        self.mode = mode

    def forward(self, x: Any, train: bool = False):
        if getattr(x, "ndim", 0) < 3:
            raise self._fail("wrong input rank", "(N, C, *spatial)",
                             f"shape {getattr(x, 'shape', type(x).__name__)}")
        self._check_real(x)
        xp = B.get_array_module(x)
        x_cl = to_cl(x)
        n, c = x_cl.shape[0], x_cl.shape[-1]
        flat = x_cl.reshape(n, -1, c)
        positions = flat.shape[1]
        if self.mode == "mean":
            y = flat.mean(axis=1)
        else:
            arg = flat.argmax(axis=1)
            y = xp.take_along_axis(flat, arg[:, None, :], axis=1)[:, 0, :]

        def backprop(dy: Any, need_dx: bool = True) -> Any:
            self._check_dy(dy, y.shape)
            if not need_dx:
                return None
            if self.mode == "mean":
                dx = xp.broadcast_to((dy * (1.0 / positions))[:, None, :], flat.shape).copy()
            else:
                dx = xp.zeros(flat.shape, dtype=dy.dtype)
                xp.put_along_axis(dx, arg[:, None, :], dy[:, None, :], axis=1)
            return from_cl(dx.reshape(x_cl.shape))

        return y, backprop

    def to_spec(self) -> dict:
        return {"type": "GlobalPool", "mode": self.mode}

    def __repr__(self) -> str:
        return f"GlobalPool({self.mode!r})"


@register
class Flatten(Layer):
    """Flatten(): (N, *rest) -> (N, prod(rest)) in channels-first order, as PyTorch."""

    def forward(self, x: Any, train: bool = False):
        if getattr(x, "ndim", 0) < 2:
            raise self._fail("wrong input rank", "(N, ...) with N the batch",
                             f"shape {getattr(x, 'shape', type(x).__name__)}")
        self._check_real(x)
        shape = x.shape
        y = x.reshape(shape[0], -1)

        def backprop(dy: Any, need_dx: bool = True) -> Any:
            self._check_dy(dy, y.shape)
            return dy.reshape(shape) if need_dx else None

        return y, backprop

    def to_spec(self) -> dict:
        return {"type": "Flatten"}

    def __repr__(self) -> str:
        return "Flatten()"


@register
class Dropout(Layer):
    """Dropout(p): in training zero each element with probability p, scale the rest by 1/(1-p)."""

    def __init__(self, p: float = 0.5) -> None:
        super().__init__("identity")
        if not 0.0 <= p < 1.0:
            raise ValueError(f"Dropout probability must be in [0, 1), got {p}")
        self.p = float(p)

    def forward(self, x: Any, train: bool = False, rng: np.random.Generator | None = None):
        if not hasattr(x, "shape"):
            raise TypeError(f"{self!r}: expected an array, got {type(x).__name__}")
        self._check_real(x)
        identity = not train or self.p == 0.0
        if not identity:
            keep = B.rng(rng).random(x.shape, dtype=np.float32) >= self.p
            mask = B.get_array_module(x).asarray(keep, dtype=x.dtype) * (1.0 / (1.0 - self.p))
        y = x if identity else x * mask

        def backprop(dy: Any, need_dx: bool = True) -> Any:
            self._check_dy(dy, y.shape)
            if not need_dx:
                return None
            return dy if identity else dy * mask

        return y, backprop

    def to_spec(self) -> dict:
        return {"type": "Dropout", "p": self.p}

    def __repr__(self) -> str:
        return f"Dropout({self.p})"


def _tuples(v: Any) -> Any:
    """Nested lists and tuples as nested tuples; anything else as it is."""
    return tuple(_tuples(i) for i in v) if isinstance(v, (tuple, list)) else v
