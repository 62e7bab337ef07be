"""Warm start: ``fit(..., initial=[model, ...])`` starts the search from the user's own models.

Each item is a :class:`~tinyevo.graph.CompGraph`, the folder of a model saved with
:func:`~tinyevo.app.save_model`, or a candidate holding a graph. :func:`initial_models` loads
and checks them against the data before any training (input kind and width, output width),
and copies them: the search never changes the user's objects. Their copies are the first
members of generation 1, each with its weights as given, the rest drawn from the search space.
A copy's output vertex is shielded from mutation where it is not already: its width is the
data's (classes or targets).

    >>> population = te.fit(x, y, initial=[my_cnn], time_limit=600)  # doctest: +SKIP

A run records the models it started from (:func:`fingerprint`), so that resuming with other
initial models is refused, and resuming with the same ones (the command run again) goes on.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Sequence
from typing import Any

import numpy as np

from tinyevo import backend as B
from tinyevo.app.model_io import load_model
from tinyevo.graph import CompGraph
from tinyevo.graph.vertices import name_counter, set_name_counter
from tinyevo.search import set_shield

__all__ = ["initial_models", "fingerprint", "continue_names_after"]


def initial_models(initial: Any, x: np.ndarray, kind: str, nout: int) -> list[CompGraph]:
    """The graphs of ``initial`` (copies), each checked to take samples like ``x`` (of data
    ``kind``) and give ``nout`` outputs; a ValueError naming the model and the mismatch."""
    if initial is None:
        return []
    items = [initial] if isinstance(initial, (CompGraph, str, os.PathLike)) else initial
    if not isinstance(items, Sequence) or isinstance(items, str):
        raise ValueError(f"fit: initial= must be a list of models (CompGraph objects or folders "
                         f"written by save_model), got {type(initial).__name__}")
    graphs = [_checked(_graph(item, i), i, x, kind, nout).copy() for i, item in enumerate(items)]
    for g in graphs:            # the search must not resize the output: the data fixes it
        if not g.outputs[0].shielded:
            set_shield(g.outputs[0], True)
    return graphs


def _graph(item: Any, i: int) -> CompGraph:
    if isinstance(item, (str, os.PathLike)):
        try:
            item = load_model(item)
        except (OSError, ValueError) as err:
            raise ValueError(f"fit: initial[{i}]: cannot load a model from {os.fspath(item)!r}"
                             f" ({err})") from err
    graph = item.graph() if callable(getattr(item, "graph", None)) else item
    if not isinstance(graph, CompGraph):
        raise ValueError(f"fit: initial[{i}] must be a CompGraph, a folder written by "
                         f"save_model or a candidate holding a graph, got "
                         f"{type(item).__name__} (a Sequential: wrap it in a graph, see "
                         "docs/graph.md)")
    if len(graph.inputs) != 1 or len(graph.outputs) != 1:
        raise ValueError(f"fit: initial[{i}] has {len(graph.inputs)} inputs and "
                         f"{len(graph.outputs)} outputs; fit trains models of one input and "
                         "one output")
    return graph


def _checked(graph: CompGraph, i: int, x: np.ndarray, kind: str, nout: int) -> CompGraph:
    """``graph`` where it takes ``x``'s samples and gives ``nout`` outputs."""
    inp = graph.inputs[0]
    if inp.kind != kind or inp.nout != x.shape[1]:
        raise ValueError(f"fit: initial[{i}] takes {inp.kind} data with {inp.nout} "
                         f"features/channels, but the data is {kind} of shape "
                         f"{tuple(x.shape[1:])}; build the model for the data's shape")
    try:
        with np.errstate(all="ignore"):
            out = B.to_numpy(graph(B.to_device(x[:2])))
    except (ValueError, IndexError) as err:
        raise ValueError(f"fit: initial[{i}] cannot run on samples of shape "
                         f"{tuple(x.shape[1:])}: {err}") from err
    if out.ndim != 2 or out.shape[1] != nout:
        raise ValueError(f"fit: initial[{i}] gives outputs of shape {tuple(out.shape[1:])} a "
                         f"sample; the data needs ({nout},) (one per class, or per regression "
                         "target); change the model's last layer")
    return graph


def fingerprint(graphs: Sequence[CompGraph]) -> list[str]:
    """A SHA-256 of each graph's structure and arrays (what a checkpoint records)."""
    prints = []
    for g in graphs:
        h = hashlib.sha256(json.dumps(g.to_spec(), sort_keys=True).encode())
        for key, a in sorted(g.arrays().items()):
            h.update(key.encode())
            h.update(np.ascontiguousarray(B.to_numpy(a)).tobytes())
        prints.append(h.hexdigest())
    return prints


def continue_names_after(graphs: Sequence[CompGraph]) -> None:
    """Make automatic vertex names start past every ``name_N`` in ``graphs``, so that the
    vertices the search adds to a copy of them never take one of their names."""
    numbers = [int(m.group(1)) for g in graphs for v in g.vertices
               if (m := re.search(r"_(\d+)$", v.name))]
    if numbers and max(numbers) + 1 > name_counter():
        set_name_counter(max(numbers) + 1)
