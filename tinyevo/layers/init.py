"""Weight initialisers by name: "glorot_uniform" (default, as Flux), "he", "identity", "zeros".

Draws are made on the host from the library generator (or ``rng``) in float32 and moved to the
current backend, so a seeded model has the same weights on NumPy and CuPy.

    >>> w = initialize("identity", (3, 3), dtype=np.float64); w[0, 0]
    1.0
"""

from __future__ import annotations

from typing import Any

import numpy as np

from tinyevo import backend as B

__all__ = ["initialize", "INITS"]

INITS = ("glorot_uniform", "he", "identity", "zeros")


def initialize(kind: str, shape: tuple[int, ...], rng: np.random.Generator | None = None,
               dtype: Any = None) -> Any:
    """A weight of ``shape`` = (out, in, *kernel) initialised by ``kind``."""
    if kind not in INITS:
        raise ValueError(f"unknown init {kind!r}: expected one of {INITS}")
    dtype = dtype or B.floatx()
    nout, nin = shape[0], shape[1]
    receptive = int(np.prod(shape[2:])) if len(shape) > 2 else 1
    fan_in, fan_out = nin * receptive, nout * receptive
    gen = B.rng(rng)
    if kind == "glorot_uniform":
        limit = np.sqrt(6.0 / max(fan_in + fan_out, 1))
        w = gen.random(shape, dtype=np.float32)           # float32 draws: no float64 detour
        w *= np.float32(2 * limit)
        w -= np.float32(limit)
    elif kind == "he":
        w = gen.standard_normal(shape, dtype=np.float32) * np.float32(np.sqrt(2.0 / max(fan_in, 1)))
    elif kind == "zeros":
        w = np.zeros(shape, dtype=np.float32)
    else:
        w = identity_weight(shape)
    return B.to_device(w, dtype=dtype)


def identity_weight(shape: tuple[int, ...]) -> np.ndarray:
    """Identity map: an (out, in) eye for Dense, a Dirac kernel (centre tap 1) for Conv.

    The centre tap is at (k - 1) // 2, where "same" padding puts the output's own input position
    (for odd k the middle; for even k the left of the two middles, since "same" pads less at the
    start), so a Conv with "same" padding and this weight is exactly the identity map.
    When out != in the extra outputs are zero (out > in) or the extra inputs are ignored
    (out < in), so the first min(out, in) neurons pass straight through.
    """
    w = np.zeros(shape, dtype=np.float32)
    n = min(shape[0], shape[1])
    centre = tuple((k - 1) // 2 for k in shape[2:])
    for i in range(n):
        w[(i, i, *centre)] = 1.0
    return w
