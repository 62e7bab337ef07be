"""Export a model to ONNX for inference anywhere (onnxruntime, TensorRT, OpenVINO, browsers).

Needs the optional ``onnx`` package (``pip install 'tinyevo[onnx]'``), imported only when
:func:`export_onnx` runs, so ``import tinyevo`` stays NumPy + SciPy.

    >>> export_onnx(graph, "best.onnx")                       # any batch size, any image size
    >>> sess = onnxruntime.InferenceSession("best.onnx")
    >>> y = sess.run(None, {"input": x.astype(np.float32)})[0]    # == graph(x) within 1e-4

What the file holds (inference only, float32):

- one graph input per input vertex, named like the vertex (``"input"`` for a Sequential), with a
  dynamic batch axis; spatial axes are dynamic unless ``input_shape`` fixes them;
- one graph output per output vertex, named like the vertex (``"output"`` for a Sequential);
- Dense -> Gemm, Conv -> Conv, BatchNorm -> BatchNormalization (running statistics),
  Rescale -> Mul + Add (scale and offset shaped (C, 1, ...) to broadcast along axis 1),
  MaxPool -> MaxPool, MeanPool -> AveragePool (count_include_pad=1), GlobalPool ->
  GlobalAveragePool/GlobalMaxPool + Flatten, Flatten -> Flatten, Dropout -> nothing, concat ->
  Concat (axis 1), add -> Add/Sum, mul -> Mul; activations as ONNX operators (swish as
  ``x * Sigmoid(x)``, gelu's tanh approximation as ``Gelu(approximate="tanh")`` from opset 20 and
  from primitives before).

``padding="same"`` depends on the input size when the stride is above 1. Where ``input_shape``
gives the spatial size the exact (lo, hi) pads are written; with stride 1 the pads do not depend
on the size; otherwise a Pad node computes tinyevo's pads (the odd pixel at the end) from the
input's size at run time.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from tinyevo import backend as B
from tinyevo._version import __version__
from tinyevo.app.io import atomic_open
from tinyevo.app.model_io import as_model
from tinyevo.graph import CompGraph
from tinyevo.graph.vertices import RANK
from tinyevo.layers import (
    BatchNorm,
    Conv,
    Dense,
    Dropout,
    Flatten,
    GlobalPool,
    Layer,
    MaxPool,
    MeanPool,
    Rescale,
    Sequential,
)
from tinyevo.layers.conv import conv_output_size

__all__ = ["export_onnx", "DEFAULT_OPSET", "MIN_OPSET"]

DEFAULT_OPSET = 17
"""Opset 17 runs on onnxruntime >= 1.11 and every current converter."""
MIN_OPSET = 13

_SELU_ALPHA = 1.6732632423543772
_SELU_SCALE = 1.0507009873554805
_LEAKY_SLOPE = 0.01
_GELU_C = float(np.sqrt(2.0 / np.pi))
_SPATIAL_NAMES = {1: ("length",), 2: ("height", "width")}

Shape = Sequence[int]


def export_onnx(model: Any, path: str | os.PathLike | None,
                input_shape: Shape | Sequence[Shape] | None = None, *,
                opset: int = DEFAULT_OPSET, check: bool = True) -> Any:
    """Write ``model`` (a CompGraph, a Sequential or a candidate holding one) as an ONNX file at
    ``path`` (atomically; ``None`` writes nothing) and return the ``onnx.ModelProto``.

    ``input_shape`` is one example's shape without the batch axis, e.g. ``(1, 28, 28)`` (a list
    of them for a graph with several inputs). It fixes the spatial sizes in the file; without it
    they stay dynamic. A Sequential whose first layer is neither Dense nor Conv needs it to know
    the input's rank. ``opset`` is the ONNX operator set (13 or newer). ``check`` runs the ONNX
    checker with full shape inference on the result.

        >>> proto = export_onnx(graph, "model.onnx", input_shape=(1, 8, 8))
        >>> [i.name for i in proto.graph.input]
        ['input']
    """
    onnx = _import_onnx()
    model = as_model(model, "export_onnx")
    if not isinstance(opset, int) or isinstance(opset, bool) or opset < MIN_OPSET:
        raise ValueError(f"export_onnx: opset must be an int >= {MIN_OPSET}, got {opset!r}")
    newest = onnx.defs.onnx_opset_version()
    if opset > newest:
        raise ValueError(f"export_onnx: opset {opset} is newer than the installed onnx "
                         f"{onnx.__version__} knows ({newest}); pass opset<={newest} or upgrade "
                         "onnx")
    b = _Builder(onnx, opset)
    if isinstance(model, CompGraph):
        _emit_graph(b, model, input_shape)
        name = "tinyevo_CompGraph"
    else:
        _emit_sequential(b, model, input_shape)
        name = "tinyevo_Sequential"
    h = onnx.helper
    graph = h.make_graph(b.nodes, name, b.inputs, b.outputs, initializer=b.inits)
    opsets = [h.make_opsetid("", opset)]
    proto = h.make_model(graph, opset_imports=opsets, producer_name="tinyevo",
                         producer_version=__version__,
                         ir_version=h.find_min_ir_version_for(opsets))
    proto.doc_string = f"Exported by tinyevo {__version__}: {model!r}"
    if check:
        onnx.checker.check_model(proto, full_check=True)
    if path is not None:
        with atomic_open(path, "wb") as f:
            f.write(proto.SerializeToString())
    return proto


# ---------------------------------------------------------------------- model walks

@dataclass(frozen=True)
class _Value:
    """A tensor in the ONNX graph: its name, rank and the spatial sizes known at export."""

    name: str
    rank: int
    channels: int | None
    spatial: tuple[int | None, ...] = ()


def _emit_graph(b: _Builder, graph: CompGraph, input_shape: Any) -> None:
    if graph.pending():
        raise ValueError("export_onnx: the graph has pending size changes "
                         "(change_nout(..., select=False)); apply them with "
                         "select_neurons(graph) first")
    inputs = graph.inputs
    shapes = _per_input(input_shape, len(inputs))
    outputs = graph.outputs
    b.reserve([v.name for v in inputs] + [v.name for v in outputs])
    values: dict[Any, _Value] = {}
    for v, shape in zip(inputs, shapes):
        values[v] = b.graph_input(v.name, v.nout, RANK[v.kind], shape, v.name)
    for v in graph.vertices:
        if v in values:
            continue
        ins = [values[u] for u in v.inputs]
        if v.op == "layer":
            values[v] = _emit_layer(b, v.layer, ins[0], v.name)
        else:
            values[v] = _emit_merge(b, v.op, ins, v.name)
    for v in outputs:
        b.graph_output(values[v], v.name)


def _emit_sequential(b: _Builder, model: Sequential, input_shape: Any) -> None:
    layers = list(model.layers())
    if not layers:
        raise ValueError("export_onnx: the Sequential has no layers")
    first = layers[0]
    if input_shape is not None:
        shape = _per_input(input_shape, 1)[0]
        rank, channels = len(shape) + 1, shape[0]
        if first.nin is not None and channels != first.nin:
            raise ValueError(f"export_onnx: input_shape {tuple(shape)} has {channels} "
                             f"channels/features but {first!r} takes {first.nin}")
    elif isinstance(first, Dense):
        shape, rank, channels = None, 2, first.nin
    elif isinstance(first, Conv):
        shape, rank, channels = None, first.ndim + 2, first.nin
    else:
        raise ValueError(f"export_onnx: cannot tell the input's shape from the first layer "
                         f"{first!r}; pass input_shape=(channels, *spatial)")
    b.reserve(["input", "output"])
    value = b.graph_input("input", channels, rank, shape, "input")
    for i, layer in enumerate(layers):
        value = _emit_layer(b, layer, value, f"layer{i}")
    b.graph_output(value, "output")


def _per_input(input_shape: Any, n: int) -> list[tuple[int, ...] | None]:
    """``input_shape`` as one tuple (or None) per graph input."""
    if input_shape is None:
        return [None] * n
    shapes = input_shape
    if n == 1 and (not shapes or all(isinstance(s, (int, np.integer)) for s in shapes)):
        shapes = [shapes]
    try:
        shapes = [tuple(int(d) for d in s) for s in shapes]
        valid = len(shapes) == n and all(s and min(s) >= 1 for s in shapes)
    except (TypeError, ValueError):
        valid = False
    if not valid:
        raise ValueError(f"export_onnx: input_shape must be one example's shape without the "
                         f"batch axis, e.g. (3, 32, 32) or (10,)"
                         f"{'' if n == 1 else f', one per input ({n})'}; got {input_shape!r}")
    return shapes


# ---------------------------------------------------------------------- layers

def _emit_layer(b: _Builder, layer: Layer, x: _Value, stem: str) -> _Value:
    # The layer's last node carries its name: the activation's, else the layer's own op.
    core = stem if layer.activation == "identity" else f"{stem}.linear"
    if isinstance(layer, Dense):
        _need_rank(x, (2,), layer, stem)
        ins = [x.name, b.const(f"{stem}.weight", layer.params["weight"])]
        if "bias" in layer.params:
            ins.append(b.const(f"{stem}.bias", layer.params["bias"]))
        y = _Value(b.node("Gemm", ins, core, transB=1), 2, layer.nout)
        return _emit_activation(b, layer.activation, y, stem)
    if isinstance(layer, Conv):
        _need_rank(x, (layer.ndim + 2,), layer, stem)
        ins = [x.name, b.const(f"{stem}.weight", layer.params["weight"])]
        if "bias" in layer.params:
            ins.append(b.const(f"{stem}.bias", layer.params["bias"]))
        ins[0], attrs, spatial = _window(b, x, layer.padding, layer.kernel_size, layer.stride,
                                         layer.dilation, stem, 0.0)
        y = _Value(b.node("Conv", ins, core, kernel_shape=list(layer.kernel_size),
                          strides=list(layer.stride), dilations=list(layer.dilation), **attrs),
                   x.rank, layer.nout, spatial)
        return _emit_activation(b, layer.activation, y, stem)
    if isinstance(layer, BatchNorm):
        if x.rank < 2:
            raise _rank_error(layer, stem, "(N, C, ...)", x)
        p, s = layer.params, layer.state
        ins = [x.name] + [b.const(f"{stem}.{k}", a) for k, a in
                          (("weight", p["weight"]), ("bias", p["bias"]),
                           ("running_mean", s["running_mean"]),
                           ("running_var", s["running_var"]))]
        y = _Value(b.node("BatchNormalization", ins, core, epsilon=layer.eps), x.rank,
                   layer.nout, x.spatial)
        return _emit_activation(b, layer.activation, y, stem)
    if isinstance(layer, Rescale):
        if x.rank < 2:
            raise _rank_error(layer, stem, "(N, C, ...)", x)
        per_channel = (layer.nin,) + (1,) * (x.rank - 2)      # broadcasts along axis 1
        scale, offset = (b.const(f"{stem}.{k}", layer.state[k].reshape(per_channel))
                         for k in ("scale", "offset"))
        scaled = b.node("Mul", [x.name, scale], f"{stem}.scaled")
        return _Value(b.node("Add", [scaled, offset], stem), x.rank, layer.nout, x.spatial)
    if isinstance(layer, (MaxPool, MeanPool)):
        ranks = (layer.ndim + 2,) if layer.ndim else (3, 4)
        _need_rank(x, ranks, layer, stem)
        nd = x.rank - 2
        window, stride, padding = layer.geometry(nd)
        mean = isinstance(layer, MeanPool)
        source, attrs, spatial = _window(b, x, padding, window, stride, (1,) * nd, stem,
                                         0.0 if mean else -np.inf)
        if mean:
            op = "AveragePool"
            attrs["count_include_pad"] = 1
        else:
            op = "MaxPool"
        name = b.node(op, [source], stem, kernel_shape=list(window), strides=list(stride),
                      **attrs)
        return _Value(name, x.rank, x.channels, spatial)
    if isinstance(layer, GlobalPool):
        _need_rank(x, (3, 4), layer, stem)
        op = "GlobalAveragePool" if layer.mode == "mean" else "GlobalMaxPool"
        pooled = b.node(op, [x.name], stem + ".pool")
        return _Value(b.node("Flatten", [pooled], stem, axis=1), 2, x.channels)
    if isinstance(layer, Flatten):
        if x.rank == 2:
            return x
        known = x.channels is not None and None not in x.spatial
        features = int(np.prod((x.channels, *x.spatial))) if known else None
        return _Value(b.node("Flatten", [x.name], stem, axis=1), 2, features)
    if isinstance(layer, Dropout):
        return x                                       # inference: the identity
    raise NotImplementedError(f"export_onnx: no ONNX mapping for layer {layer!r} (vertex "
                              f"{stem!r}); supported: Dense, Conv, BatchNorm, MaxPool, MeanPool, "
                              "GlobalPool, Flatten, Dropout, Rescale")


def _emit_merge(b: _Builder, op: str, xs: list[_Value], stem: str) -> _Value:
    first = xs[0]
    names = [x.name for x in xs]
    if len(xs) == 1:
        return first
    if op == "concat":
        name = b.node("Concat", names, stem, axis=1)
    elif op == "add":
        name = b.node("Add" if len(xs) == 2 else "Sum", names, stem)
    elif op == "mul":
        name = names[0]
        for i, other in enumerate(names[1:], 1):
            name = b.node("Mul", [name, other], stem if i == len(names) - 1 else f"{stem}.{i}")
    else:
        raise NotImplementedError(f"export_onnx: no ONNX mapping for merge {op!r} ({stem!r})")
    spatial = tuple(next((s for s in dims if s is not None), None)
                    for dims in zip(*(x.spatial for x in xs)))
    if op == "concat":
        channels = None if None in [x.channels for x in xs] else sum(x.channels for x in xs)
    else:
        channels = next((x.channels for x in xs if x.channels is not None), None)
    return _Value(name, first.rank, channels, spatial)


def _emit_activation(b: _Builder, activation: str, x: _Value, stem: str) -> _Value:
    """``x`` through ``activation``; the final node's output takes the name ``stem``."""
    if activation == "identity":
        return x
    pre = x.name
    simple = {"relu": ("Relu", {}), "leaky_relu": ("LeakyRelu", {"alpha": _LEAKY_SLOPE}),
              "elu": ("Elu", {"alpha": 1.0}),
              "selu": ("Selu", {"alpha": _SELU_ALPHA, "gamma": _SELU_SCALE}),
              "sigmoid": ("Sigmoid", {}), "tanh": ("Tanh", {}), "softplus": ("Softplus", {})}
    if activation in simple:
        op, attrs = simple[activation]
        return replace(x, name=b.node(op, [pre], stem, **attrs))
    if activation == "swish":
        sig = b.node("Sigmoid", [pre], stem + ".sigmoid")
        return replace(x, name=b.node("Mul", [pre, sig], stem))
    if activation == "gelu":
        if b.opset >= 20:
            return replace(x, name=b.node("Gelu", [pre], stem, approximate="tanh"))
        # 0.5 * x * (1 + tanh(sqrt(2 / pi) * (x + 0.044715 * x^3)))
        sq = b.node("Mul", [pre, pre], stem + ".sq")
        cube = b.node("Mul", [sq, pre], stem + ".cube")
        inner = b.node("Add", [pre, b.node("Mul", [cube, b.scalar(0.044715)], stem + ".c3")],
                       stem + ".poly")
        t = b.node("Tanh", [b.node("Mul", [inner, b.scalar(_GELU_C)], stem + ".scaled")],
                   stem + ".tanh")
        half = b.node("Mul", [pre, b.scalar(0.5)], stem + ".half")
        one_plus = b.node("Add", [t, b.scalar(1.0)], stem + ".one")
        return replace(x, name=b.node("Mul", [half, one_plus], stem))
    raise NotImplementedError(f"export_onnx: no ONNX mapping for activation {activation!r} "
                              f"({stem!r})")


def _window(b: _Builder, x: _Value, padding: Any, kernel: Sequence[int], stride: Sequence[int],
            dilation: Sequence[int], stem: str, fill: float) -> tuple[str, dict, tuple]:
    """(the window op's input, its ``pads`` attribute, the output's spatial sizes or None)."""
    nd = len(kernel)
    spatial = tuple(x.spatial) if x.spatial else (None,) * nd
    if padding == "same":
        pads = []
        for n, k, s, d in zip(spatial, kernel, stride, dilation):
            if n is None and s != 1:
                pads = None
                break
            n_eff = n if n is not None else 1          # stride 1: pads independent of n
            total = max((-(-n_eff // s) - 1) * s + d * (k - 1) + 1 - n_eff, 0)
            pads.append((total // 2, total - total // 2))
        if pads is None:
            out = tuple(None if n is None else -(-n // s) for n, s in zip(spatial, stride))
            padded = _same_pad_at_run_time(b, x, kernel, stride, dilation, stem, fill)
            return padded, {"pads": [0] * (2 * nd)}, out
    else:
        pads = list(padding)
    out = tuple(None if n is None else conv_output_size(n, k, s, d, p)
                for n, k, s, d, p in zip(spatial, kernel, stride, dilation, pads))
    if any(o is not None and o < 1 for o in out):
        raise ValueError(f"export_onnx: input of spatial size {spatial} is too small for a "
                         f"window of {tuple(kernel)} (dilation {tuple(dilation)}) with padding "
                         f"{padding!r}")
    return x.name, {"pads": [lo for lo, _ in pads] + [hi for _, hi in pads]}, out


def _same_pad_at_run_time(b: _Builder, x: _Value, kernel: Sequence[int], stride: Sequence[int],
                          dilation: Sequence[int], stem: str, fill: float) -> str:
    """Pad ``x`` as ``padding="same"`` does, from its spatial size at run time.

    Per axis: out = ceil(n / s), total = max((out - 1) * s + d * (k - 1) + 1 - n, 0), lo =
    total // 2 before and the rest after. Explicit Pad rather than the Conv attribute
    ``auto_pad``, which ONNX deprecates and onnxruntime refuses with dilation.
    """
    def op(kind: str, inputs: list[str], what: str) -> str:
        return b.node(kind, inputs, f"{stem}.{what}")

    s = b.ints(stride)
    n = op("Slice", [op("Shape", [x.name], "shape"), b.ints([2]), b.ints([x.rank])], "spatial")
    out = op("Div", [op("Add", [n, b.ints([v - 1 for v in stride])], "n_plus"), s], "out")
    last = op("Mul", [op("Sub", [out, b.ints([1])], "out_minus_1"), s], "last_start")
    reach = b.ints([d * (k - 1) + 1 for k, d in zip(kernel, dilation)])
    total = op("Max", [op("Sub", [op("Add", [last, reach], "span"), n], "need"), b.ints([0])],
               "total")
    lo = op("Div", [total, b.ints([2])], "lo")
    hi = op("Sub", [total, lo], "hi")
    none = b.ints([0, 0])                              # batch and channel axes
    pads = b.node("Concat", [none, lo, none, hi], f"{stem}.pads", axis=0)
    value = b.scalar(fill)
    return b.node("Pad", [x.name, pads, value], f"{stem}.padded", mode="constant")


def _need_rank(x: _Value, ranks: tuple, layer: Layer, stem: str) -> None:
    if x.rank not in ranks:
        raise _rank_error(layer, stem, " or ".join(f"{r}-D" for r in ranks), x)


def _rank_error(layer: Layer, stem: str, expected: str, x: _Value) -> ValueError:
    return ValueError(f"export_onnx: {layer!r} ({stem!r}) needs {expected} input, gets "
                      f"{x.rank}-D data; check input_shape")


# ---------------------------------------------------------------------- ONNX plumbing

class _Builder:
    """Collects nodes, initializers and graph inputs/outputs with unique, readable names."""

    def __init__(self, onnx: Any, opset: int) -> None:
        self.onnx = onnx
        self.opset = opset
        self.nodes: list = []
        self.inits: list = []
        self.inputs: list = []
        self.outputs: list = []
        self._taken: set[str] = set()
        self._scalars: dict[float, str] = {}
        self._ints: dict[tuple, str] = {}
        self._reserved: set[str] = set()

    def reserve(self, names: Sequence[str]) -> None:
        """Keep ``names`` (the graph's inputs and outputs) for :meth:`graph_input` and
        :meth:`graph_output`; other values named alike get a suffix."""
        self._reserved.update(_clean(n) for n in names)

    def fresh(self, stem: str, exact: bool = False) -> str:
        base = _clean(stem)
        name, i = base, 1
        while name in self._taken or (name in self._reserved and not exact):
            i += 1
            name = f"{base}_{i}"
        self._taken.add(name)
        return name

    def node(self, op: str, inputs: list[str], stem: str, **attrs: Any) -> str:
        out = self.fresh(stem)
        self.nodes.append(self.onnx.helper.make_node(op, inputs, [out], name=out, **attrs))
        return out

    def const(self, stem: str, array: Any) -> str:
        name = self.fresh(stem)
        host = np.asarray(B.to_numpy(array), dtype=np.float32).copy(order="C")  # 0-d stays 0-d
        self.inits.append(self.onnx.numpy_helper.from_array(host, name))
        return name

    def ints(self, values: Sequence[int]) -> str:
        """A shared int64 vector constant."""
        key = tuple(int(v) for v in values)
        if key not in self._ints:
            name = self.fresh("ints_" + "_".join(map(str, key)).replace("-", "m"))
            self._ints[key] = name
            self.inits.append(self.onnx.numpy_helper.from_array(np.asarray(key, np.int64),
                                                                name))
        return self._ints[key]

    def scalar(self, value: float) -> str:
        if value not in self._scalars:
            self._scalars[value] = self.const(f"float_{value:g}".replace("-", "m"),
                                              np.float32(value))
        return self._scalars[value]

    def graph_input(self, name: str, channels: int, rank: int, shape: tuple | None,
                    who: str) -> _Value:
        nd = rank - 2
        if shape is not None:
            if len(shape) != rank - 1 or shape[0] != channels:
                raise ValueError(f"export_onnx: input {who!r} takes ({channels}"
                                 + ", *spatial" * (nd > 0) + f") per example ({rank - 1} "
                                 f"sizes), input_shape gave {tuple(shape)}")
            spatial = tuple(shape[1:])
        else:
            spatial = (None,) * nd
        name = self.fresh(name, exact=True)
        dims = [name + "_" + s for s in _SPATIAL_NAMES.get(nd, ())]
        onnx_shape = ["batch", channels, *(n if n is not None else d
                                           for n, d in zip(spatial, dims))]
        self.inputs.append(self.onnx.helper.make_tensor_value_info(
            name, self.onnx.TensorProto.FLOAT, onnx_shape))
        return _Value(name, rank, channels, spatial)

    def graph_output(self, value: _Value, name: str) -> None:
        out = self.fresh(name, exact=True)
        self.nodes.append(self.onnx.helper.make_node("Identity", [value.name], [out], name=out))
        shape = ["batch", value.channels, *value.spatial][:value.rank]
        self.outputs.append(self.onnx.helper.make_tensor_value_info(
            out, self.onnx.TensorProto.FLOAT, shape))


def _clean(name: str) -> str:
    return re.sub(r"[^\w.\-:/]", "_", name) or "value"


def _import_onnx() -> Any:
    try:
        import onnx
        import onnx.checker
        import onnx.helper
        import onnx.numpy_helper
    except ImportError as err:
        raise ImportError("export_onnx needs the optional 'onnx' package: "
                          "pip install 'tinyevo[onnx]' (or pip install onnx)") from err
    return onnx
