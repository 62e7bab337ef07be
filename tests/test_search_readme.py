"""The seed README's search-space examples as tests (structure, not the seed's exact draws)."""

from __future__ import annotations

import numpy as np
import pytest
from search_cases import basic_space, complex_space

import tinyevo as te


def test_parspace_example():
    te.seed(1)
    ps1d = te.ParSpace([2, 4, 6, 10])
    draws = [ps1d() for _ in range(20)]
    assert set(draws) <= {2, 4, 6, 10} and len(set(draws)) > 1
    # another generator than the library one
    assert ps1d(np.random.default_rng(0)) == ps1d(np.random.default_rng(0))
    # any dimension and type
    ps2d = te.ParSpace(["1", "2", "3"], ["4", "5", "6", "7"])
    assert ps1d.ndim == 1 and ps2d.ndim == 2
    a, b = ps2d()
    assert a in ("1", "2", "3") and b in ("4", "5", "6", "7")
    assert all(isinstance(v, int) for v in draws)


def test_parspace_seeded_sequence_repeats():
    ps = te.ParSpace(range(100))
    te.seed(1)
    first = [ps() for _ in range(5)]
    te.seed(1)
    assert [ps() for _ in range(5)] == first


def test_convspace_example():
    te.seed(1)
    cs = te.ConvSpace(2, outsizes=range(4, 33), activations=["relu", "elu", "selu"],
                      kernelsizes=range(3, 10))
    convlayer = cs(16)
    assert isinstance(convlayer, te.layers.Conv)
    assert convlayer.nin == 16 and 4 <= convlayer.nout <= 32
    assert convlayer.activation in ("relu", "elu", "selu")
    assert len(convlayer.kernel_size) == 2 and all(3 <= k <= 9 for k in convlayer.kernel_size)
    y = convlayer(np.ones((1, 16, 11, 7), np.float32))
    assert y.shape == (1, convlayer.nout, 11, 7)                  # "same" padding
    kernels = {cs(16).kernel_size for _ in range(30)}
    assert any(k[0] != k[1] for k in kernels)                     # dimensions drawn independently


def test_basic_example_models():
    te.seed(0)
    space = basic_space(3)

    def model(invertex):
        return te.CompGraph(invertex, space(invertex))

    models = [model(te.input_vertex("input", 5, "dense")) for _ in range(5)]
    sizes = [len(m) for m in models]
    assert all(3 <= n <= 5 for n in sizes)                        # input, 1-3 hidden, output
    for m in models:
        m.validate()
        out = m.outputs[0]
        assert out.shielded and out.nout == 3
        assert all(not v.shielded for v in m.vertices[1:-1])
        assert m(np.ones((4, 5), np.float32)).shape == (4, 3)


def _draws(n: int):
    space = complex_space()
    te.seed(0)
    graphs = []
    for _ in range(n):
        inp = te.input_vertex("input", 3, "conv2d")
        graphs.append(te.CompGraph(inp, space(inp)))
    return graphs


@pytest.fixture(scope="module")
def complex_graphs():
    return _draws(6)


def test_complex_example_structure(complex_graphs):
    sizes = [len(g) for g in complex_graphs]
    assert len(set(sizes)) > 1                                    # draws differ
    assert max(sizes) >= 40
    ops = {v.op for g in complex_graphs for v in g.vertices}
    assert {"input", "layer", "concat", "add"} <= ops
    for g in complex_graphs:
        g.validate()
        out = g.outputs[0]
        assert out.nout == 10 and out.shielded and out.kind == "dense"
        kinds = [type(v.layer).__name__ for v in g.vertices if v.layer is not None]
        assert kinds.count("GlobalPool") == 1
        assert 2 <= kinds.count("MaxPool") <= 4
        spatial = g.shapes((32, 32))
        for v in g.vertices:
            if v.op in ("concat", "add"):                         # merges see equal maps
                assert len({spatial[u][1:] for u in v.inputs}) == 1
            if v.op == "add":
                assert len({u.nout for u in v.inputs}) == 1


def test_complex_example_runs_forward_and_backward(complex_graphs):
    g = min(complex_graphs, key=lambda g: g.nparams())            # the cheapest to run
    assert len(g) >= 10
    x = np.random.default_rng(0).standard_normal((2, 3, 32, 32)).astype(np.float32)
    y, backprop = g.forward(x, train=True)
    assert y.shape == (2, 10) and np.all(np.isfinite(y))
    dx = backprop(np.ones_like(y), need_dx=True)
    assert dx.shape == x.shape
    grads = [layer.grads["weight"] for layer in g.layers() if "weight" in layer.grads]
    assert any(np.any(gr != 0) for gr in grads)
