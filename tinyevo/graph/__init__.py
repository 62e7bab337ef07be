"""The mutable graph: vertices with consistent sizes, weight-keeping edits, neuron selection.

Every structural operation lives here: building (:mod:`.vertex`), running and copying
(:mod:`.compgraph`), feature-map shapes (:mod:`.shapes`), the edits (:mod:`.edit`), resizing
(:mod:`.resizing`: the neuron-selection program of :mod:`.selection`, applied by the parameter
surgery of :mod:`.surgery`) and neuron values (:mod:`.value`).

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
    bypass,
    change_kernel_size,
    change_nout,
    insert_after,
    insert_merge_before,
    remove_edge,
    remove_vertex,
    select_neurons,
    set_activation,
)
from tinyevo.graph.resizing import align, apply_pending, flush_pending, resize, resize_fresh
from tinyevo.graph.segment import (
    SWAP_PROBES,
    Segment,
    implant,
    regraph,
    separable_starts,
    swap_segments,
)
from tinyevo.graph.selection import Pin, Selection, component, solve_selection
from tinyevo.graph.shapes import (
    PROBES,
    insertion_keeps_shapes,
    layer_spatial,
    removal_keeps_shapes,
    shape_change,
    shapes_kept,
    toposort,
    trace,
)
from tinyevo.graph.surgery import Snapshot, apply_selection, connected, zero_output
from tinyevo.graph.value import mean_value, mean_values, neuron_value, track_values, value_cache
from tinyevo.graph.vertices import (
    KINDS,
    TRAITS,
    Vertex,
    add,
    concat,
    detach,
    input_vertex,
    layer_output_kind,
    mul,
    vertex,
)

__all__ = [
    "Vertex", "input_vertex", "vertex", "concat", "add", "mul", "detach", "KINDS", "TRAITS",
    "layer_output_kind", "CompGraph", "copy", "copy_layer", "check_sizes",
    "change_nout", "select_neurons", "insert_after", "insert_merge_before", "remove_vertex",
    "add_edge", "remove_edge", "change_kernel_size", "set_activation",
    "resize", "apply_pending", "flush_pending", "align", "resize_fresh",
    "toposort", "trace", "layer_spatial", "shapes_kept", "shape_change", "removal_keeps_shapes",
    "insertion_keeps_shapes", "PROBES",
    "neuron_value", "mean_value", "mean_values", "track_values", "value_cache",
    "solve_selection", "Selection", "Pin", "component", "apply_selection", "connected",
    "zero_output", "Snapshot",
]
__all__ += ["Segment", "separable_starts", "implant", "bypass", "swap_segments", "regraph",
            "SWAP_PROBES"]
