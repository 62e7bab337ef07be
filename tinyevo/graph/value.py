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

import contextlib
import contextvars
import weakref
from collections.abc import Iterator
from typing import Any

import numpy as np

from tinyevo import backend as B
from tinyevo.graph.surgery import connected
from tinyevo.graph.vertices import Vertex
from tinyevo.layers.base import is_shared

__all__ = ["mean_value", "mean_values", "neuron_value", "track_values", "value_cache"]

# The open value_cache(): {layer: (refs, value)}, weight-norm values valid while each ref still
# points at the layer's current parameter array (resizing replaces arrays). Keyed on the layers
# themselves, held only while the block runs.
_OPEN: contextvars.ContextVar[dict | None] = contextvars.ContextVar("tinyevo_value_cache",
                                                                   default=None)
# Weight-norm values of read-only parameter arrays (shared by copies, see CompGraph.copy), kept
# as long as the arrays live: nothing writes into a read-only array (whoever trains takes its
# own copy first), so a parent and all its copies compute the value once. Arrays cannot be dict
# keys, so their ids are: an entry goes the moment one of its arrays does (a weak reference's
# callback), so an id in a key always names a live array, and a hit is checked by identity.
# {(layer type, ids of the arrays): (refs, value, mean)}
_SHARED: dict[tuple, tuple[tuple, Any, float | None]] = {}


def neuron_value(v: Vertex) -> np.ndarray | None:
    """The value of each output neuron of ``v`` (a host array of ``v.nout_org``), or None when
    ``v`` has no parameters that produce its neurons."""
    layer = _valued_layer(v)
    return None if layer is None else _layer_value(layer, _shared_params(layer))


def _layer_value(layer: Any, shared: tuple | None) -> np.ndarray | None:
    """:func:`neuron_value` of a valued layer; ``shared`` is :func:`_shared_params` of it."""
    if shared is not None:
        return _shared_value(layer, shared)
    cache = _OPEN.get()
    if layer.neuron_value is None and cache is not None:
        arrays = tuple(layer.params.values())
        hit = cache.get(layer)
        if hit is not None and _alive(hit[0], arrays):
            return None if hit[1] is None else hit[1].copy()
        value = _weight_value(layer)
        try:
            cache[layer] = (tuple(weakref.ref(a) for a in arrays), value)
        except TypeError:                   # an array type without weak references
            return value
        return None if value is None else value.copy()
    return _weight_value(layer)


def _alive(refs: tuple, arrays: tuple) -> bool:
    return len(refs) == len(arrays) and all(r() is a for r, a in zip(refs, arrays))


def _weight_value(layer: Any) -> np.ndarray | None:
    value = layer.default_neuron_value()
    return None if value is None else B.to_numpy(value)


def _shared_value(layer: Any, arrays: tuple) -> np.ndarray | None:
    value = _shared_entry(layer, arrays)[1]
    return None if value is None else value.copy()


def _shared_entry(layer: Any, arrays: tuple) -> tuple:
    """(refs, value, mean) for the layer's read-only arrays, computed once while they live."""
    key = (type(layer), *map(id, arrays))
    hit = _SHARED.get(key)
    if hit is None or not _alive(hit[0], arrays):
        def drop(ref: Any, key: tuple = key) -> None:
            entry = _SHARED.get(key)
            if entry is not None and any(r is ref for r in entry[0]):    # not a newer one
                del _SHARED[key]
        value = _weight_value(layer)
        hit = _SHARED[key] = (tuple(weakref.ref(a, drop) for a in arrays), value, _mean(value))
    return hit


def mean_value(v: Vertex, value_fn: Any = None) -> float | None:
    """The mean of ``value_fn(v)`` (default :func:`neuron_value`), or None where ``v`` has no
    value or a non-finite one (what utility-weighted mutation probabilities compare; for the
    default, computed once for parameters shared by a parent and its copies, like the value)."""
    if value_fn is not None and value_fn is not neuron_value:
        return _mean(value_fn(v))
    layer = _valued_layer(v)
    if layer is None:
        return None
    shared = _shared_params(layer)
    if shared is not None:
        return _shared_entry(layer, shared)[2]
    return _mean(_layer_value(layer, None))


def mean_values(v: Vertex, value_fn: Any = None) -> tuple[dict[Vertex, float | None],
                                                          float | None]:
    """Each vertex's :func:`mean_value` in ``v``'s graph, and the mean of those that have one
    (what utility-weighted mutation probabilities compare a vertex's value with)."""
    means = {u: mean_value(u, value_fn) for u in connected(v)}
    known = [m for m in means.values() if m is not None]
    return means, (float(np.mean(known)) if known else None)


def _valued_layer(v: Vertex) -> Any:
    """``v``'s layer where it makes neurons of its own (parameters and an output size)."""
    layer = v.layer
    return layer if layer is not None and layer.nout is not None and layer.params else None


def _shared_params(layer: Any) -> tuple | None:
    """The layer's parameter arrays where its value is their weight norm and every one of them
    is shared read-only (so the value can be kept while they live), else None."""
    if layer.neuron_value is not None:
        return None
    arrays = tuple(layer.params.values())
    return arrays if all(is_shared(a) for a in arrays) else None


def _mean(value: Any) -> float | None:
    if value is None:
        return None
    u = np.asarray(B.to_numpy(value), dtype=np.float64)
    return float(u.mean()) if u.size and np.isfinite(u).all() else None


@contextlib.contextmanager
def value_cache() -> Iterator[None]:
    """Within the block, compute each layer's weight-norm value once (until its parameters are
    replaced). For operators that solve several selections on unchanging weights: nothing may
    write into parameters in place (train) while it is open.

        >>> with value_cache():
        ...     mutation(graph)
    """
    if _OPEN.get() is not None:              # nested: the outer block's cache serves
        yield
        return
    token = _OPEN.set({})
    try:
        yield
    finally:
        _OPEN.reset(token)


def track_values(graph: Any, every: int = 1, momentum: float = 0.05) -> None:
    """Turn on neuron-value tracking for every layer of ``graph`` that has output neurons."""
    for layer in graph.layers():
        if layer.nout is not None and layer.params:
            layer.track_value(every=every, momentum=momentum)
