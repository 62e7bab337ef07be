"""Channels-last memory behind channels-first views (see ``tinyevo.layers.base``)."""

from __future__ import annotations

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
