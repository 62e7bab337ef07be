"""Property tests: random crossover sequences between random graphs never raise, give children that
validate and run forward and backward with the right output shape, and never modify the parents.

The graphs come from a small generator of their own (conv + BatchNorm units, forks joined by
concat, residual adds, downsampling, global pooling into dense layers; 1-D, 2-D and dense).
"""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tinyevo.evolution.crossover import CrossoverSwap, VertexCrossover
from tinyevo.graph import CompGraph, add, concat, input_vertex, regraph, vertex
from tinyevo.layers import BatchNorm, Conv, Dense, GlobalPool, MaxPool, MeanPool

SPATIAL = {"dense": (), "conv1d": (12,), "conv2d": (8, 8)}
CLASSES = 3
ACTS = ("relu", "elu", "selu", "identity")


# ---------------------------------------------------------------------- a random graph generator

class _Gen:
    def __init__(self, rng: np.random.Generator, prefix: str) -> None:
        self.rng, self.prefix, self.count = rng, prefix, 0

    def name(self, stem: str) -> str:
        self.count += 1
        return f"{self.prefix}{stem}{self.count}"

    def size(self) -> int:
        return int(self.rng.integers(2, 7))

    def layer(self, v, nout: int | None = None):
        nout = nout or self.size()
        act = ACTS[int(self.rng.integers(len(ACTS)))]
        if v.kind == "dense":
            lay = Dense(v.nout, nout, act)
        else:
            nd = 1 if v.kind == "conv1d" else 2
            k = int(self.rng.choice([1, 3]))
            lay = Conv(v.nout, nout, k, padding="same", activation=act, ndim=nd)
        return vertex(lay, v, name=self.name("l"))

    def bn(self, v):
        return vertex(BatchNorm(v.nout, "relu"), v, name=self.name("bn"))

    def unit(self, v, nout: int | None = None):
        """layer, layer -> bn, or bn -> layer."""
        r = int(self.rng.integers(3))
        if r == 0:
            return self.layer(v, nout)
        if r == 1:
            return self.bn(self.layer(v, nout))
        return self.layer(self.bn(v), nout)

    def chain(self, v, nout: int | None = None):
        n = int(self.rng.integers(1, 3))
        for i in range(n):
            v = self.unit(v, nout if i == n - 1 else None)
        return v

    def block(self, v, downsampled: list):
        r = int(self.rng.integers(5))
        if r == 1:                                         # fork joined by concat
            paths = [self.chain(v) for _ in range(int(self.rng.integers(2, 4)))]
            return concat(*paths, name=self.name("cat"))
        if r == 2:                                         # residual add
            return add(v, self.chain(v, v.nout), name=self.name("res"))
        if r == 3 and v.kind != "dense" and not downsampled:
            downsampled.append(True)
            if self.rng.random() < 0.5:
                pool = (MaxPool if self.rng.random() < 0.5 else MeanPool)(2)
                return vertex(pool, v, name=self.name("pool"))
            nd = 1 if v.kind == "conv1d" else 2
            return vertex(Conv(v.nout, self.size(), 3, stride=2, padding="same", ndim=nd), v,
                          name=self.name("down"))
        return self.chain(v)

    def graph(self, kind: str) -> CompGraph:
        inp = input_vertex(self.prefix + "in", 3, kind)
        v, downsampled = inp, []
        for _ in range(int(self.rng.integers(1, 4))):
            v = self.block(v, downsampled)
        if kind != "dense":
            v = vertex(GlobalPool("mean"), v, name=self.name("gpool"))
            for _ in range(int(self.rng.integers(0, 2))):
                v = self.unit(v)
        return CompGraph(inp, vertex(Dense(v.nout, CLASSES), v, name=self.prefix + "out",
                                     shielded=True))


def random_graph(seed: int, kind: str, prefix: str) -> CompGraph:
    return _Gen(np.random.default_rng(seed), prefix).graph(kind)


def data(kind: str, batch: int = 2) -> np.ndarray:
    return np.random.default_rng(0).standard_normal((batch, 3, *SPATIAL[kind])).astype(np.float32)


def fingerprint(g: CompGraph) -> list:
    """Names, links and every array of a graph: equal before and after a crossover."""
    out = []
    for v in g.vertices:
        arrays = {} if v.layer is None else {k: a.copy() for k, a in v.layer.arrays().items()}
        out.append((v.name, tuple(u.name for u in v.inputs), tuple(o.name for o in v.outputs),
                    v.nout, arrays))
    return out


def same(a: list, b: list) -> bool:
    return len(a) == len(b) and all(
        x[:-1] == y[:-1] and x[-1].keys() == y[-1].keys()
        and all(np.array_equal(x[-1][k], y[-1][k]) for k in x[-1]) for x, y in zip(a, b))


def check_child(g: CompGraph, kind: str) -> None:
    g.validate()
    x = data(kind)
    y = g(x)
    assert y.shape == (2, CLASSES)
    assert np.isfinite(y).all()
    y, back = g.forward(x, train=True)
    dx = back(np.ones_like(y), need_dx=True)
    assert dx.shape == x.shape
    for layer in g.layers():
        for k, p in layer.params.items():
            assert layer.grads[k].shape == p.shape


class Sometimes:
    """A stand-in probability wrapper for a vertex-level crossover (tuple in, tuple out)."""

    def __init__(self, m, p: float, rng: np.random.Generator) -> None:
        self.m, self.p, self.rng = m, p, rng

    def __call__(self, pair):
        return self.m(pair) if self.rng.random() < self.p else pair


def operator(code: int, dev: float, rng: np.random.Generator):
    if code == 0:
        return CrossoverSwap(dev, rng=rng)
    if code == 1:
        return VertexCrossover(Sometimes(CrossoverSwap(dev, rng=rng), 0.3, rng), dev, rng=rng)
    return VertexCrossover(CrossoverSwap(dev, rng=rng), dev, rng=rng)


KINDS = st.sampled_from(["dense", "conv1d", "conv2d"])


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed1=st.integers(0, 10_000), seed2=st.integers(0, 10_000), kind=KINDS,
       other=st.sampled_from(["same", "other"]),
       ops=st.lists(st.tuples(st.integers(0, 2), st.sampled_from([0.0, 0.3, 1.0])),
                    min_size=1, max_size=3),
       rseed=st.integers(0, 2**31))
def test_random_crossovers_give_valid_children(seed1, seed2, kind, other, ops, rseed):
    kind2 = kind if other == "same" else {"dense": "conv1d", "conv1d": "conv2d",
                                          "conv2d": "conv1d"}[kind]
    g1, g2 = random_graph(seed1, kind, "A."), random_graph(seed2, kind2, "B.")
    rng = np.random.default_rng(rseed)
    for code, dev in ops:
        before1, before2 = fingerprint(g1), fingerprint(g2)
        y1, y2 = g1(data(kind)), g2(data(kind2))
        c1, c2 = operator(code, dev, rng)((g1, g2))
        assert same(fingerprint(g1), before1) and same(fingerprint(g2), before2)
        np.testing.assert_array_equal(g1(data(kind)), y1)
        np.testing.assert_array_equal(g2(data(kind2)), y2)
        check_child(c1, kind)
        check_child(c2, kind2)
        # Children keep their parent's graph input and output.
        assert c1.inputs[0].name == "A.in" and c1.outputs[0].name == "A.out"
        assert c2.inputs[0].name == "B.in" and c2.outputs[0].name == "B.out"
        g1, g2 = c1, c2


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10_000), kind=KINDS, rseed=st.integers(0, 2**31))
def test_swap_with_a_copy_without_deviation_preserves_the_function(seed, kind, rseed):
    """Equal graphs swap equal segments: children compute exactly what the parents do."""
    g1 = random_graph(seed, kind, "A.")
    g2 = g1.copy(rename=lambda s: "B." + s[2:])
    rng = np.random.default_rng(rseed)
    c1, c2 = CrossoverSwap(rng=rng)((g1, g2))
    x = data(kind)
    np.testing.assert_array_equal(c1(x), g1(x))
    np.testing.assert_array_equal(c2(x), g1(x))
    n1, n2 = [v.name for v in c1.vertices], [v.name for v in c2.vertices]
    assert [s[2:] for s in n1] == [s[2:] for s in n2] == [v.name[2:] for v in g1.vertices]


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed1=st.integers(0, 10_000), seed2=st.integers(0, 10_000), kind=KINDS,
       dev=st.sampled_from([0.0, 0.5]), rseed=st.integers(0, 2**31))
def test_vertex_form_swaps_whole_segments(seed1, seed2, kind, dev, rseed):
    """Every vertex ends up in exactly one child; each child got the other one's segment end."""
    g1, g2 = random_graph(seed1, kind, "A."), random_graph(seed2, kind, "B.")
    rng = np.random.default_rng(rseed)
    swap = CrossoverSwap(dev, rng=rng)
    v1 = g1.vertices[int(rng.integers(1, len(g1) - 1))]
    v2 = g2.vertices[int(rng.integers(1, len(g2) - 1))]
    u1, u2 = swap((v1, v2))
    if u1 is v1 and u2 is v2:
        return
    c1, c2 = regraph(u1, like=g1), regraph(u2, like=g2)
    check_child(c1, kind)
    check_child(c2, kind)
    if u1 is not v1 and u2 is not v2:
        names = sorted(v.name for g in (c1, c2) for v in g.vertices
                       if not v.name.endswith(".merge"))
        assert names == sorted(v.name for g in (g1, g2) for v in g.vertices)
        assert u1.name == v2.name and u2.name == v1.name
