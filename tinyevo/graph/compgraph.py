"""CompGraph: a computation graph of vertices with the layer contract.

``y = graph(x)`` for inference, ``y, backprop = graph.forward(x, train=True)`` for training
(``backprop`` adds every layer's parameter gradients into its ``grads``), ``graph.vertices`` in
topological order, ``graph.layers()`` for the optimisers, :func:`copy` for children,
``to_spec``/``from_spec`` for persistence as JSON + arrays.

    >>> inp = input_vertex("in", 3)
    >>> graph = CompGraph(inp, vertex(Dense(3, 2), vertex(Dense(3, 4, "relu"), inp)))
    >>> graph(np.ones((5, 3), np.float32)).shape
    (5, 2)
"""

from __future__ import annotations

import copy as _copy
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

from tinyevo import backend as B
from tinyevo.graph.shapes import toposort, trace
from tinyevo.graph.vertices import RANK, Vertex, layer_output_kind, structure_version, touch
from tinyevo.layers import Conv, Dense, Layer, layer_from_spec
from tinyevo.layers.base import share

__all__ = ["CompGraph", "copy", "check_sizes", "SPEC_FORMAT"]

SPEC_FORMAT = "tinyevo.CompGraph"
SPEC_VERSION = 1


class CompGraph:
    """CompGraph(inputs, outputs): the graph between input vertices and output vertices.

    Raises ``ValueError`` for a graph that reaches an input vertex not listed in ``inputs``, an
    input that no output depends on, a cycle, or inconsistent sizes.
    """

    def __init__(self, inputs: Vertex | Sequence[Vertex], outputs: Vertex | Sequence[Vertex]):
        self._inputs = _as_vertices(inputs, "inputs")
        self._outputs = _as_vertices(outputs, "outputs")
        for v in self._inputs:
            if not v.is_input:
                raise ValueError(f"CompGraph inputs must be made with input_vertex(), got "
                                 f"{v!r}")
        if len(set(map(id, self._inputs))) != len(self._inputs):
            raise ValueError("CompGraph inputs must be distinct vertices")
        self._cache: tuple | None = None
        for v in self._outputs:
            v._successor = None
        outs = set(self._outputs)
        for v in self._plan()[0]:                      # a vertex belongs to the newest graph
            v._is_output = v in outs
        problem = check_sizes(self.vertices)
        if problem:
            raise ValueError(f"CompGraph: {problem}")

    # ------------------------------------------------------------------ structure
    @property
    def inputs(self) -> tuple[Vertex, ...]:
        return tuple(self._inputs)

    @property
    def outputs(self) -> tuple[Vertex, ...]:
        outs = []
        for o in self._outputs:
            while o._successor is not None:          # insert_after() on an output vertex
                o = o._successor
            outs.append(o)
        self._outputs = outs
        return tuple(outs)

    @property
    def vertices(self) -> list[Vertex]:
        """Every vertex, in topological order (inputs before the vertices that read them)."""
        return list(self._plan()[0])

    def __len__(self) -> int:
        return len(self._plan()[0])

    def layers(self) -> Iterator[Layer]:
        """Each layer of the graph once, in topological order (what optimisers update)."""
        for v in self._plan()[0]:
            if v.layer is not None:
                yield v.layer

    def nparams(self) -> int:
        """Number of trained parameters (running statistics not counted)."""
        return sum(layer.parameter_count() for layer in self.layers())

    parameter_count = nparams

    def pending(self) -> list[Vertex]:
        """Vertices with a deferred size change waiting for :func:`select_neurons`."""
        return [v for v in self._plan()[0] if v._pending is not None]

    def __getitem__(self, name: str) -> Vertex:
        """The vertex called ``name``."""
        for v in self._plan()[0]:
            if v.name == name:
                return v
        raise KeyError(f"no vertex named {name!r}; names: {[v.name for v in self.vertices]}")

    # ------------------------------------------------------------------ compute
    def __call__(self, *xs: Any) -> Any:
        """The inference output on ``xs`` (one array per input vertex; a tuple for several
        outputs); each intermediate output is dropped once its last reader has run."""
        return self._run(xs, train=False, backward=False)

    def forward(self, *xs: Any, train: bool = False) -> tuple[Any, Callable]:
        """``(y, backprop)``: ``backprop(dy)`` (one gradient per output) adds every layer's
        parameter gradients into its ``grads`` and returns the input gradients;
        ``backprop(dy, need_dx=False)`` follows only the paths to parameters and returns None."""
        return self._run(xs, train, backward=True)

    def _run(self, xs: tuple, train: bool, backward: bool) -> Any:
        order, pos, in_pos, trainable, last_use = self._plan()
        if self.pending():
            raise RuntimeError("graph has pending size changes (change_nout(..., select=False));"
                               " apply them with select_neurons(graph) before running it")
        xs = self._check_inputs(xs)
        n = len(order)
        vals: list[Any] = [None] * n
        backs: list[Any] = [None] * n
        keep = {pos[o] for o in self.outputs}
        k = 0
        for i, v in enumerate(order):
            if v.op == "input":
                vals[i] = xs[k]
                k += 1
                continue
            y, back = v.forward([vals[j] for j in in_pos[i]], train)
            vals[i] = y
            if backward:
                backs[i] = back
            else:
                for j in in_pos[i]:
                    if last_use[j] == i and j not in keep:
                        vals[j] = None
        outs = [vals[pos[o]] for o in self.outputs]
        y = outs[0] if len(outs) == 1 else tuple(outs)
        if not backward:
            return y
        input_pos = [pos[v] for v in self._inputs]
        shapes = [x.shape for x in xs]

        def backprop(dy: Any, need_dx: bool = True) -> Any:
            if len(outs) > 1 and not isinstance(dy, (tuple, list)):
                raise ValueError(f"backprop: expected a tuple of {len(outs)} output gradients "
                                 f"(one per output), got {type(dy).__name__}")
            dys = (dy,) if len(outs) == 1 else tuple(dy)
            if len(dys) != len(outs):
                raise ValueError(f"backprop: expected {len(outs)} output gradients, got "
                                 f"{len(dys)}")
            grads: list[Any] = [None] * n
            owned = [False] * n

            def accumulate(j: int, g: Any) -> None:
                if grads[j] is None:
                    grads[j] = g
                elif owned[j]:
                    grads[j] += g
                else:                                  # never write into a shared array
                    grads[j] = grads[j] + g
                    owned[j] = True

            for o, d, out in zip(self.outputs, dys, outs):
                got = getattr(d, "shape", None)
                if got is None or tuple(got) != tuple(out.shape):
                    raise ValueError(
                        f"backprop: the gradient for output {o.name!r}: expected the output's "
                        f"shape {tuple(out.shape)}, got "
                        f"{f'shape {tuple(got)}' if got is not None else type(d).__name__}; "
                        "pass the loss gradient with respect to that output")
                accumulate(pos[o], d)
            for i in range(n - 1, -1, -1):
                g, back = grads[i], backs[i]
                if g is None or back is None:
                    continue
                grads[i] = None
                need = [True] * len(in_pos[i]) if need_dx else [trainable[j] for j in in_pos[i]]
                for j, dx in zip(in_pos[i], back(g, need)):
                    if dx is not None:
                        accumulate(j, dx)
            if not need_dx:
                return None
            xp = B.get_array_module(*outs)
            dx = [grads[j] if grads[j] is not None else xp.zeros(s, dtype=outs[0].dtype)
                  for j, s in zip(input_pos, shapes)]
            return dx[0] if len(dx) == 1 else tuple(dx)

        return y, backprop

    def _check_inputs(self, xs: tuple) -> list[Any]:
        if len(xs) != len(self._inputs):
            raise ValueError(f"graph takes {len(self._inputs)} input array(s) (one per input "
                             f"vertex {[v.name for v in self._inputs]}), got {len(xs)}")
        for x, v in zip(xs, self._inputs):
            shape = getattr(x, "shape", None)
            if shape is None:
                raise TypeError(f"input {v.name!r}: expected an array, got {type(x).__name__}")
            rank = RANK[v.kind]
            if len(shape) != rank or shape[1] != v.nout:
                layout = {"dense": "(N, F)", "conv1d": "(N, C, L)", "conv2d": "(N, C, H, W)"}
                raise ValueError(f"input {v.name!r}: expected {v.kind} data {layout[v.kind]} "
                                 f"with {v.nout} at axis 1, got shape {tuple(shape)}")
        return list(xs)

    def _plan(self) -> tuple:
        """Topological order and per-vertex input positions, cached until the structure changes."""
        version = structure_version()
        if self._cache is not None and self._cache[0] == version:
            return self._cache[1]
        order = toposort(self.outputs)
        _check_inputs_listed(order, self._inputs)
        pos = {v: i for i, v in enumerate(order)}
        in_pos = [[pos[u] for u in v._inputs] for v in order]
        trainable = [False] * len(order)
        last_use = list(range(len(order)))
        for i, v in enumerate(order):
            trainable[i] = v.has_params or any(trainable[j] for j in in_pos[i])
            for j in in_pos[i]:
                last_use[j] = i
        plan = (order, pos, in_pos, trainable, last_use)
        self._cache = (version, plan)
        return plan

    # ------------------------------------------------------------------ inspection
    def validate(self) -> None:
        """Check structure and every size; raises ``ValueError`` naming the first problem."""
        touch()                                        # re-derive the order from scratch
        order = self._plan()[0]
        seen_layers: dict[int, Vertex] = {}
        for v in order:
            for u in v._inputs:
                if v not in u._outputs:
                    raise ValueError(f"{v.name!r} reads {u.name!r} but is not among its outputs")
            for o in v._outputs:
                if v not in o._inputs:
                    raise ValueError(f"{o.name!r} is listed as an output of {v.name!r} but does "
                                     "not read it")
            if v.layer is not None:
                other = seen_layers.setdefault(id(v.layer), v)
                if other is not v:
                    raise ValueError(f"vertices {other.name!r} and {v.name!r} share one layer "
                                     "object; give each vertex its own layer")
                if len(v._inputs) != 1:
                    raise ValueError(f"layer vertex {v.name!r} has {len(v._inputs)} inputs")
                kind = layer_output_kind(v.layer, v._inputs[0].kind, repr(v.name))
                if kind != v.kind:
                    raise ValueError(f"{v.name!r}: outputs {kind} data but is marked {v.kind}")
            elif v.op != "input":
                if not v._inputs:
                    raise ValueError(f"merge vertex {v.name!r} has no inputs")
                if any(u.kind != v.kind for u in v._inputs):
                    raise ValueError(f"{v.op} {v.name!r}: inputs of different kinds "
                                     f"{[u.kind for u in v._inputs]}")
        problem = check_sizes(order)
        if problem:
            raise ValueError(problem)

    def shapes(self, *spatial: Sequence[int]) -> dict[Vertex, tuple[int, ...]]:
        """Per-vertex output shape without the batch axis, for inputs of the given spatial size
        (``()`` for dense inputs): ``graph.shapes((32, 32))[v] == (C, H, W)``."""
        if len(spatial) != len(self._inputs):
            raise ValueError(f"shapes() takes one spatial size per input ({len(self._inputs)}),"
                             f" got {len(spatial)}")
        known: dict[Vertex, tuple[int, ...]] = {}
        for v, s in zip(self._inputs, spatial):
            s = tuple(int(i) for i in s)
            if len(s) != RANK[v.kind] - 2:
                raise ValueError(f"input {v.name!r} is {v.kind}: expected {RANK[v.kind] - 2} "
                                 f"spatial sizes, got {s}")
            known[v] = s
        traced = trace(self._plan()[0], known, strict=False)     # the inputs first
        return {v: (v.nout, *sp) for v, sp in traced.items()}

    def macs(self, *spatial: Sequence[int]) -> int:
        """Multiply-adds of one sample's forward pass through the weights (convolutions and
        dense layers; normalisation, pooling and activations are not counted), for inputs of
        the given spatial size as in :meth:`shapes`: the usual measure of a model's cost,
        ``graph.macs((28, 28))``. Training costs about three times as much."""
        shapes = self.shapes(*spatial)
        total = 0
        for v in self._plan()[0]:
            layer = v.layer
            if isinstance(layer, Conv):
                positions = int(np.prod(shapes[v][1:], dtype=np.int64))
                total += int(layer.params["weight"].size) * positions
            elif isinstance(layer, Dense):
                positions = int(np.prod(shapes[v._inputs[0]][1:], dtype=np.int64))
                total += int(layer.params["weight"].size) * positions
        return total

    def summary(self) -> str:
        """A table of the vertices: name, what it computes, sizes, kind and parameter count."""
        rows = [("#", "name", "computes", "inputs", "nin", "nout", "kind", "params")]
        for i, v in enumerate(self._plan()[0]):
            what = repr(v.layer) if v.layer is not None else v.op
            if v.shielded and not v.is_input:
                what += " [shielded]"
            params = v.layer.parameter_count() if v.layer is not None else 0
            rows.append((str(i), v.name, what, ",".join(u.name for u in v._inputs),
                         ",".join(map(str, v.nin)), str(v.nout), v.kind, f"{params:,}"))
        widths = [max(len(r[c]) for r in rows) for c in range(len(rows[0]))]
        lines = ["  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip() for r in rows]
        lines.insert(1, "-" * len(lines[0]))
        lines.append(f"{len(rows) - 1} vertices, {self.nparams():,} parameters")
        return "\n".join(lines)

    def __repr__(self) -> str:
        ins = ", ".join(v.name for v in self._inputs)
        outs = ", ".join(v.name for v in self.outputs)
        return f"CompGraph({len(self)} vertices, {self.nparams():,} params, {ins} -> {outs})"

    # ------------------------------------------------------------------ copy / spec
    def copy(self, rename: Callable[[str], str] | str | None = None) -> CompGraph:
        """A copy that trains independently, sharing arrays copy-on-write (see :func:`copy`)."""
        return copy(self, rename)

    def to_spec(self) -> dict:
        """A JSON-able description of structure and layer hyperparameters; arrays come from
        :meth:`arrays`. Rebuild with ``CompGraph.from_spec(spec, arrays)``."""
        order = self._plan()[0]
        pos = {v: i for i, v in enumerate(order)}
        vs = []
        for v in order:
            d: dict[str, Any] = {"name": v.name, "op": v.op, "kind": v.kind,
                                 "inputs": [pos[u] for u in v._inputs]}
            if v.shielded and not v.is_input:
                d["shielded"] = True
            if v.is_input:
                d["size"] = v.nout
            if v.layer is not None:
                layer = v.layer
                d["layer"] = layer.to_spec()
                # A shield's allow-list (tinyevo.search.shield) lives on the layer: keep it,
                # whether a MutationShield or the names a loaded spec left (from_spec below).
                shield = getattr(layer, "mutation_shield", None)
                allow = shield if isinstance(shield, frozenset) else getattr(shield, "allow",
                                                                             None)
                if allow:
                    d["shield_allow"] = sorted(allow)
                d["dtype"] = np.dtype(layer.dtype).name
                if layer._value_every:
                    d["track_value"] = {"every": layer._value_every,
                                        "momentum": layer.value_momentum}
            vs.append(d)
        return {"format": SPEC_FORMAT, "version": SPEC_VERSION, "vertices": vs,
                "inputs": [pos[v] for v in self._inputs],
                "outputs": [pos[v] for v in self.outputs]}

    def arrays(self) -> dict[str, Any]:
        """Every array of the graph keyed ``"<vertex index>/<array name>"`` (ready for
        ``numpy.savez``; the index is the vertex's position in ``vertices``)."""
        out = {}
        for i, v in enumerate(self._plan()[0]):
            if v.layer is None:
                continue
            for name, a in v.layer.arrays().items():
                out[f"{i}/{name}"] = a
            if v.layer.neuron_value is not None:
                out[f"{i}/neuron_value"] = v.layer.neuron_value
        return out

    @classmethod
    def from_spec(cls, spec: dict, arrays: dict | None = None) -> CompGraph:
        """Rebuild a graph from :meth:`to_spec` and, optionally, :meth:`arrays` (or an npz)."""
        if not isinstance(spec, dict) or spec.get("format") != SPEC_FORMAT:
            raise ValueError(f"not a CompGraph spec: expected a dict with format "
                             f"{SPEC_FORMAT!r}, got {type(spec).__name__}")
        if spec.get("version", 0) > SPEC_VERSION:
            raise ValueError(f"CompGraph spec version {spec['version']} is newer than this "
                             f"tinyevo understands ({SPEC_VERSION}); upgrade tinyevo")
        made: list[Vertex] = []
        for i, d in enumerate(spec["vertices"]):
            ins = [made[j] for j in d["inputs"]]
            if d["op"] == "input":
                made.append(Vertex(d["name"], "input", None, [], d["kind"], True, d["size"]))
                continue
            layer = None
            if d["op"] == "layer":
                own = None
                if arrays is not None:
                    prefix = f"{i}/"
                    own = {k[len(prefix):]: arrays[k] for k in arrays if k.startswith(prefix)}
                layer = layer_from_spec(d["layer"], None)
                if d.get("dtype") and np.dtype(layer.dtype) != np.dtype(d["dtype"]):
                    layer.to(dtype=np.dtype(d["dtype"]).type)
                if own:
                    value = own.pop("neuron_value", None)
                    layer.load_arrays(own)
                    if value is not None:
                        layer.neuron_value = B.to_device(B.to_numpy(value), dtype=layer.dtype)
                tv = d.get("track_value")
                if tv:
                    value = layer.neuron_value
                    layer.track_value(tv["every"], tv["momentum"])
                    if value is not None:
                        layer.neuron_value = value
            if layer is not None and d.get("shield_allow"):
                layer.mutation_shield = frozenset(d["shield_allow"])
            made.append(Vertex(d["name"], d["op"], layer, ins, d["kind"],
                               d.get("shielded", False)))
        return cls([made[i] for i in spec["inputs"]], [made[i] for i in spec["outputs"]])


# ---------------------------------------------------------------------- copy

def copy(graph: CompGraph, rename: Callable[[str], str] | str | None = None) -> CompGraph:
    """A deep copy of ``graph``: new vertices and layers whose arrays are shared copy-on-write
    with ``graph``'s (see :func:`copy_layers`: training either one never changes the other),
    and no gradients yet. ``rename`` maps old vertex names to new ones (a callable) or is a suffix
    (a str).

        >>> child = copy(graph, rename=lambda name: name + "'")
    """
    if not isinstance(graph, CompGraph):
        raise TypeError(f"copy() takes a CompGraph, got {type(graph).__name__}")
    if rename is None:
        def newname(s: str) -> str:
            return s
    elif isinstance(rename, str):
        suffix = rename

        def newname(s: str) -> str:
            return s + suffix
    elif callable(rename):
        newname = rename
    else:
        raise TypeError(f"rename must be None, a suffix string or a callable, got "
                        f"{type(rename).__name__}")
    order = graph._plan()[0]
    layers = iter(copy_layers([v.layer for v in order if v.layer is not None]))
    mapping: dict[Vertex, Vertex] = {}
    for v in order:
        nv = Vertex.__new__(Vertex)
        nv.name = newname(v.name)
        nv.op = v.op
        nv.layer = next(layers) if v.layer is not None else None
        nv.kind = v.kind
        nv.shielded = v.shielded
        nv._inputs = [mapping[u] for u in v._inputs]
        nv._outputs = []
        nv._size = v._size
        nv._pending = v._pending
        nv._deferred = None
        nv._is_output = False
        nv._successor = None
        mapping[v] = nv
    for v in order:
        mapping[v]._outputs = [mapping[o] for o in v._outputs if o in mapping]
    touch()
    new = CompGraph.__new__(CompGraph)
    new._inputs = [mapping[v] for v in graph._inputs]
    new._outputs = [mapping[v] for v in graph.outputs]
    for v in new._outputs:
        v._is_output = True
    new._cache = None
    return new


def copy_layer(layer: Layer) -> Layer:
    """A copy of ``layer`` sharing its arrays copy-on-write (no deepcopy of the whole object
    graph)."""
    return copy_layers([layer])[0]


def copy_layers(layers: Sequence[Layer]) -> list[Layer]:
    """Copies of ``layers`` that share their parameter and state arrays copy-on-write.

    NumPy arrays are marked read-only and held by both layers (:func:`tinyevo.layers.base.share`);
    whichever is trained first writes into its own copy (:func:`tinyevo.layers.base.own`), and
    resizing replaces arrays anyway, so a copy that is mutated and trained never copies the
    arrays that surgery rebuilt. Gradients start empty (made on first use). Other arrays (CuPy's)
    are copied at once.
    """
    out = []
    for layer in layers:
        new = object.__new__(type(layer))
        d = {}
        for k, val in layer.__dict__.items():
            if k in ("params", "state"):
                d[k] = {name: share(a) for name, a in val.items()}
            elif k == "_grads":
                d[k] = {}
            elif hasattr(val, "shape") and hasattr(val, "copy"):
                d[k] = val.copy()
            elif isinstance(val, (list, dict, set)):
                d[k] = _copy.deepcopy(val)
            else:
                d[k] = val
        new.__dict__.update(d)
        out.append(new)
    return out


# ---------------------------------------------------------------------- helpers

def check_sizes(vertices: Sequence[Vertex]) -> str | None:
    """The first size inconsistency among ``vertices`` as a message, or None when all agree."""
    for v in vertices:
        op = v.op
        if op == "input":
            continue
        nin = [u.nout for u in v._inputs]
        if op == "layer":
            layer = v.layer
            if layer.nin is not None and layer.nin != v._inputs[0].nout_org:
                return (f"{v.name!r}: {layer!r} takes {layer.nin} inputs but "
                        f"{v._inputs[0].name!r} outputs {v._inputs[0].nout_org}")
            if v.trait == "invariant" and layer.nout is not None and v.nout != nin[0]:
                return f"{v.name!r}: size-invariant layer has nout {v.nout} but nin {nin[0]}"
        elif op == "concat":
            if v.nout != sum(nin):
                return f"concat {v.name!r}: nout {v.nout} != sum of nin {nin}"
        elif len(set(nin)) > 1:
            return f"{op} {v.name!r}: elementwise inputs have different sizes {nin}"
    return None


def _as_vertices(vs: Any, what: str) -> list[Vertex]:
    if isinstance(vs, Vertex):
        return [vs]
    try:
        out = list(vs)
    except TypeError:
        out = None
    if not out or not all(isinstance(v, Vertex) for v in out):
        raise TypeError(f"CompGraph {what}: expected a Vertex or a non-empty sequence of "
                        f"vertices, got {vs!r}")
    return out


def _check_inputs_listed(order: Sequence[Vertex], inputs: Sequence[Vertex]) -> None:
    """Raise unless the input vertices in ``order`` are exactly ``inputs``."""
    listed = set(inputs)
    for v in order:
        if v.op == "input" and v not in listed:
            raise ValueError(f"input vertex {v.name!r} is reached from the outputs but is not "
                             "among the graph's inputs; pass it in inputs")
    reached = set(order)
    for v in inputs:
        if v not in reached:
            raise ValueError(f"graph input {v.name!r} is not connected to any output; remove it "
                             "from inputs or connect it")
