"""A plain chain of layers with the layer contract: the smallest model there is."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from tinyevo.layers.base import Layer, layer_from_spec

__all__ = ["Sequential"]


class Sequential:
    """Sequential(*layers): ``y = model(x)``, ``y, backprop = model.forward(x, train=True)``;
    ``model.layers()`` for the optimisers. ``backprop(dy, need_dx=False)`` skips the first
    layer's input gradient (training: nothing upstream needs it).

        >>> from tinyevo.layers import Dense
        >>> model = Sequential(Dense(3, 4, "relu"), Dense(4, 2)); len(model)
        2
    """

    def __init__(self, *layers: Layer) -> None:
        for i, layer in enumerate(layers):
            if not isinstance(layer, Layer):
                raise TypeError(f"Sequential takes layers, got {type(layer).__name__} at "
                                f"position {i}")
        self._layers = list(layers)

    def __call__(self, x: Any) -> Any:
        """The inference output on ``x``."""
        return self.forward(x, train=False)[0]

    def forward(self, x: Any, train: bool = False) -> tuple[Any, Callable]:
        """``(y, backprop)``: each layer's forward in turn, and their closures in reverse."""
        backs = []
        for layer in self._layers:
            x, back = layer.forward(x, train=train)
            backs.append(back)

        def backprop(dy: Any, need_dx: bool = True) -> Any:
            for i, back in enumerate(reversed(backs)):
                dy = back(dy, need_dx=need_dx or i < len(backs) - 1)
            return dy

        return x, backprop

    def layers(self) -> Iterator[Layer]:
        return iter(self._layers)

    def __len__(self) -> int:
        return len(self._layers)

    def __getitem__(self, i: int) -> Layer:
        return self._layers[i]

    def parameter_count(self) -> int:
        return sum(layer.parameter_count() for layer in self._layers)

    def to_spec(self) -> dict:
        return {"type": "Sequential", "layers": [layer.to_spec() for layer in self._layers]}

    @classmethod
    def from_spec(cls, spec: dict, arrays: list[dict] | None = None) -> Sequential:
        arrays = arrays or [None] * len(spec["layers"])
        return cls(*(layer_from_spec(s, a) for s, a in zip(spec["layers"], arrays)))

    def __repr__(self) -> str:
        return "Sequential(" + ", ".join(map(repr, self._layers)) + ")"
