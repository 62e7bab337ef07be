"""Parameter spaces: uniform draws of hyperparameters, one value per dimension.

    >>> ps = ParSpace([2, 4, 6, 10]); ps(np.random.default_rng(0)) in (2, 4, 6, 10)
    True
    >>> ParSpace(["1", "2"], ["4", "5"]).ndim
    2
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from tinyevo import backend as B

__all__ = ["AbstractParSpace", "ParSpace", "ParSpace1D", "ParSpace2D", "CoupledParSpace",
           "as_parspace"]

Rng = np.random.Generator | None


class AbstractParSpace:
    """A space of ``ndim``-dimensional parameters: ``space(rng=None)`` draws one.

    A 1-D space returns a scalar, an N-D space a tuple of N values.
    """

    ndim: int = 1

    def __call__(self, rng: Rng = None) -> Any:
        raise NotImplementedError

    def values(self) -> tuple[tuple[Any, ...], ...]:
        """Every value each dimension can take (for validation and display)."""
        raise NotImplementedError


class ParSpace(AbstractParSpace):
    """ParSpace(*choices): independent uniform draws, one per dimension (the seed's ``ParSpace``).

    Each argument lists the values of one dimension (any sequence or ``range``; a lone scalar or
    string is a single value). Values keep their type, so spaces may hold strings, layer spaces
    or architecture spaces as well as numbers.

        >>> ps = ParSpace(range(1, 4)); ps(np.random.default_rng(1)) in (1, 2, 3)
        True
    """

    def __init__(self, *choices: Any) -> None:
        if not choices:
            raise ValueError("ParSpace needs at least one dimension of choices, got none")
        self.choices = tuple(_as_choices(c, f"ParSpace dimension {i}")
                             for i, c in enumerate(choices))
        self.ndim = len(self.choices)

    def __call__(self, rng: Rng = None) -> Any:
        gen = B.rng(rng)
        if self.ndim == 1:
            return _pick(self.choices[0], gen)
        return tuple(_pick(c, gen) for c in self.choices)

    def values(self) -> tuple[tuple[Any, ...], ...]:
        return self.choices

    def __repr__(self) -> str:
        return f"ParSpace({', '.join(_short(c) for c in self.choices)})"


def ParSpace1D(*values: Any) -> ParSpace:  # noqa: N802 - the seed's name
    """A 1-D space of the given values: ``ParSpace1D(a, b, c) == ParSpace([a, b, c])``."""
    return ParSpace(list(values))


def ParSpace2D(values: Any) -> ParSpace:  # noqa: N802 - the seed's name
    """A 2-D space drawing each dimension independently from ``values``."""
    return ParSpace(values, values)


class CoupledParSpace(AbstractParSpace):
    """CoupledParSpace(values, ndim): one draw repeated over ``ndim`` dimensions (square kernels).

        >>> CoupledParSpace([3, 5], 2)(np.random.default_rng(0)) in ((3, 3), (5, 5))
        True
    """

    def __init__(self, values: Any, ndim: int) -> None:
        if not isinstance(ndim, int) or ndim < 1:
            raise ValueError(f"CoupledParSpace ndim must be a positive int, got {ndim!r}")
        self.space = values if isinstance(values, AbstractParSpace) else ParSpace(values)
        if self.space.ndim != 1:
            raise ValueError(f"CoupledParSpace couples a 1-D space, got {self.space.ndim}-D")
        self.ndim = ndim

    def __call__(self, rng: Rng = None) -> Any:
        v = self.space(rng)
        return v if self.ndim == 1 else (v,) * self.ndim

    def values(self) -> tuple[tuple[Any, ...], ...]:
        return self.space.values() * self.ndim

    def __repr__(self) -> str:
        return f"CoupledParSpace({_short(self.space.values()[0])}, {self.ndim})"


def as_parspace(x: Any, ndim: int = 1, what: str = "parameter",
                coupled: bool = False) -> AbstractParSpace:
    """``x`` as a parameter space of ``ndim`` dimensions.

    A space is returned as it is (its ``ndim`` must be 1 or ``ndim``; a 1-D space is coupled over
    ``ndim``); values (a scalar or a sequence) make a space drawing each dimension independently,
    or one value for all dimensions with ``coupled=True``.
    """
    if isinstance(x, AbstractParSpace):
        if x.ndim == ndim:
            return x
        if x.ndim == 1:
            return CoupledParSpace(x, ndim)
        raise ValueError(f"{what}: expected a 1-D or {ndim}-D parameter space, got {x.ndim}-D")
    values = _as_choices(x, what)
    if coupled or ndim == 1:
        return CoupledParSpace(ParSpace(values), ndim) if ndim > 1 else ParSpace(values)
    return ParSpace(*([values] * ndim))


# ---------------------------------------------------------------------- helpers

def _as_choices(c: Any, what: str) -> tuple[Any, ...]:
    if isinstance(c, (str, bytes)) or not isinstance(c, (Sequence, range, np.ndarray, set,
                                                          frozenset)):
        return (c,)
    if isinstance(c, (set, frozenset)):
        c = sorted(c)
    values = tuple(c.tolist() if isinstance(c, np.ndarray) else c)
    if not values:
        raise ValueError(f"{what}: needs at least one value to choose from, got none")
    return values


def _pick(values: tuple[Any, ...], gen: np.random.Generator) -> Any:
    return values[0] if len(values) == 1 else values[int(gen.integers(len(values)))]


def _short(values: Any) -> str:
    values = tuple(values)
    if len(values) > 6 and all(isinstance(v, int) for v in values):
        return f"[{values[0]}..{values[-1]}] ({len(values)} values)"
    return repr(list(values))
