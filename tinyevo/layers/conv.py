"""Convolution, 1-D and 2-D, by im2col and one GEMM.

Activations are channels-last in memory (see ``tinyevo.layers.base``), so im2col is a loop over
the kernel offsets copying contiguous runs of channels, and col2im the same loop adding strided
slices back (chainer's CPU col2im): no scatter, the same code on NumPy and CuPy.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import numpy as np

from tinyevo import backend as B
from tinyevo.layers._layout import colsum, from_cl, to_cl
from tinyevo.layers.base import Layer, register
from tinyevo.layers.dense import _check_size
from tinyevo.layers.init import initialize

__all__ = ["Conv", "conv_output_size", "resolve_padding"]

# Bytes of unfolded columns per block (NumPy): bounds the column matrix of large inputs.
_CHUNK_BYTES = 32 << 20
# Input channels from which the input gradient is folded one kernel offset at a time (below,
# each offset's matrix product is too narrow for BLAS to run well).
_OFFSET_FOLD_MIN_CHANNELS = 16


@register
class Conv(Layer):
    """Conv(nin, nout, kernel_size, stride=1, padding=0 | "same", dilation=1, activation=...).

    ``kernel_size`` of length 1 or 2 (or an int with ``ndim``) selects 1-D or 2-D; input is
    (N, nin, L) or (N, nin, H, W); ``weight`` is (nout, nin, *kernel) as in PyTorch.

        >>> c = Conv(3, 8, (3, 3), padding="same"); c(np.ones((2, 3, 5, 5), np.float32)).shape
        (2, 8, 5, 5)
    """

    PARAM_AXES = {"weight": (0, 1), "bias": (0, None)}
    SIZE_TRAIT = "absorb"

    def __init__(self, nin: int, nout: int, kernel_size: int | Sequence[int] = 3,
                 stride: int | Sequence[int] = 1, padding: Any = 0,
                 dilation: int | Sequence[int] = 1, activation: str = "identity",
                 init: str = "glorot_uniform", bias: bool = True, ndim: int | None = None,
                 rng: np.random.Generator | None = None, dtype: Any = None) -> None:
        super().__init__(activation)
        _check_size("nin", nin)
        _check_size("nout", nout)
        if ndim is None:
            ndim = len(kernel_size) if isinstance(kernel_size, (tuple, list)) else 2
        if ndim not in (1, 2):
            raise ValueError(f"Conv supports 1-D and 2-D, got ndim={ndim}")
        self.ndim = ndim
        self.kernel_size = _tuple(kernel_size, ndim, "kernel_size")
        self.stride = _tuple(stride, ndim, "stride")
        self.dilation = _tuple(dilation, ndim, "dilation")
        self.padding = _check_padding(padding, ndim)
        w = initialize(init, (nout, nin, *self.kernel_size), rng=rng, dtype=dtype)
        self._set_params(weight=w)
        if bias:
            self._set_params(bias=B.get_array_module(w).zeros(nout, dtype=w.dtype))

    @property
    def nin(self) -> int:
        return int(self.params["weight"].shape[1])

    @property
    def nout(self) -> int:
        return int(self.params["weight"].shape[0])

    def output_shape(self, spatial: Sequence[int]) -> tuple[int, ...]:
        """Spatial output size for a spatial input size."""
        pads = resolve_padding(self.padding, spatial, self.kernel_size, self.stride, self.dilation)
        return tuple(conv_output_size(n, k, s, d, p)
                     for n, k, s, d, p in zip(spatial, self.kernel_size, self.stride,
                                              self.dilation, pads))

    def forward(self, x: Any, train: bool = False):
        nd = self.ndim
        kind = "(N, C, L)" if nd == 1 else "(N, C, H, W)"
        x = self._check_channels(x, nd + 2, kind)
        spatial = tuple(x.shape[2:])
        pads = resolve_padding(self.padding, spatial, self.kernel_size, self.stride,
                               self.dilation)
        out = self.output_shape(spatial)
        if min(out) < 1:
            raise self._fail("input too small for the kernel",
                             f"spatial size of at least the dilated kernel {self.kernel_size}",
                             f"shape {tuple(x.shape)}", "use padding or a smaller kernel")
        xp = B.get_array_module(x)
        n, cin, cout = x.shape[0], self.nin, self.nout
        geometry = (pads, self.kernel_size, self.stride, self.dilation, out)
        positions = int(np.prod(out))
        pointwise = (int(np.prod(self.kernel_size)) == 1 and all(s == 1 for s in self.stride)
                     and not any(map(any, pads)))
        if pointwise:
            x_in = to_cl(x)
            unfold = fold = None
            wmat = self.params["weight"].reshape(cout, cin).T
        elif x.flags.c_contiguous:
            # Data in channels-first memory (a graph input, typically) is unfolded channels-
            # first: its contiguous runs are image rows, not the (maybe 1 or 3) channels.
            x_in, unfold, fold = x, _im2col_cf, _col2im_cf
            wmat = self.params["weight"].reshape(cout, -1).T           # (K, Cout), K = (C, *k)
        else:
            x_in, unfold, fold = to_cl(x), _im2col, _col2im
            wmat = self._wmat()                                        # (K, Cout), K = (*k, C)
        # Unfold in blocks of images so the column matrix stays bounded for large inputs; the
        # blocks are kept for the backward pass when training (unfolded again otherwise).
        per = n if xp is not np else max(1, _CHUNK_BYTES // (wmat.size // cout * positions
                                                             * x.dtype.itemsize))
        chunks = [(a, min(a + per, n)) for a in range(0, n, per)]

        def columns(a: int, b: int) -> Any:
            return x_in[a:b].reshape(-1, cin) if pointwise else unfold(x_in[a:b], *geometry)

        z = xp.empty((n * positions, cout), dtype=x.dtype)
        kept = []
        for a, b in chunks:
            col = columns(a, b)
            xp.matmul(col, wmat, out=z[a * positions:b * positions])
            if train:
                kept.append(col)
        y, zkeep = self._bias_activate(z)
        y_cl = y.reshape(n, *out, cout)
        yshape = (n, cout, *out)

        def backprop(dy: Any, need_dx: bool = True) -> Any:
            self._check_dy(dy, yshape)
            dy_cl = to_cl(dy)
            dz = self._activation_backward_blocks(dy_cl.reshape(-1, cout), zkeep, y)
            self._track(y_cl, dy_cl)
            if "bias" in self.params:
                self.grads["bias"] += colsum(dz)
            dwmat = None
            parts = []
            for i, (a, b) in enumerate(chunks):
                rows = slice(a * positions, b * positions)
                col = kept[i] if kept else columns(a, b)
                # For a C-contiguous col, (dz^T col)^T: the same products as col^T dz, bit
                # for bit on OpenBLAS, and faster (3.9 against 4.2-5.0 ms, 16384 x 288 x 64).
                dw = (dz[rows].T @ col).T if col.flags.c_contiguous else col.T @ dz[rows]
                dwmat = dw if dwmat is None else dwmat + dw
                if not need_dx:
                    continue
                if fold is _col2im and xp is np and _folds_by_offset((b - a) * positions, cin,
                                                                     cout):
                    parts.append(_fold_by_offset(dz[rows], wmat, x_in[a:b].shape, *geometry))
                    continue
                # Channels-first folding reads (K, M) blocks: produce that layout directly.
                dcol = ((wmat @ dz[rows].T).T if fold is _col2im_cf
                        else dz[rows] @ wmat.T)
                parts.append(dcol.reshape(x_in[a:b].shape) if pointwise
                             else fold(dcol, x_in[a:b].shape, *geometry, xp))
            if unfold is _im2col:
                self.grads["weight"] += _wmat_to_weight(dwmat, cin, self.kernel_size)
            else:
                self.grads["weight"] += dwmat.T.reshape(self.params["weight"].shape)
            if not need_dx:
                return None
            dx = parts[0] if len(parts) == 1 else xp.concatenate(parts)
            return dx if fold is _col2im_cf else from_cl(dx)

        return from_cl(y_cl), backprop

    def _wmat(self) -> Any:
        """weight (Cout, Cin, *k) as the (prod(k) * Cin, Cout) matrix matching the im2col order."""
        w = self.params["weight"]
        xp = B.get_array_module(w)
        axes = (*range(2, w.ndim), 1, 0)
        return xp.ascontiguousarray(w.transpose(axes)).reshape(-1, w.shape[0])

    def to_spec(self) -> dict:
        return {"type": "Conv", "nin": self.nin, "nout": self.nout,
                "kernel_size": list(self.kernel_size), "stride": list(self.stride),
                "padding": self.padding if isinstance(self.padding, str)
                else [list(p) for p in self.padding],
                "dilation": list(self.dilation), "activation": self.activation,
                "bias": "bias" in self.params, "ndim": self.ndim}

    def __repr__(self) -> str:
        k = "x".join(map(str, self.kernel_size))
        extra = "" if all(s == 1 for s in self.stride) else f", stride={self.stride}"
        return f"Conv({k}, {self.nin} => {self.nout}, {self.activation}{extra})"


# --------------------------------------------------------------------------- helpers

def conv_output_size(n: int, k: int, s: int, d: int, pad: tuple[int, int]) -> int:
    """Output length of a convolution or pooling window over length ``n``."""
    return (n + pad[0] + pad[1] - d * (k - 1) - 1) // s + 1


def resolve_padding(padding: Any, spatial: Sequence[int], kernel: Sequence[int],
                    stride: Sequence[int], dilation: Sequence[int]) -> tuple:
    """Explicit (lo, hi) padding per spatial dim; "same" gives ceil(n / stride) outputs."""
    if padding != "same":
        return padding
    pads = []
    for n, k, s, d in zip(spatial, kernel, stride, dilation):
        out = -(-n // s)
        total = max((out - 1) * s + d * (k - 1) + 1 - n, 0)
        pads.append((total // 2, total - total // 2))
    return tuple(pads)


def _tuple(v: Any, nd: int, what: str) -> tuple[int, ...]:
    t = tuple(v) if isinstance(v, (tuple, list)) else (v,) * nd
    if len(t) != nd or not all(isinstance(i, (int, np.integer)) and i >= 1 for i in t):
        raise ValueError(f"{what} must be a positive int or {nd} positive ints, got {v!r}")
    return tuple(int(i) for i in t)


def _check_padding(padding: Any, nd: int) -> Any:
    if padding == "same":
        return "same"
    if isinstance(padding, (int, np.integer)):
        padding = (int(padding),) * nd
    try:
        pads = tuple((p, p) if isinstance(p, (int, np.integer)) else tuple(p) for p in padding)
    except TypeError:
        pads = ()
    if len(pads) != nd or not all(len(p) == 2 and min(p) >= 0 for p in pads):
        raise ValueError(f"padding must be 'same', an int, {nd} ints or {nd} (lo, hi) pairs, "
                         f"got {padding!r}")
    return tuple((int(a), int(b)) for a, b in pads)


def _pad_cl(x_cl: Any, pads: Sequence[tuple[int, int]], value: float = 0.0) -> Any:
    """Pad the spatial axes of channels-last (N, *S, C) data."""
    if not any(map(any, pads)):
        return x_cl
    xp = B.get_array_module(x_cl)
    shape = (x_cl.shape[0], *(s + lo + hi for s, (lo, hi) in zip(x_cl.shape[1:-1], pads)),
             x_cl.shape[-1])
    out = xp.full(shape, value, dtype=x_cl.dtype)
    inner = tuple(slice(lo, lo + s) for s, (lo, _) in zip(x_cl.shape[1:-1], pads))
    out[(slice(None), *inner, slice(None))] = x_cl
    return out


def _window_slices(offset: Sequence[int], dilation: Sequence[int], stride: Sequence[int],
                   out: Sequence[int]) -> tuple:
    return tuple(slice(o * d, o * d + (n - 1) * s + 1, s)
                 for o, d, s, n in zip(offset, dilation, stride, out))


def _im2col(x_cl: Any, pads, kernel, stride, dilation, out) -> Any:
    """(N, *S, C) -> (N * prod(out), prod(kernel) * C), columns ordered (*kernel, C).

    Where the last kernel axis is not dilated, its offsets read neighbouring pixels, so each
    window row (last-axis offsets x channels) is one contiguous run: a strided view of the
    padded input with that run as its last axis copies in one call, in runs kw times longer
    than per-offset copies of C channels (measured 2.5x faster for 3x3, C = 32).
    """
    xp = B.get_array_module(x_cl)
    xpad = _pad_cl(x_cl, pads)
    n, c = x_cl.shape[0], x_cl.shape[-1]
    nd = len(kernel)
    positions = int(np.prod(out))
    if dilation[-1] == 1 and xp is np and xpad.flags.c_contiguous:
        s = xpad.strides
        # (N, *out, *kernel[:-1], kernel[-1] * C) windows, the last axis contiguous.
        view = np.lib.stride_tricks.as_strided(
            xpad, shape=(n, *out, *kernel[:-1], kernel[-1] * c),
            strides=(s[0], *(si * st for si, st in zip(s[1:-1], stride)),
                     *(si * d for si, d in zip(s[1:-2], dilation[:-1])), s[-1]),
            writeable=False)
        col = np.empty(view.shape, dtype=x_cl.dtype)
        B.parallel_chunks(lambda a, b: np.copyto(col[a:b], view[a:b]), n,
                          item_bytes=col[:1].nbytes)
        return col.reshape(n * positions, -1)
    col = xp.empty((n, *out, *kernel, c), dtype=x_cl.dtype)
    offsets = list(itertools.product(*(range(k) for k in kernel)))

    def unfold(a: int, b: int) -> None:
        for offset in offsets:
            src = xpad[(slice(a, b), *_window_slices(offset, dilation, stride, out), slice(None))]
            col[(slice(a, b),) + (slice(None),) * nd + offset] = src

    B.parallel_chunks(unfold, n, item_bytes=col[:1].nbytes)
    return col.reshape(n * positions, -1)


def _col2im(dcol: Any, x_shape, pads, kernel, stride, dilation, out, xp) -> Any:
    """Adjoint of :func:`_im2col`: add each kernel offset's columns back into the input."""
    n, c = x_shape[0], x_shape[-1]
    spatial = x_shape[1:-1]
    padded = tuple(s + lo + hi for s, (lo, hi) in zip(spatial, pads))
    dx = xp.zeros((n, *padded, c), dtype=dcol.dtype)
    dcol = dcol.reshape(n, *out, *kernel, c)
    nd = len(kernel)
    offsets = list(itertools.product(*(range(k) for k in kernel)))

    def fold(a: int, b: int) -> None:
        for offset in offsets:
            dst = (slice(a, b), *_window_slices(offset, dilation, stride, out), slice(None))
            dx[dst] += dcol[(slice(a, b),) + (slice(None),) * nd + offset]

    B.parallel_chunks(fold, n, item_bytes=dcol[:1].nbytes)
    if any(map(any, pads)):
        inner = tuple(slice(lo, lo + s) for s, (lo, _) in zip(spatial, pads))
        dx = xp.ascontiguousarray(dx[(slice(None), *inner, slice(None))])
    return dx


def _fold_by_offset(dz: np.ndarray, wmat: np.ndarray, x_shape, pads, kernel, stride, dilation,
                    out) -> np.ndarray:
    """:func:`_col2im` of ``dz @ wmat.T``, with the column gradients laid out offset-major: one
    (M, Cout) x (Cout, C) product per kernel offset, then the additions into the input gradient.

    Each offset's columns are contiguous, so the additions run along whole image rows
    (out_w * C elements) instead of C-element pieces of the (M, K) column matrix, and straight
    into the unpadded gradient (the part of a window over the padding is skipped). Every
    element of dx receives the same additions in the same order as through :func:`_col2im`; on
    OpenBLAS each product has the same bits in either shape where it is too large for the
    small-matrix kernel (see :func:`_folds_by_offset`), so the result is identical.
    """
    n, c = x_shape[0], x_shape[-1]
    dx = np.zeros(x_shape, dtype=dz.dtype)
    offsets = list(itertools.product(*(range(k) for k in kernel)))
    cols = np.empty((len(offsets), dz.shape[0], c), dtype=dz.dtype)
    spans = [[_inside(*a) for a in zip(offset, dilation, stride, out, pads, x_shape[1:-1])]
             for offset in offsets]
    used = [k for k, span in enumerate(spans) if None not in span]  # others lie in the padding
    for k in used:
        # (a contiguous operand: NumPy's matmul with ``out`` bypasses BLAS for strided ones)
        np.matmul(dz, np.ascontiguousarray(wmat[k * c:(k + 1) * c].T), out=cols[k])
    cols = cols.reshape(len(offsets), n, *out, c)

    def fold(a: int, b: int) -> None:
        for k in used:
            dst = (slice(a, b), *(d for d, _ in spans[k]), slice(None))
            dx[dst] += cols[(k, slice(a, b), *(s for _, s in spans[k]), slice(None))]

    B.parallel_chunks(fold, n, item_bytes=cols[0, :1].nbytes * len(used))
    return dx


def _folds_by_offset(m: int, cin: int, cout: int) -> bool:
    """Whether :func:`_fold_by_offset` folds the input gradient of a convolution with ``m``
    output positions: on one thread (as in each worker process: 6-7 % off the 3x32x32 and
    1x28x28 reference steps; on two threads, where the strided additions of :func:`_col2im` are
    split over the cores, the narrower products cost as much as they save), where the
    per-offset products are wide enough for BLAS to run well, and large enough for OpenBLAS's
    regular kernel (its small-matrix kernel, below 100^3 multiply-adds, sums in another order,
    and the result would differ from :func:`_col2im`'s in the last bits)."""
    return (B.num_threads() == 1 and cin >= _OFFSET_FOLD_MIN_CHANNELS
            and m * cin * cout > 100 ** 3)


def _inside(offset: int, dilation: int, stride: int, nout: int, pad: tuple[int, int],
            size: int) -> tuple[slice, slice] | None:
    """(input slice, output slice) of the outputs whose input position ``p * stride + offset *
    dilation - pad_lo`` at this kernel offset lies inside the unpadded input; None if none."""
    shift = offset * dilation - pad[0]
    first = max(0, -(shift // stride))                 # ceil(-shift / stride)
    last = min(nout - 1, (size - 1 - shift) // stride)
    if first > last:
        return None
    return (slice(first * stride + shift, last * stride + shift + 1, stride),
            slice(first, last + 1))


def _pad_cf(x: Any, pads: Sequence[tuple[int, int]]) -> Any:
    """Pad the spatial axes of channels-first (N, C, *S) data with zeros."""
    if not any(map(any, pads)):
        return x
    xp = B.get_array_module(x)
    shape = (*x.shape[:2], *(s + lo + hi for s, (lo, hi) in zip(x.shape[2:], pads)))
    out = xp.zeros(shape, dtype=x.dtype)
    out[(slice(None), slice(None), *(slice(lo, lo + s) for s, (lo, _) in
                                     zip(x.shape[2:], pads)))] = x
    return out


def _im2col_cf(x: Any, pads, kernel, stride, dilation, out) -> Any:
    """(N, C, *S) -> (N * prod(out), prod(kernel) * C) as the transpose of a C-contiguous
    (K, M) block, columns ordered (C, *kernel): copies run along image rows."""
    xp = B.get_array_module(x)
    xpad = _pad_cf(x, pads)
    n, c = x.shape[:2]
    col = xp.empty((c, *kernel, n, *out), dtype=x.dtype)
    offsets = list(itertools.product(*(range(k) for k in kernel)))

    def unfold(a: int, b: int) -> None:
        for offset in offsets:
            src = xpad[(slice(a, b), slice(None),
                        *_window_slices(offset, dilation, stride, out))]
            col[(slice(None), *offset, slice(a, b))] = src.swapaxes(0, 1)

    B.parallel_chunks(unfold, n, item_bytes=col.nbytes // max(n, 1))
    return col.reshape(c * int(np.prod(kernel)), n * int(np.prod(out))).T


def _col2im_cf(dcol: Any, x_shape, pads, kernel, stride, dilation, out, xp) -> Any:
    """Adjoint of :func:`_im2col_cf`: (M, K) column gradients -> (N, C, *S) input gradient."""
    n, c = x_shape[:2]
    spatial = x_shape[2:]
    padded = tuple(s + lo + hi for s, (lo, hi) in zip(spatial, pads))
    dx = xp.zeros((n, c, *padded), dtype=dcol.dtype)
    # (M, K) -> (K, M) -> (C, *kernel, N, *out); a copy, unless dcol came transposed already.
    dcol = xp.ascontiguousarray(dcol.T).reshape(c, *kernel, n, *out)
    offsets = list(itertools.product(*(range(k) for k in kernel)))

    def fold(a: int, b: int) -> None:
        for offset in offsets:
            dst = (slice(a, b), slice(None), *_window_slices(offset, dilation, stride, out))
            dx[dst] += dcol[(slice(None), *offset, slice(a, b))].swapaxes(0, 1)

    B.parallel_chunks(fold, n, item_bytes=dcol.nbytes // max(n, 1))
    if any(map(any, pads)):
        dx = xp.ascontiguousarray(
            dx[(slice(None), slice(None), *(slice(lo, lo + s) for s, (lo, _) in
                                            zip(spatial, pads)))])
    return dx


def _wmat_to_weight(dw: Any, cin: int, kernel: Sequence[int]) -> Any:
    """Inverse of ``Conv._wmat`` for a gradient: (prod(k) * Cin, Cout) -> (Cout, Cin, *k)."""
    xp = B.get_array_module(dw)
    nd = len(kernel)
    g = dw.reshape(*kernel, cin, dw.shape[1])
    return xp.ascontiguousarray(g.transpose(nd + 1, nd, *range(nd)))
