"""Property tests: random mutation sequences on random graphs never raise and always leave a
graph that validates and trains (forward and backward) with the right output shape."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from tinyevo.evolution.mutation import (
    ActivationFunctionMutation,
    AddEdgeMutation,
    AddVertexMutation,
    HighUtilityMutationProbability,
    KernelSizeMutation,
    LowUtilityMutationProbability,
    MutationChain,
    MutationProbability,
    NeuronSelectMutation,
    NoutMutation,
    PostMutation,
    RemoveEdgeMutation,
    RemoveVertexMutation,
    VertexMutation,
    neuronselect,
)
from tinyevo.graph import CompGraph, add, concat, connected, input_vertex, track_values, vertex
from tinyevo.layers import BatchNorm, Conv, Dense, GlobalPool, MaxPool, MeanPool

SPATIAL = {"dense": (), "conv1d": (12,), "conv2d": (8, 8)}
CLASSES = 3


def random_graph(seed: int, kind: str) -> CompGraph:
    """conv(+bn), bn+conv, forks joined by concat, residual adds and pooling, then a head."""
    gen = np.random.default_rng(seed)
    nd = {"conv1d": 1, "conv2d": 2}.get(kind, 0)
    pools = [0]

    def layer(v, n=None, act=None):
        n = n or int(gen.integers(2, 7))
        act = act or str(gen.choice(["relu", "elu", "identity", "selu"]))
        if kind == "dense":
            return vertex(Dense(v.nout, n, act, rng=gen), v)
        k = int(gen.choice([1, 3]))
        return vertex(Conv(v.nout, n, (k,) * nd, padding="same", activation=act, rng=gen), v)

    def unit(v, n=None):
        r = gen.random()
        if r < 0.5:
            return layer(v, n)
        if r < 0.75:
            return vertex(BatchNorm(layer(v, n).nout, "relu"), v.outputs[-1])
        return layer(vertex(BatchNorm(v.nout), v), n)

    def block(v):
        r = gen.random()
        if r < 0.35:
            return unit(v)
        if r < 0.6:                                             # fork
            paths = [unit(v) for _ in range(int(gen.integers(2, 4)))]
            return concat(*paths)
        if r < 0.85:                                            # residual
            inner = unit(unit(v), n=v.nout) if gen.random() < 0.5 else unit(v, n=v.nout)
            return add(v, inner)
        if kind != "dense" and pools[0] < 2:
            pools[0] += 1
            return vertex((MaxPool if gen.random() < 0.5 else MeanPool)(2), v)
        return unit(v)

    inp = input_vertex("in", int(gen.integers(1, 4)), kind)
    v = layer(inp)
    for _ in range(int(gen.integers(1, 4))):
        v = block(v)
    if kind != "dense":
        v = vertex(GlobalPool("mean"), v, name="gp", shielded=True)
    return CompGraph(inp, vertex(Dense(v.nout, CLASSES), v, name="out", shielded=True))


def add_space(v, rng=None, *, outsize=None, weightinit=None):
    """Identity-initialised dense or conv (sometimes conv+bn, sometimes a pool)."""
    n = outsize or v.nout
    if v.kind == "dense":
        return vertex(Dense(v.nout, n, init="identity", rng=rng), v)
    nd = 1 if v.kind == "conv1d" else 2
    r = rng.random() if rng is not None else 0.0
    if r < 0.15 and sum(isinstance(u.layer, (MaxPool, MeanPool)) for u in connected(v)) < 3:
        return vertex(MaxPool(2), v)                 # may break shapes: must be undone then
    c = vertex(Conv(v.nout, n, (3,) * nd, padding="same", init="identity", rng=rng), v)
    return vertex(BatchNorm(n), c) if r < 0.5 else c


def mutations(rng):
    def mp(m, p):
        return VertexMutation(MutationProbability(m, p, rng=rng))

    return {
        "nout": PostMutation(mp(NeuronSelectMutation(NoutMutation(-0.5, 0.5, rng=rng)), 0.5),
                             neuronselect),
        "remove": mp(RemoveVertexMutation(rng=rng), 0.3),
        "add": mp(AddVertexMutation(add_space, rng=rng), 0.3),
        "add_edge": mp(AddEdgeMutation(0.5, rng=rng), 0.3),
        "remove_edge": mp(RemoveEdgeMutation(rng=rng), 0.5),
        "kernel": mp(KernelSizeMutation(2, maxsize=5, rng=rng), 0.3),
        "activation": mp(ActivationFunctionMutation(rng=rng), 0.3),
        "chain": PostMutation(VertexMutation(MutationChain(
            HighUtilityMutationProbability(AddVertexMutation(add_space, rng=rng), 0.2, rng=rng),
            LowUtilityMutationProbability(
                NeuronSelectMutation(NoutMutation(-0.3, 0.3, rng=rng)), 0.3, rng=rng),
            MutationProbability(RemoveVertexMutation(rng=rng), 0.1, rng=rng))), neuronselect),
    }


def check_trains(graph: CompGraph, kind: str, nin: int) -> None:
    graph.validate()
    assert not graph.pending()
    x = np.random.default_rng(0).standard_normal((2, nin, *SPATIAL[kind])).astype(np.float32)
    y, back = graph.forward(x, train=True)
    assert y.shape == (2, CLASSES)
    assert np.isfinite(y).all()
    back(np.ones_like(y))
    assert graph(x).shape == (2, CLASSES)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**16), kind=st.sampled_from(["dense", "conv1d", "conv2d"]),
       ops=st.lists(st.sampled_from(["nout", "remove", "add", "add_edge", "remove_edge",
                                     "kernel", "activation", "chain"]), min_size=1, max_size=6),
       tracked=st.booleans())
def test_random_mutation_sequences_keep_graphs_valid(seed, kind, ops, tracked):
    graph = random_graph(seed, kind)
    nin = graph.inputs[0].nout
    check_trains(graph, kind, nin)                   # also gives tracked values a first update
    if tracked:
        track_values(graph)
        check_trains(graph, kind, nin)
    ms = mutations(np.random.default_rng(seed + 1))
    for op in ops:
        ms[op](graph)
        assert graph.inputs[0].nout == nin
        assert graph.outputs[0].nout == CLASSES
        check_trains(graph, kind, nin)


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**16), kind=st.sampled_from(["dense", "conv1d", "conv2d"]))
def test_copied_graph_mutations_leave_the_parent_alone(seed, kind):
    parent = random_graph(seed, kind)
    nin = parent.inputs[0].nout
    x = np.random.default_rng(1).standard_normal((2, nin, *SPATIAL[kind])).astype(np.float32)
    y0 = parent(x)
    names = [v.name for v in parent.vertices]
    ms = mutations(np.random.default_rng(seed))
    child = parent.copy()
    for op in ("nout", "add", "remove", "add_edge", "kernel"):
        ms[op](child)
    check_trains(child, kind, nin)
    assert [v.name for v in parent.vertices] == names
    np.testing.assert_array_equal(parent(x), y0)
