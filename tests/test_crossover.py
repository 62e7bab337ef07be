"""Crossover: the seed README's examples, pairing and swapping, optimisers, candidates.

The segment surgery itself (separable starts, shape changes, cut, implant) is tested in
test_graph_segment.py."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from graph_cases import chain, inception, residual

import tinyevo as te
from tinyevo.evolution.candidate import CandidateModel, CandidateOptModel, FittedCandidate
from tinyevo.evolution.crossover import (
    CrossoverSwap,
    LearningRateCrossover,
    OptimizerCrossover,
    VertexCrossover,
    crossover_swap,
    evolve_crossover,
)
from tinyevo.evolution.mutation import LogMutation, MutationChain, MutationProbability
from tinyevo.evolution.strategies import EvolveCandidates, PairCandidates
from tinyevo.graph import CompGraph, input_vertex, regraph, vertex
from tinyevo.graph import segment as segment_module
from tinyevo.layers import Dense
from tinyevo.optimizers import SGD, Adam, Momentum


def names(g: CompGraph) -> list[str]:
    return [v.name for v in g.vertices]


# ---------------------------------------------------------------------- the seed README

@pytest.fixture
def models():
    """modelA: 4 dense layers named A.layerN; modelB: an exact copy renamed B.layerN."""
    te.seed(0)
    inv = input_vertex("input", 3, "dense")
    layer1 = vertex(Dense(inv.nout, 4), inv, name="A.layer1")
    layer2 = vertex(Dense(layer1.nout, 5), layer1, name="A.layer2")
    layer3 = vertex(Dense(layer2.nout, 3), layer2, name="A.layer3")
    layer4 = vertex(Dense(layer3.nout, 2), layer3, name="A.layer4")
    model_a = CompGraph(inv, layer4)
    model_b = model_a.copy(rename=lambda s: s.replace("A.", "B.", 1))
    indata = np.arange(1, 7, dtype=np.float32).reshape(2, 3)
    np.testing.assert_array_equal(model_a(indata), model_b(indata))
    assert names(model_a) == ["input", "A.layer1", "A.layer2", "A.layer3", "A.layer4"]
    assert names(model_b) == ["input", "B.layer1", "B.layer2", "B.layer3", "B.layer4"]
    return model_a, model_b, indata


def segment_swapped(child: list[str], own: str, other: str, end: int) -> int:
    """Check child == own prefix + other's run ending at layer `end` + own rest; return start."""
    inner = [n for n in child[1:-1]]
    k = next(i for i, n in enumerate(inner) if n.startswith(other))
    assert inner[:k] == [f"{own}.layer{i}" for i in range(1, k + 1)]
    assert inner[k:] == [f"{other}.layer{i}" for i in range(k + 1, end + 1)]
    assert child[0] == "input" and child[-1] == f"{own}.layer4"
    return k + 1


@pytest.mark.parametrize("seed", range(4))
def test_readme_swapsame(models, seed):
    model_a, model_b, indata = models
    swapsame = CrossoverSwap(rng=np.random.default_rng(seed))
    swap_a, swap_b = model_a.vertices[3], model_b.vertices[3]          # A.layer3, B.layer3
    new_a, new_b = swapsame((swap_a, swap_b))
    # Vertices of new graphs; the parents are not modified.
    assert new_a not in model_a.vertices and new_b not in model_b.vertices
    model_a_new, model_b_new = regraph(new_a), regraph(new_b)
    k = segment_swapped(names(model_a_new), "A", "B", 3)
    assert segment_swapped(names(model_b_new), "B", "A", 3) == k       # the same segment
    assert names(model_a) == ["input", "A.layer1", "A.layer2", "A.layer3", "A.layer4"]
    assert names(model_b) == ["input", "B.layer1", "B.layer2", "B.layer3", "B.layer4"]
    y = model_a(indata)
    for g in (model_b, model_a_new, model_b_new):
        np.testing.assert_array_equal(g(indata), y)


@pytest.mark.parametrize("seed", range(6))
def test_readme_swapdeviation(models, seed):
    model_a, model_b, indata = models
    y_a, y_b = model_a(indata), model_b(indata)
    swapdeviation = CrossoverSwap(0.5, rng=np.random.default_rng(seed))
    swap_a, swap_b = model_a.vertices[3], model_b.vertices[3]
    model_a_new2, model_b_new2 = (regraph(v) for v in swapdeviation((swap_a, swap_b)))
    n_a, n_b = names(model_a_new2), names(model_b_new2)
    # A keeps its input, a prefix and its output; the middle is one run of B's, ending at
    # B.layer3, and B got exactly the A layers that A gave away.
    assert n_a[0] == n_b[0] == "input"
    assert n_a[-1] == "A.layer4" and n_b[-1] == "B.layer4"
    from_b = [n for n in n_a if n.startswith("B.")]
    from_a = [n for n in n_b if n.startswith("A.")]
    assert from_b and from_b[-1] == "B.layer3" and from_a[-1] == "A.layer3"
    assert sorted(n_a[1:-1] + n_b[1:-1]) == sorted(names(model_a)[1:-1] + names(model_b)[1:-1])
    for g, x in ((model_a_new2, indata), (model_b_new2, indata)):
        g.validate()
        assert g(x).shape == (2, 2)
    np.testing.assert_array_equal(model_a(indata), y_a)
    np.testing.assert_array_equal(model_b(indata), y_b)


def test_readme_vertexcrossover(models):
    model_a, model_b, indata = models
    crossoverall = VertexCrossover(CrossoverSwap(0.5), 0.5)
    model_a_new3, model_b_new3 = crossoverall((model_a, model_b))
    for g, own in ((model_a_new3, "A"), (model_b_new3, "B")):
        g.validate()
        assert g(indata).shape == (2, 2)
        assert names(g)[0] == "input" and names(g)[-1] == f"{own}.layer4"
    assert sorted(names(model_a_new3)[1:-1] + names(model_b_new3)[1:-1]) == \
        sorted(names(model_a)[1:-1] + names(model_b)[1:-1])
    assert names(model_a) == ["input", "A.layer1", "A.layer2", "A.layer3", "A.layer4"]


def test_readme_crossoversome_logs(models, caplog):
    model_a, model_b, _ = models
    swapdeviation = CrossoverSwap(0.5)
    crossoversome = VertexCrossover(MutationProbability(LogMutation(
        lambda pair: f"Swap {pair[0].name} and {pair[1].name}", swapdeviation), 0.3))
    calls = []
    with caplog.at_level(logging.INFO, logger="tinyevo.mutation"):
        for _ in range(5):
            caplog.clear()
            crossoversome((model_a, model_b))
            calls.append([r.getMessage().split() for r in caplog.records
                          if r.getMessage().startswith("Swap ")])
    assert any(calls), "with p = 0.3 over 5 x 3 pairs something is swapped"
    for msgs in calls:
        if msgs:     # the first swap of a call pairs the parents' own vertices
            assert msgs[0][1].startswith("A.layer") and msgs[0][3].startswith("B.layer")
        for _, a, _, b in msgs:
            # later swaps of the call pair the children, which may hold the other's segments
            # (as in the seed README: "things got swapped back and forth"); graph outputs
            # (layer4) are never crossed
            assert {a, b} <= {f"{g}.layer{i}" for g in "AB" for i in (1, 2, 3)}


# ---------------------------------------------------------------------- swaps

def test_swap_aligns_sizes_with_zero_weights_for_new_inputs():
    """m2 (4 -> 7) goes where m1 (6 -> 5) was: it reads a's 6 outputs, the two new ones with zero
    weights, and b reads m2's 7 outputs, the two new ones with zero weights."""
    def build(prefix, n0, n1):
        inp = input_vertex("in", 3)
        a = vertex(Dense(3, n0, "relu"), inp, name=f"{prefix}a")
        m = vertex(Dense(n0, n1, "relu"), a, name=f"{prefix}m")
        b = vertex(Dense(n1, 2, "relu"), m, name=f"{prefix}b")
        return CompGraph(inp, vertex(Dense(2, 3), b, name=f"{prefix}out"))

    g1, g2 = build("A.", 6, 5), build("B.", 4, 7)
    w_m2 = g2["B.m"].layer.params["weight"].copy()
    w_b1 = g1["A.b"].layer.params["weight"].copy()
    only_m = lambda v: v.name.endswith("m")  # noqa: E731
    c1, c2, e1, e2 = crossover_swap(g1, g1["A.m"], g2, g2["B.m"], selection=only_m)
    assert names(c1) == ["in", "A.a", "B.m", "A.b", "A.out"]
    assert names(c2) == ["in", "B.a", "A.m", "B.b", "B.out"]
    assert e1 is c1["B.m"] and e2 is c2["A.m"]
    w = c1["B.m"].layer.params["weight"]
    assert w.shape == (7, 6)
    np.testing.assert_array_equal(w[:, :4], w_m2)
    assert not w[:, 4:].any()
    w = c1["A.b"].layer.params["weight"]
    assert w.shape == (2, 7)
    np.testing.assert_array_equal(w[:, :5], w_b1)
    assert not w[:, 5:].any()
    assert c2["A.m"].layer.params["weight"].shape == (5, 4)
    assert c2["B.b"].layer.params["weight"].shape == (2, 5)
    for g in (c1, c2):
        g.validate()
        assert g(np.ones((2, 3), np.float32)).shape == (2, 3)


@pytest.mark.parametrize("build", [residual, inception])
def test_conv_blocks_swap_and_run(build):
    g1 = build("conv2d")
    g2 = build("conv1d").copy(rename="'")
    g3 = build("conv2d").copy(rename=lambda s: "B." + s)
    x = np.ones((2, 3, 5, 5), np.float32)
    for seed in range(5):
        c1, c3 = VertexCrossover(CrossoverSwap(0.5), 0.5, rng=np.random.default_rng(seed))(
            (g1, g3))
        for c in (c1, c3):
            c.validate()
            assert c(x).shape == (2, 3)
        # 2-D and 1-D graphs share no conv segment; only the dense head could pair.
        c1, c2 = CrossoverSwap(rng=np.random.default_rng(seed))((g1, g2))
        assert c1 is g1 and c2 is g2


def test_failure_keeps_the_parents(models, monkeypatch):
    model_a, _, _ = models
    monkeypatch.setattr(segment_module, "_align", lambda *a, **k: False)
    small = chain("dense", sizes=(7, 8, 9))                # every pair needs size alignment
    c1, c2 = CrossoverSwap()((model_a, small))
    assert c1 is model_a and c2 is small


def test_bad_input_is_reported():
    with pytest.raises(TypeError, match="tuple of two"):
        CrossoverSwap()(chain())
    with pytest.raises(TypeError, match="pair of CompGraphs or a pair of Vertex"):
        CrossoverSwap()((1, 2))
    with pytest.raises(ValueError, match="deviation"):
        CrossoverSwap(-1)
    with pytest.raises(TypeError, match="pair of CompGraphs"):
        VertexCrossover(CrossoverSwap())((1, 2))


def count_copies(monkeypatch) -> list:
    copies = []
    copy = CompGraph.copy

    def counted(self, *args, **kwargs):
        copies.append(self)
        return copy(self, *args, **kwargs)
    monkeypatch.setattr(CompGraph, "copy", counted)
    return copies


@pytest.mark.parametrize("wrap", [
    lambda m: m,
    lambda m: MutationProbability(LogMutation(lambda pair: f"{pair[0].name}", m), 1.0),
    lambda m: MutationChain(m, m),
], ids=["bare", "wrapped", "chained"])
def test_vertex_crossover_copies_each_parent_once(monkeypatch, wrap):
    """Within one VertexCrossover call the pairs it hands down (through any wrapper) carry what
    the call made, so later swaps change those graphs in place instead of copying again."""
    g1 = chain("dense", sizes=(4, 5, 6, 7))
    g2 = chain("dense", sizes=(3, 8, 2)).copy(rename="'")
    before1, before2 = names(g1), names(g2)
    copies = count_copies(monkeypatch)
    te.seed(3)
    c1, c2 = VertexCrossover(wrap(CrossoverSwap(0.7)), 0.7)((g1, g2))
    assert names(c1) != before1 and names(c2) != before2
    assert len(copies) <= 2 and all(g in (g1, g2) for g in copies)
    assert (names(g1), names(g2)) == (before1, before2)
    for c in (c1, c2):
        c.validate()


def test_same_seed_same_children():
    def run():
        g1 = chain("dense", sizes=(4, 5, 6, 7))
        g2 = chain("dense", sizes=(3, 8, 2)).copy(rename="'")
        te.seed(7)
        c1, c2 = VertexCrossover(CrossoverSwap(0.7), 0.7)((g1, g2))
        return names(c1), names(c2)
    assert run() == run()


# ---------------------------------------------------------------------- optimisers

def test_optimizer_crossover_swaps_whole_optimizers():
    o1, o2 = Adam(1e-3), Momentum(0.1, rho=0.8)
    n1, n2 = OptimizerCrossover()((o1, o2))
    assert type(n1) is Momentum and n1.learning_rate == 0.1 and n1.rho == 0.8
    assert type(n2) is Adam and n2.learning_rate == 1e-3
    assert n1 is not o2 and n2 is not o1
    k1, k2 = OptimizerCrossover(keep_learning_rate=True)((o1, o2))
    assert type(k1) is Momentum and k1.learning_rate == 1e-3
    assert type(k2) is Adam and k2.learning_rate == 0.1


def test_learning_rate_crossover():
    o1, o2 = Adam(1e-3), SGD(0.5)
    n1, n2 = LearningRateCrossover()((o1, o2))
    assert (type(n1), n1.learning_rate) == (Adam, 0.5)
    assert (type(n2), n2.learning_rate) == (SGD, 1e-3)
    assert (o1.learning_rate, o2.learning_rate) == (1e-3, 0.5)


def test_optimizer_crossover_with_mutation_utilities():
    never = MutationProbability(LearningRateCrossover(), 0.0)
    pair = (Adam(1e-3), SGD(0.5))
    assert never(pair) is pair
    always = MutationProbability(LearningRateCrossover(), 1.0)
    assert [o.learning_rate for o in always(pair)] == [0.5, 1e-3]


# ---------------------------------------------------------------------- candidates

def test_evolve_crossover_on_candidate_pairs(models):
    model_a, model_b, indata = models
    c1 = FittedCandidate(CandidateOptModel(Adam(1e-3), model_a), 0.5, 1)
    c2 = CandidateOptModel(SGD(0.2), model_b)
    f = evolve_crossover(VertexCrossover(CrossoverSwap(0.5), 0.5), LearningRateCrossover())
    n1, n2 = f((c1, c2))
    assert n1.model is not model_a and n2.model is not model_b
    assert (type(n1.optimizer), n1.optimizer.learning_rate) == (Adam, 0.2)
    assert (type(n2.optimizer), n2.optimizer.learning_rate) == (SGD, 1e-3)
    assert names(n1.model)[-1] == "A.layer4" and names(n2.model)[-1] == "B.layer4"
    # Nothing to cross: still fresh models, never the parents'.
    m1, m2 = evolve_crossover()((CandidateModel(model_a), CandidateModel(model_b)))
    assert m1.model is not model_a and names(m1.model) == names(model_a)
    np.testing.assert_array_equal(m1.model(indata), model_a(indata))
    pairs = PairCandidates(EvolveCandidates(f))
    out = pairs([c1, c2, CandidateOptModel(Adam(0.3), model_a.copy())])
    assert len(out) == 3


# ---------------------------------------------------------------------- with the search spaces

@pytest.mark.parametrize("seed", [0, 1])
def test_graphs_from_the_complex_search_space(seed):
    """Two draws of the seed README's complex space (small channel counts) cross over validly."""
    from search_cases import complex_space

    space = complex_space(classes=4, max_channels=12)
    gs = []
    for prefix, s in (("A.", seed), ("B.", seed + 10)):
        inp = input_vertex("input", 3, "conv2d")
        g = CompGraph(inp, space(inp, np.random.default_rng(s)))
        gs.append(g.copy(rename=lambda n, p=prefix: p + n))
    x = np.random.default_rng(0).standard_normal((2, 3, 16, 16)).astype(np.float32)
    y = [g(x) for g in gs]
    rng = np.random.default_rng(seed)
    op = VertexCrossover(MutationProbability(CrossoverSwap(0.3, rng=rng), 0.3, rng=rng), 0.3,
                         rng=rng)
    c1, c2 = op((gs[0], gs[1]))
    assert any(v.name.startswith("B.") for v in c1.vertices)
    for g, yy in zip(gs, y):
        np.testing.assert_array_equal(g(x), yy)
    for c in (c1, c2):
        c.validate()
        out, back = c.forward(x, train=True)
        assert out.shape == (2, 4)
        back(np.ones_like(out))
