"""Neuron value: how much each output neuron of a vertex is worth keeping.

The default is the layer's tracked value (the seed's ActivationContribution: an EWMA of
mean |activation * gradient| per output channel, updated in backprop once tracking is on) and,
where nothing was tracked, the norm of the neuron's weights. Vertices without parameters have no
value of their own; tied vertices share neurons, so their values add up in the selection.

    >>> track_values(graph)                  # then train; shrinking keeps the valuable neurons
    >>> neuron_value(graph.vertices[1]).shape
    (4,)
"""

from __future__ import annotations

from typing import Any

import numpy as np

from tinyevo import backend as B
from tinyevo.graph.vertex import Vertex

__all__ = ["neuron_value", "track_values"]


def neuron_value(v: Vertex) -> np.ndarray | None:
    """The value of each output neuron of ``v`` (a host array of ``v.nout_org``), or None when
    ``v`` has no parameters that produce its neurons."""
    layer = v.layer
    if layer is None or layer.nout is None or not layer.params:
        return None
    value = layer.default_neuron_value()
    return None if value is None else B.to_numpy(value)


def track_values(graph: Any, every: int = 1, momentum: float = 0.05) -> None:
    """Turn on neuron-value tracking for every layer of ``graph`` that has output neurons."""
    for layer in graph.layers():
        if layer.nout is not None and layer.params:
            layer.track_value(every=every, momentum=momentum)
