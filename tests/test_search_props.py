"""Property tests: random spaces always give graphs that validate and run forward and backward."""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tinyevo as te

KINDS = {"dense": 0, "conv1d": 1, "conv2d": 2}
ACTS = ["identity", "relu", "elu", "selu", "tanh"]


@st.composite
def spaces(draw, kind: str, depth: int = 2):
    """A random architecture space for ``kind`` data that never changes the kind."""
    nd = KINDS[kind]
    acts = draw(st.lists(st.sampled_from(ACTS), min_size=1, max_size=3))
    sizes = range(1, draw(st.integers(1, 6)) + 1)
    if nd == 0:
        layer = te.DenseSpace(sizes, acts)
    else:
        layer = te.ConvSpace(nd, sizes, acts, range(1, draw(st.integers(1, 4)) + 1),
                             strides=draw(st.sampled_from([1, [1, 2]])),
                             dilations=draw(st.sampled_from([1, [1, 2]])))
    leaves = [te.VertexSpace(layer), te.VertexSpace(te.BatchNormSpace(acts)), te.NoOpArchSpace()]
    if nd:
        leaves.append(te.VertexSpace(te.PoolSpace(nd, range(1, 4), poolfuns=("max", "mean"))))
    leaf = draw(st.sampled_from(leaves))
    if depth == 0:
        return leaf
    inner = [draw(spaces(kind, depth - 1)) for _ in range(draw(st.integers(1, 3)))]
    combos = [
        lambda: te.ArchSpaceChain(*inner),
        lambda: te.ArchSpace(*inner),
        lambda: te.RepeatArchSpace(inner[0], range(0, 3)),
        lambda: te.ForkArchSpace(inner[0], range(1, 4)),
        lambda: te.ResidualArchSpace(te.ArchSpaceChain(*inner)),
        lambda: leaf,
    ]
    return draw(st.sampled_from(combos))()


@st.composite
def cases(draw):
    kind = draw(st.sampled_from(sorted(KINDS)))
    space = draw(spaces(kind))
    head = te.VertexSpace(te.DenseSpace(3), shielded=True)
    if kind != "dense":
        head = te.ArchSpaceChain(te.GlobalPoolSpace(draw(st.sampled_from(["mean", "max"]))), head)
    spatial = tuple(draw(st.integers(1, 6)) for _ in range(KINDS[kind]))
    return kind, te.ArchSpaceChain(space, head), spatial, draw(st.integers(0, 2**16))


@settings(max_examples=30, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(cases(), st.booleans())
def test_random_spaces_give_runnable_graphs(case, identity):
    kind, space, spatial, seed = case
    nin = 3
    inp = te.input_vertex("in", nin, kind)
    wi = te.IdentityWeightInit() if identity else None
    graph = te.CompGraph(inp, space(inp, np.random.default_rng(seed), weightinit=wi))
    graph.validate()
    x = np.random.default_rng(seed).standard_normal((2, nin, *spatial)).astype(np.float32)
    y, backprop = graph.forward(x, train=True)
    assert y.shape == (2, 3) and np.all(np.isfinite(y))
    dx = backprop(np.ones_like(y), need_dx=True)
    assert dx.shape == x.shape
    # drawing again with the same seed gives the same structure
    inp2 = te.input_vertex("in", nin, kind)
    again = te.CompGraph(inp2, space(inp2, np.random.default_rng(seed), weightinit=wi))
    assert [type(v.layer).__name__ + v.op for v in again.vertices] == \
        [type(v.layer).__name__ + v.op for v in graph.vertices]


@settings(max_examples=30, deadline=None, derandomize=True)
@given(st.sampled_from(sorted(KINDS)), st.data())
def test_identity_insertion_keeps_the_function(kind, data):
    """What AddVertexMutation does: a space drawn with an identity init and outsize = nout."""
    space = data.draw(spaces(kind))
    seed = data.draw(st.integers(0, 2**16))
    spatial = (5, 4)[: KINDS[kind]]
    inp = te.input_vertex("in", 4, kind)
    out = space(inp, np.random.default_rng(seed), outsize=4, weightinit=te.IdentityWeightInit())
    graph = te.CompGraph(inp, out)
    x = np.random.default_rng(seed).standard_normal((2, 4, *spatial)).astype(np.float32)
    y = graph(x)
    if y.shape == x.shape and not any(
            isinstance(v.layer, (te.layers.MaxPool, te.layers.MeanPool))
            or getattr(v.layer, "stride", (1,)) != (1,) * max(1, KINDS[kind])
            for v in graph.vertices):
        np.testing.assert_allclose(y, x, atol=1e-5)
