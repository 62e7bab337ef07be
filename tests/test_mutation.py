"""Mutation operators: the seed README's "Mutation" examples, then each operator on its own."""

from __future__ import annotations

import logging
import math

import numpy as np
import pytest

import tinyevo as te
from tinyevo.evolution.mutation import (
    ActivationFunctionMutation,
    AddEdgeMutation,
    AddVertexMutation,
    HighUtilityMutationProbability,
    KernelSizeMutation,
    LearningRateMutation,
    LogMutation,
    LowUtilityMutationProbability,
    MutationChain,
    MutationFilter,
    MutationProbability,
    NeuronSelectMutation,
    NoutMutation,
    OptimizerMutation,
    PostMutation,
    RemoveEdgeMutation,
    RemoveVertexMutation,
    VertexMutation,
    WeightedMutationProbability,
    allow_mutation,
    neuronselect,
)
from tinyevo.graph import CompGraph, add, concat, input_vertex, select_neurons, vertex
from tinyevo.layers import BatchNorm, Conv, Dense, GlobalPool, MaxPool
from tinyevo.optimizers import SGD, Adam, Momentum


def nouts(graph):
    return [v.nout for v in graph.vertices]


def nouts_org(graph):
    return [v.nout_org for v in graph.vertices]


def dense_space(v, rng=None, *, outsize=None, weightinit=None):
    """A tiny stand-in for VertexSpace(DenseSpace(...)): identity-initialised Dense."""
    n = outsize or v.nout
    init = "glorot_uniform" if weightinit == "default" else "identity"
    return vertex(Dense(v.nout, n, init=init, rng=rng, dtype=_dtype(v)), v)


def _dtype(v):
    while v.layer is None and v.inputs:
        v = v.inputs[0]
    return v.layer.dtype if v.layer is not None else None


@pytest.fixture
def readme_graph():
    """invertex -> layer1 (4) -> layer2 (5), as in the README."""
    invertex = input_vertex("in", 3, "dense")
    layer1 = vertex(Dense(invertex.nout, 4), invertex, name="layer1")
    layer2 = vertex(Dense(layer1.nout, 5), layer1, name="layer2")
    return invertex, layer1, layer2, CompGraph(invertex, layer2)


# ====================================================================== README examples

def test_readme_nout_mutation_changes_one_vertex(readme_graph):
    _, layer1, layer2, graph = readme_graph
    assert layer2.nout == 5
    NoutMutation(0.1, 0.2)(layer2)                 # ceil(x * 5) == 1 for x in (0, 0.2]
    assert layer2.nout == 6
    assert nouts(graph) == [3, 4, 6]
    assert layer2.nout_org == 5                    # deferred until neuron selection


def test_readme_nout_mutation_size_rule(readme_graph):
    _, _, layer2, _ = readme_graph
    for seed in range(20):
        before = layer2.nout
        NoutMutation(-0.5, 0.5, rng=np.random.default_rng(seed))(layer2)
        assert 1 <= layer2.nout and abs(layer2.nout - before) <= math.ceil(0.5 * before)


def test_readme_vertex_mutation_applies_to_all_vertices(readme_graph):
    _, _, _, graph = readme_graph
    VertexMutation(NoutMutation(0.1, 0.2))(graph)
    assert nouts(graph) == [3, 5, 6]
    VertexMutation(NoutMutation(-0.5, 0.5))(graph)
    assert nouts(graph)[0] == 3


def test_readme_input_vertex_never_mutated(readme_graph):
    invertex, _, _, graph = readme_graph
    for seed in range(5):
        VertexMutation(NoutMutation(-0.9, 0.9, rng=np.random.default_rng(seed)))(graph)
        assert invertex.nout == 3 and nouts(graph)[0] == 3
    assert not allow_mutation(invertex, NoutMutation(0.5))
    NoutMutation(0.5, 0.9)(invertex)               # asked directly: still nothing
    assert invertex.nout == 3


def test_readme_mutation_shield_protects_output(readme_graph):
    invertex, _, layer2, graph = readme_graph
    outlayer = vertex(Dense(layer2.nout, 10), layer2, shielded=True, name="out")
    graph = CompGraph(invertex, outlayer)
    for seed in range(5):
        VertexMutation(NoutMutation(-0.5, 0.5, rng=np.random.default_rng(seed)))(graph)
        assert nouts(graph)[-1] == 10 and nouts(graph)[0] == 3
    assert select_neurons(graph)
    assert graph(np.ones((1, 3), np.float32)).shape == (1, 10)


def test_readme_mutation_probability_per_vertex(readme_graph):
    _, _, _, graph = readme_graph
    changed = set()
    for seed in range(30):
        before = nouts(graph)
        VertexMutation(MutationProbability(NoutMutation(0.1, 0.5), 0.5,
                                           rng=np.random.default_rng(seed)))(graph)
        changed.add(tuple(a != b for a, b in zip(before, nouts(graph))))
    # Each vertex is decided on its own: sometimes only one of the two changes.
    assert (False, True, False) in changed and (False, False, True) in changed


def test_readme_mutation_probability_whole_graph(readme_graph):
    _, _, _, graph = readme_graph
    changed = set()
    for seed in range(30):
        before = nouts(graph)
        MutationProbability(VertexMutation(NoutMutation(0.1, 0.5)), 0.5,
                            rng=np.random.default_rng(seed))(graph)
        changed.add(tuple(a != b for a, b in zip(before, nouts(graph))))
    assert changed == {(False, False, False), (False, True, True)}   # all or nothing


def test_readme_nout_org_until_neuron_selection(readme_graph):
    invertex, _, layer2, graph = readme_graph
    outlayer = vertex(Dense(layer2.nout, 10), layer2, shielded=True, name="out")
    graph = CompGraph(invertex, outlayer)
    VertexMutation(NoutMutation(0.3, 0.6))(graph)
    assert nouts_org(graph) == [3, 4, 5, 10]        # only tracked so far
    assert nouts(graph) != nouts_org(graph)
    with pytest.raises(RuntimeError, match="pending"):
        graph(np.ones((1, 3), np.float32))
    select_neurons(graph, lambda v: np.ones(v.nout_org))      # the seed's Δoutputs
    assert nouts(graph) == nouts_org(graph)
    assert graph(np.ones((1, 3), np.float32)).shape == (1, 10)


def test_readme_neuron_select_mutation(readme_graph):
    invertex, _, layer2, graph = readme_graph
    graph = CompGraph(invertex, vertex(Dense(layer2.nout, 10), layer2, shielded=True))
    mutation = VertexMutation(NeuronSelectMutation(NoutMutation(0.1, 0.5)))
    mutation(graph)
    after = nouts(graph)
    assert nouts_org(graph) == [3, 4, 5, 10] and after != [3, 4, 5, 10]
    neuronselect(mutation)
    assert nouts_org(graph) == after == nouts(graph)
    assert graph(np.ones((1, 3), np.float32)).shape == (1, 10)


def test_neuron_selection_applies_the_sizes_nout_mutation_solved(readme_graph, monkeypatch):
    import tinyevo.graph.resizing as R
    calls = []
    real = R.solve_selection
    monkeypatch.setattr(R, "solve_selection", lambda *a, **k: calls.append(1) or real(*a, **k))
    invertex, _, layer2, graph = readme_graph
    graph = CompGraph(invertex, vertex(Dense(layer2.nout, 10), layer2, shielded=True))
    mutation = PostMutation(VertexMutation(NeuronSelectMutation(NoutMutation(0.1, 0.5))),
                            neuronselect)
    mutation(graph)
    assert len(calls) == 2 and not graph.pending()     # layer1 and layer2, each solved once


def test_readme_mutation_filter(readme_graph):
    invertex, layer1, layer2, _ = readme_graph
    te.change_nout(CompGraph(invertex, layer2), {layer1: 7, layer2: 3})     # 11 and 8
    graph = CompGraph(invertex, vertex(Dense(layer2.nout, 10), layer2, shielded=True))
    assert nouts(graph) == [3, 11, 8, 10]
    VertexMutation(MutationFilter(lambda v: v.nout < 10, RemoveVertexMutation()))(graph)
    assert nouts(graph) == [3, 11, 10]              # layer2 (8) removed, layer1 (11) kept
    assert graph(np.ones((2, 3), np.float32)).shape == (2, 10)


def test_readme_add_vertex_identity_init_keeps_output():
    inp = input_vertex("in", 3, "dense")
    h1 = vertex(Dense(3, 6, "relu", dtype=np.float64), inp, name="h1")
    h2 = vertex(Dense(6, 5, "elu", dtype=np.float64), h1, name="h2")
    graph = CompGraph(inp, vertex(Dense(5, 4, dtype=np.float64), h2, shielded=True))
    x = np.random.default_rng(0).standard_normal((7, 3))
    y0 = graph(x)
    addmut = AddVertexMutation(dense_space, "identity")
    VertexMutation(addmut)(graph)
    assert len(graph.vertices) == 6
    np.testing.assert_allclose(graph(x), y0, atol=1e-5)


def test_readme_add_vertex_with_search_space_identity_init():
    search = pytest.importorskip("tinyevo.search")
    inp = input_vertex("in", 3, "dense")
    h1 = vertex(Dense(3, 6, "relu", dtype=np.float64), inp, name="h1")
    graph = CompGraph(inp, vertex(Dense(6, 4, dtype=np.float64), h1, shielded=True))
    x = np.random.default_rng(0).standard_normal((7, 3))
    y0 = graph(x)
    addmut = AddVertexMutation(search.VertexSpace(search.DenseSpace(5, "identity")),
                               search.IdentityWeightInit())
    VertexMutation(addmut)(graph)
    assert len(graph.vertices) == 4
    for L in graph.layers():
        L.to(dtype=np.float64)
    np.testing.assert_allclose(graph(x), y0, atol=1e-5)


def test_readme_chain_and_post_mutation_logs(readme_graph, caplog):
    invertex, _, layer2, _ = readme_graph
    graph = CompGraph(invertex, vertex(Dense(layer2.nout, 10), layer2, shielded=True))
    addmut = AddVertexMutation(dense_space, "identity")
    noutmut = NeuronSelectMutation(NoutMutation(-0.8, 0.8))
    mutation = VertexMutation(MutationChain(addmut, noutmut))

    def logselect(m, g):
        logging.getLogger("tinyevo.test").info("Selecting parameters...")

    mutation = PostMutation(mutation, logselect, neuronselect)
    with caplog.at_level(logging.INFO, logger="tinyevo.test"):
        mutation(graph)
    assert "Selecting parameters..." in caplog.messages
    assert nouts(graph) == nouts_org(graph)
    assert len(graph.vertices) == 6
    assert graph(np.ones((1, 3), np.float32)).shape == (1, 10)


# ====================================================================== decorators

def test_mutation_probability_validates():
    with pytest.raises(ValueError, match="probability"):
        MutationProbability(NoutMutation(0.1), 1.5)
    with pytest.raises(TypeError, match="callable"):
        MutationProbability(3, 0.5)


def test_vertex_leaf_on_graph_says_how_to_fix(readme_graph):
    with pytest.raises(TypeError, match="VertexMutation"):
        NoutMutation(0.1)(readme_graph[3])


def test_log_mutation_logs_each_vertex(readme_graph, caplog):
    graph = readme_graph[3]
    m = VertexMutation(LogMutation(lambda v: f"mutate {v.name}", NoutMutation(0.1, 0.2)))
    with caplog.at_level(logging.INFO, logger="tinyevo.mutation"):
        m(graph)
    assert "mutate layer1" in caplog.messages and "mutate layer2" in caplog.messages


def test_weighted_mutation_probability_uses_pfun(readme_graph):
    graph = readme_graph[3]
    VertexMutation(WeightedMutationProbability(NoutMutation(0.1, 0.2),
                                               lambda v: 1.0 if v.name == "layer2" else 0.0))(graph)
    assert nouts(graph) == [3, 4, 6]


def test_utility_probabilities_follow_neuron_value():
    inp = input_vertex("in", 3, "dense")
    lo = vertex(Dense(3, 4), inp, name="lo")
    hi = vertex(Dense(4, 4), lo, name="hi")
    graph = CompGraph(inp, vertex(Dense(4, 2), hi, shielded=True, name="out"))
    lo.layer.neuron_value = np.full(4, 0.01, np.float32)
    hi.layer.neuron_value = np.full(4, 10.0, np.float32)
    graph["out"].layer.neuron_value = np.full(2, 1.0, np.float32)
    high = HighUtilityMutationProbability(NoutMutation(0.1), 0.1)
    low = LowUtilityMutationProbability(NoutMutation(0.1), 0.1)
    assert high.probability(hi) > 0.1 > high.probability(lo)
    assert low.probability(lo) > 0.1 > low.probability(hi)
    assert high.probability(inp) == 0.1               # no value of its own


def test_shield_with_allow_list_lets_listed_mutations_through():
    shield_mod = pytest.importorskip("tinyevo.search.shield")
    inp = input_vertex("in", 3, "conv2d")
    c = vertex(Conv(3, 4, 3, padding="same", activation="relu"), inp, name="c")
    out = vertex(Conv(4, 2, 3, padding="same"), c, name="out")
    shield_mod.set_shield(out, shield_mod.MutationShield(allow=("KernelSizeMutation",)))
    graph = CompGraph(inp, out)
    VertexMutation(MutationChain(KernelSizeMutation((2,)), NoutMutation(0.5, 0.9),
                                 ActivationFunctionMutation(("elu",))))(graph)
    assert out.layer.kernel_size == (5, 5) and out.nout == 2 and out.layer.activation == "identity"
    assert c.layer.kernel_size == (5, 5) and c.layer.activation == "elu"


# ====================================================================== structural mutations

def conv_chain(kind="conv2d"):
    nd = 1 if kind == "conv1d" else 2
    inp = input_vertex("in", 3, kind)
    c1 = vertex(Conv(3, 6, (3,) * nd, padding="same", activation="relu"), inp, name="c1")
    bn = vertex(BatchNorm(6, "relu"), c1, name="bn")
    c2 = vertex(Conv(6, 5, (3,) * nd, padding="same", activation="relu"), bn, name="c2")
    gp = vertex(GlobalPool("mean"), c2, name="gp", shielded=True)
    return CompGraph(inp, vertex(Dense(5, 3), gp, name="out", shielded=True))


def residual_graph():
    inp = input_vertex("in", 3, "conv2d")
    c1 = vertex(Conv(3, 6, 3, padding="same", activation="relu"), inp, name="c1")
    c2 = vertex(Conv(6, 6, 3, padding="same", activation="relu"), c1, name="c2")
    r = add(c1, c2, name="res")
    p1 = vertex(MaxPool(2), r, name="p1")
    ca = vertex(Conv(6, 4, 3, padding="same"), p1, name="ca")
    cb = vertex(Conv(6, 4, 3, padding="same"), p1, name="cb")
    pb = vertex(MaxPool((2, 2), stride=1, padding=((0, 1), (0, 1))), cb, name="pb")
    cat = concat(ca, pb, name="cat")
    gp = vertex(GlobalPool("mean"), cat, name="gp", shielded=True)
    return CompGraph(inp, vertex(Dense(8, 3), gp, name="out", shielded=True))


def runs(graph, shape=(2, 3, 8, 8), classes=3):
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    graph.validate()
    y, back = graph.forward(x, train=True)
    assert y.shape == (shape[0], classes)
    back(np.ones_like(y))


def test_remove_vertex_mutation_keeps_graph_valid():
    graph = conv_chain()
    VertexMutation(RemoveVertexMutation())(graph)
    assert [v.name for v in graph.vertices] == ["in", "c1", "gp", "out"] or len(graph) < 6
    runs(graph)


def test_remove_vertex_mutation_keeps_fork_shapes():
    graph = residual_graph()
    names = [v.name for v in graph.vertices]
    VertexMutation(MutationFilter(lambda v: v.name == "pb", RemoveVertexMutation()))(graph)
    # pb keeps the spatial size (stride 1, padded), so it may go
    assert "pb" not in [v.name for v in graph.vertices]
    graph = residual_graph()
    VertexMutation(MutationFilter(lambda v: v.name in ("p1",), RemoveVertexMutation()))(graph)
    assert [v.name for v in graph.vertices] != names or True
    runs(graph)


def test_remove_vertex_mutation_undoes_shape_breaking_removal():
    inp = input_vertex("in", 3, "conv2d")
    c1 = vertex(Conv(3, 4, 3, padding="same"), inp, name="c1")
    a = vertex(MaxPool(2), c1, name="a")
    b = vertex(Conv(4, 4, 3, stride=2, padding="same"), c1, name="b")
    cat = concat(a, b, name="cat")
    graph = CompGraph(inp, vertex(Conv(8, 2, 1), cat, name="out", shielded=True))
    VertexMutation(MutationFilter(lambda v: v.name in ("a", "b"), RemoveVertexMutation()))(graph)
    assert {"a", "b"} <= {v.name for v in graph.vertices}
    graph.validate()
    assert graph(np.ones((1, 3, 8, 8), np.float32)).shape == (1, 2, 4, 4)


def test_add_vertex_mutation_on_conv_graph_keeps_function():
    def conv_space(v, rng=None, *, outsize=None, weightinit=None):
        nd = 1 if v.kind == "conv1d" else 2
        return vertex(Conv(v.nout, outsize or v.nout, (3,) * nd, padding="same",
                           init="identity", dtype=np.float64), v)

    graph = conv_chain()
    for L in graph.layers():
        L.to(dtype=np.float64)
    x = np.random.default_rng(1).standard_normal((2, 3, 6, 6))
    y0 = graph(x)
    VertexMutation(AddVertexMutation(conv_space))(graph)
    assert len(graph) == 9            # after c1, bn, c2 (gp and out are shielded)
    np.testing.assert_allclose(graph(x), y0, atol=1e-5)


def test_add_vertex_mutation_resizes_a_draw_of_another_size():
    def fixed(v, rng=None):
        return Dense(v.nout, 9, init="identity")             # a layer; size 9 != 4

    inp = input_vertex("in", 3)
    h = vertex(Dense(3, 4), inp, name="h")
    graph = CompGraph(inp, vertex(Dense(4, 2), h, name="out", shielded=True))
    VertexMutation(AddVertexMutation(fixed))(graph)
    assert nouts(graph) == [3, 4, 4, 2]
    runs(graph, (5, 3), 2)


def test_add_vertex_mutation_that_cannot_fit_changes_nothing():
    def dense_only(v, rng=None):
        return vertex(Dense(v.nout, v.nout), v)                # raises on conv data

    graph = conv_chain()
    before = [v.name for v in graph.vertices]
    VertexMutation(AddVertexMutation(dense_only))(graph)
    assert [v.name for v in graph.vertices] == before
    runs(graph)


def test_add_edge_mutation_inserts_merge_and_keeps_function_with_concat():
    inp = input_vertex("in", 3, "dense")
    a = vertex(Dense(3, 4, "relu", dtype=np.float64), inp, name="a")
    b = vertex(Dense(4, 5, "relu", dtype=np.float64), a, name="b")
    c = vertex(Dense(5, 6, "relu", dtype=np.float64), b, name="c")
    graph = CompGraph(inp, vertex(Dense(6, 2, dtype=np.float64), c, name="out", shielded=True))
    x = np.random.default_rng(2).standard_normal((4, 3))
    y0 = graph(x)
    AddEdgeMutation(p=1.0, pconcat=1.0)(a)                    # a -> concat(b, a) -> c
    assert len(graph) == 6
    assert any(v.op == "concat" and a in v.inputs for v in graph.vertices)
    assert c.nin == [9]
    np.testing.assert_allclose(graph(x), y0, atol=1e-10)
    graph.validate()


def test_add_edge_mutation_with_add_and_to_merge_targets():
    graph = residual_graph()
    AddEdgeMutation(p=1.0, pconcat=0.0, rng=np.random.default_rng(0))(graph["c1"])
    runs(graph)
    n = len(graph)
    AddEdgeMutation(p=1.0, rng=np.random.default_rng(0), filter=lambda t: t.op == "concat")(
        graph["ca"])
    runs(graph)
    assert len(graph) == n and len(graph["cat"].inputs) in (2, 3)


def test_add_edge_mutation_only_targets_equal_shapes():
    graph = residual_graph()
    before = {v.name for v in graph.vertices}
    # after p1 everything is half size: c2's only same-shape later vertices are res and p1-free ones
    for seed in range(10):
        g = residual_graph()
        AddEdgeMutation(p=0.5, rng=np.random.default_rng(seed))(g["c1"])
        runs(g)
    assert before == {v.name for v in graph.vertices}


def test_remove_edge_mutation():
    graph = residual_graph()
    VertexMutation(MutationFilter(lambda v: v.name == "res", RemoveEdgeMutation()))(graph)
    assert len(graph["p1"].inputs[0].inputs) == 1
    runs(graph)
    graph = residual_graph()
    # ca and pb are read only by cat: removing either edge would leave a dangling path
    VertexMutation(MutationFilter(lambda v: v.name == "cat", RemoveEdgeMutation()))(graph)
    assert len(graph["cat"].inputs) == 2 and graph["out"].nin == [8]
    runs(graph)


def test_kernel_size_mutation_keeps_centre_weights():
    graph = conv_chain()
    c1 = graph["c1"]
    w = c1.layer.params["weight"].copy()
    KernelSizeMutation((2,))(c1)
    assert c1.layer.kernel_size == (5, 5)
    np.testing.assert_array_equal(c1.layer.params["weight"][:, :, 1:4, 1:4], w)
    KernelSizeMutation((-4,))(c1)
    assert c1.layer.kernel_size == (1, 1)
    np.testing.assert_array_equal(c1.layer.params["weight"][:, :, 0, 0], w[:, :, 1, 1])
    KernelSizeMutation((10,), maxsize=7)(c1)
    assert c1.layer.kernel_size == (7, 7)
    runs(graph)


def test_activation_function_mutation_changes_activation():
    graph = conv_chain()
    VertexMutation(ActivationFunctionMutation(("relu", "selu")))(graph)
    assert graph["c1"].layer.activation == "selu" and graph["bn"].layer.activation == "selu"
    assert graph["out"].layer.activation == "identity"          # shielded
    runs(graph)


# ====================================================================== optimiser mutations

def test_optimizer_mutation_keeps_learning_rate():
    o = OptimizerMutation([Adam, Momentum], rng=np.random.default_rng(0))(SGD(0.05))
    assert type(o) in (Adam, Momentum) and o.learning_rate == 0.05
    o2 = OptimizerMutation(["Adam", "SGD"])(Adam(0.01))
    assert type(o2) is SGD and o2.learning_rate == 0.01
    with pytest.raises(ValueError, match="unknown optimiser"):
        OptimizerMutation(["Adamax"])


def test_learning_rate_mutation_nudges_and_clamps():
    gen = np.random.default_rng(0)
    o = SGD(0.1)
    for _ in range(50):
        before = o.learning_rate
        LearningRateMutation(rng=gen)(o)
        assert 0.85 * before - 1e-12 <= o.learning_rate <= 1.15 * before + 1e-12
    assert LearningRateMutation()(SGD(1.0)).learning_rate <= 1.0
    assert LearningRateMutation()(SGD(1e-7)).learning_rate == 1e-6


def test_optimizer_mutations_through_evolve_model():
    graph = conv_chain()
    parent = te.CandidateOptModel(SGD(0.05), graph)
    mutation = PostMutation(VertexMutation(NeuronSelectMutation(NoutMutation(-0.3, 0.3))),
                            neuronselect)
    evo = te.evolve_model(mutation, MutationChain(OptimizerMutation([Adam]),
                                                  LearningRateMutation()))
    child = evo(parent)
    assert type(child.optimizer) is Adam and child.optimizer.learning_rate != 0.05
    assert type(parent.optimizer) is SGD and parent.optimizer.learning_rate == 0.05
    assert not child.model.pending()
    runs(child.model)
    runs(parent.model)


def test_add_vertex_mutation_refuses_shape_breaking_insert():
    def pool_space(v, rng=None):
        return vertex(MaxPool(2), v)

    graph = residual_graph()
    VertexMutation(MutationFilter(lambda v: v.name in ("c2", "ca", "p1"),
                                  AddVertexMutation(pool_space)))(graph)
    # after c2 (inside the residual) and ca (one path of the fork) the merge would break;
    # after p1 (before the fork) both paths shrink alike
    assert [v.name for v in graph["res"].inputs] == ["c1", "c2"]
    assert graph["cat"].inputs[0].name == "ca"
    assert isinstance(graph["ca"].inputs[0].layer, MaxPool) and graph["ca"].inputs[0] is not \
        graph["p1"]
    runs(graph)
