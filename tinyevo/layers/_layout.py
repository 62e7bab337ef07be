"""Channels-last memory behind channels-first views (see ``tinyevo.layers.base``)."""

from __future__ import annotations

import math
from typing import Any

from tinyevo.backend import get_array_module


def to_cl(x: Any) -> Any:
    """(N, C, *S) -> C-contiguous (N, *S, C); free when ``x`` is a view made by :func:`from_cl`."""
    xp = get_array_module(x)
    return xp.ascontiguousarray(xp.moveaxis(x, 1, -1))


def from_cl(y: Any) -> Any:
    """(N, *S, C) -> (N, C, *S) as a view, no copy."""
    return get_array_module(y).moveaxis(y, -1, 1)


def colsum(m: Any) -> Any:
    """Column sums of a tall (M, C) matrix as a BLAS matrix-vector product (several times faster
    than ``m.sum(0)`` on NumPy for large M)."""
    xp = get_array_module(m)
    return xp.ones(m.shape[0], dtype=m.dtype) @ m


def tiled(m: Any, *vectors: Any) -> tuple:
    """View a tall (M, C) matrix as (M / r, r * C) and tile per-channel vectors r times.

    Broadcasting a length-C vector over rows runs NumPy's inner loop C elements at a time;
    the tiled view gives it runs of ~1000, which measured ~1.6x faster for C = 32. Returns the
    view followed by the tiled vectors; r = 1 (no change) where M has no suitable divisor.
    """
    rows, c = m.shape
    r = math.gcd(rows, max(1, 1024 // max(c, 1)))
    xp = get_array_module(m)
    if r == 1:
        return (m, *vectors)
    return (m.reshape(rows // r, r * c), *(xp.tile(v, r) for v in vectors))


def untile(v: Any, c: int) -> Any:
    """Sum a tiled per-column vector of length r * C back to length C."""
    return v.reshape(-1, c).sum(axis=0)
