"""Fully connected layer: ``y = activation(x @ weight.T + bias)`` on (N, nin) input."""

from __future__ import annotations

from typing import Any

import numpy as np

from tinyevo import backend as B
from tinyevo.layers._layout import colsum
from tinyevo.layers.base import Layer, register
from tinyevo.layers.init import initialize

__all__ = ["Dense"]


@register
class Dense(Layer):
    """Dense(nin, nout, activation="identity", init="glorot_uniform").

        >>> layer = Dense(3, 2, "relu"); layer(np.ones((4, 3), np.float32)).shape
        (4, 2)
    """

    PARAM_AXES = {"weight": (0, 1), "bias": (0, None)}
    SIZE_TRAIT = "absorb"

    def __init__(self, nin: int, nout: int, activation: str = "identity",
                 init: str = "glorot_uniform", bias: bool = True,
                 rng: np.random.Generator | None = None, dtype: Any = None) -> None:
        super().__init__(activation)
        _check_size("nin", nin)
        _check_size("nout", nout)
        w = initialize(init, (nout, nin), rng=rng, dtype=dtype)
        xp = B.get_array_module(w)
        self._set_params(weight=w)
        if bias:
            self._set_params(bias=xp.zeros(nout, dtype=w.dtype))

    @property
    def nin(self) -> int:
        return int(self.params["weight"].shape[1])

    @property
    def nout(self) -> int:
        return int(self.params["weight"].shape[0])

    def forward(self, x: Any, train: bool = False):
        x = self._check_channels(x, 2, "(N, features)")
        w = self.params["weight"]
        z = x @ w.T
        if "bias" in self.params:
            z += self.params["bias"]
        y, zkeep = self._activate(z)

        def backprop(dy: Any, need_dx: bool = True) -> Any:
            self._check_dy(dy, y.shape)
            dz = self._activation_backward(dy, zkeep, y)
            self._track(y, dy)
            self.grads["weight"] += dz.T @ x
            if "bias" in self.params:
                self.grads["bias"] += colsum(dz)
            return dz @ w if need_dx else None

        return y, backprop

    def to_spec(self) -> dict:
        return {"type": "Dense", "nin": self.nin, "nout": self.nout,
                "activation": self.activation, "bias": "bias" in self.params}

    def __repr__(self) -> str:
        return f"Dense({self.nin} => {self.nout}, {self.activation})"


def _check_size(name: str, n: Any) -> None:
    if not isinstance(n, (int, np.integer)) or isinstance(n, bool) or n < 1:
        raise ValueError(f"{name} must be a positive integer, got {n!r}")
