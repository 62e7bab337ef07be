"""Graph builders shared by the graph tests: chains, residual blocks, inception-like forks."""

from __future__ import annotations

import numpy as np

from tinyevo.graph import CompGraph, add, concat, input_vertex, vertex
from tinyevo.layers import BatchNorm, Conv, Dense, GlobalPool, MaxPool

SPATIAL = {"dense": (), "conv1d": (7,), "conv2d": (5, 5)}


def conv(nin: int, nout: int, kind: str, act: str = "relu", k: int = 3, **kw) -> Conv:
    nd = 1 if kind == "conv1d" else 2
    return Conv(nin, nout, (k,) * nd, padding="same", activation=act, **kw)


def layer(nin: int, nout: int, kind: str, act: str = "relu", **kw):
    return Dense(nin, nout, act, **kw) if kind == "dense" else conv(nin, nout, kind, act, **kw)


def head(v, kind: str, classes: int = 3):
    if kind != "dense":
        v = vertex(GlobalPool("mean"), v, name="gpool")
    return vertex(Dense(v.nout, classes), v, name="out", shielded=True)


def chain(kind: str = "dense", sizes=(4, 5, 6), nin: int = 3):
    inp = input_vertex("in", nin, kind)
    v = inp
    for i, n in enumerate(sizes):
        v = vertex(layer(v.nout, n, kind, ["relu", "elu", "selu", "identity"][i % 4]), v,
                   name=f"l{i + 1}")
    return CompGraph(inp, head(v, kind))


def residual(kind: str = "conv2d"):
    """in -> c1 -> bn -> [c2 -> c3] + bn -> c4 -> head: c1, c3 tied through bn and the add."""
    inp = input_vertex("in", 3, kind)
    c1 = vertex(layer(3, 6, kind), inp, name="c1")
    bn = vertex(BatchNorm(6, "relu"), c1, name="bn")
    c2 = vertex(layer(6, 5, kind), bn, name="c2")
    c3 = vertex(layer(5, 6, kind, "identity"), c2, name="c3")
    res = add(bn, c3, name="res")
    c4 = vertex(layer(6, 4, kind), res, name="c4")
    return CompGraph(inp, head(c4, kind))


def inception(kind: str = "conv2d"):
    """A fork of three paths joined by concat, with a residual add around it."""
    inp = input_vertex("in", 3, kind)
    stem = vertex(layer(3, 6, kind), inp, name="stem")
    p1 = vertex(layer(6, 2, kind), stem, name="p1")
    p2a = vertex(layer(6, 3, kind), stem, name="p2a")
    p2 = vertex(BatchNorm(3, "relu"), p2a, name="p2")
    p3 = vertex(layer(6, 1, kind, "elu"), stem, name="p3")
    if kind != "dense":
        p3 = vertex(MaxPool(3, stride=1, padding=1), p3, name="p3pool")
    cat = concat(p1, p2, p3, name="cat")
    res = add(stem, cat, name="res")
    post = vertex(layer(6, 4, kind), res, name="post")
    return CompGraph(inp, head(post, kind))


BUILDERS = {"chain": chain, "residual": residual, "inception": inception}


def data(graph: CompGraph, batch: int = 4, seed: int = 0) -> np.ndarray:
    inp = graph.inputs[0]
    shape = (batch, inp.nout, *SPATIAL[inp.kind])
    return np.random.default_rng(seed).standard_normal(shape)


def randomise(graph: CompGraph, seed: int = 1) -> None:
    """Non-trivial biases and BatchNorm statistics so that tests see every parameter."""
    rng = np.random.default_rng(seed)
    for lay in graph.layers():
        for name, a in lay.arrays().items():
            if name == "running_var":
                a[...] = rng.uniform(0.5, 2.0, a.shape)
            elif name != "weight" or isinstance(lay, BatchNorm):
                a[...] = rng.normal(0, 0.5, a.shape) + (1.0 if name == "weight" else 0.0)


def structure(graph: CompGraph) -> list:
    """Names, links, sizes and every array: equal before and after a failed edit."""
    out = []
    for v in graph.vertices:
        arrays = {} if v.layer is None else {k: a.copy() for k, a in v.layer.arrays().items()}
        out.append((v.name, v.op, repr(v.layer), tuple(u.name for u in v.inputs),
                    tuple(o.name for o in v.outputs), v.nout, v.pending, arrays))
    return out


def same_structure(a: list, b: list) -> bool:
    if len(a) != len(b):
        return False
    for x, y in zip(a, b):
        if x[:-1] != y[:-1] or x[-1].keys() != y[-1].keys():
            return False
        if any(not np.array_equal(x[-1][k], y[-1][k]) for k in x[-1]):
            return False
    return True
