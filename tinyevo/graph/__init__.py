"""The mutable graph: vertices with consistent sizes, weight-keeping edits, neuron selection.

    >>> import tinyevo as te
    >>> inp = te.input_vertex("in", 3, "dense")
    >>> h = te.vertex(te.layers.Dense(3, 4, "relu"), inp, name="h")
    >>> graph = te.CompGraph(inp, te.vertex(te.layers.Dense(4, 2), h))
    >>> te.change_nout(graph, {h: +2}), h.nout
    (True, 6)

See docs/graph.md for a tour.
"""

from tinyevo.graph.compgraph import CompGraph, check_sizes, copy, copy_layer
from tinyevo.graph.edit import (
    add_edge,
    change_kernel_size,
    change_nout,
    insert_after,
    remove_edge,
    remove_vertex,
    select_neurons,
    set_activation,
)
from tinyevo.graph.segment import (
    Segment,
    bypass,
    implant,
    regraph,
    separable_starts,
    shape_change,
    swap_segments,
)
from tinyevo.graph.selection import Pin, Selection, component, solve_selection
from tinyevo.graph.surgery import Snapshot, apply_selection, connected
from tinyevo.graph.value import neuron_value, track_values, value_cache
from tinyevo.graph.vertex import (
    KINDS,
    TRAITS,
    Vertex,
    add,
    concat,
    input_vertex,
    layer_output_kind,
    mul,
    vertex,
)

__all__ = [
    "Vertex", "input_vertex", "vertex", "concat", "add", "mul", "KINDS", "TRAITS",
    "layer_output_kind", "CompGraph", "copy", "copy_layer", "check_sizes",
    "change_nout", "select_neurons", "insert_after", "remove_vertex", "add_edge",
    "remove_edge", "change_kernel_size", "set_activation", "neuron_value", "track_values",
    "value_cache",
    "solve_selection", "Selection", "Pin", "component", "apply_selection", "connected", "Snapshot",
]
__all__ += ["Segment", "separable_starts", "implant", "bypass", "swap_segments", "regraph",
            "shape_change"]
