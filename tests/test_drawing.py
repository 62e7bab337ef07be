"""Pictures of an architecture: the layered layout (a box per vertex, an edge per input, rows
and room kept), the DOT text (a node per vertex, an edge per edge), Graphviz where installed,
the PNG and the callback."""

import re
import shutil

import numpy as np
import pytest
from graph_cases import chain, inception, residual
from hypothesis import given
from hypothesis import strategies as st

from tinyevo.app.drawing import (
    DrawArchitecture,
    architecture_dot,
    architecture_layout,
    draw_architecture,
    render_dot,
    vertex_label,
)
from tinyevo.graph import CompGraph, add, concat, input_vertex, vertex
from tinyevo.layers import BatchNorm, Dense

PNG = b"\x89PNG\r\n\x1a\n"


def random_graph(seed: int, size: int = 40) -> CompGraph:
    """A dense network of about ``size`` vertices: chains, residual blocks and forks of two or
    three paths joined by concat, chosen by ``seed``."""
    rng = np.random.default_rng(seed)
    inp = input_vertex("in", 5)
    v, n = inp, 1
    while n < size:
        pick = rng.random()
        if pick < 0.3:                                   # a residual block
            a = vertex(Dense(v.nout, v.nout, "relu"), v)
            v, n = add(v, vertex(BatchNorm(v.nout), a)), n + 3
        elif pick < 0.55:                                # a fork joined by concat
            paths = []
            for _ in range(int(rng.integers(2, 4))):
                p = vertex(Dense(v.nout, int(rng.integers(2, 7)), "relu"), v)
                n += 1
                if rng.random() < 0.5:
                    p, n = vertex(Dense(p.nout, p.nout, "elu"), p), n + 1
                paths.append(p)
            v, n = concat(*paths), n + 1
        else:
            v, n = vertex(Dense(v.nout, int(rng.integers(3, 9)), "relu"), v), n + 1
    return CompGraph(inp, vertex(Dense(v.nout, 3), v))


def nedges(graph: CompGraph) -> int:
    return sum(len(v.inputs) for v in graph.vertices)


def crossings(layout) -> int:
    """Pairs of edge pieces between the same two rows that cross."""
    pieces = [(a, b) for e in layout.edges for a, b in zip(e.points, e.points[1:])]
    return sum((a1[0] - a2[0]) * (b1[0] - b2[0]) < -1e-9
               for i, (a1, b1) in enumerate(pieces) for a2, b2 in pieces[i + 1:]
               if a1[1] == a2[1])


def check_layout(graph: CompGraph) -> None:
    layout = architecture_layout(graph)
    boxes = {b.name: b for b in layout.boxes}
    assert len(layout.boxes) == len(graph.vertices) == len(boxes)     # a box per vertex
    assert len(layout.edges) == nedges(graph)                         # an edge per input
    for v in graph.vertices:
        b = boxes[v.name]
        assert b.row == (0 if v.is_input else 1 + max(boxes[u.name].row for u in v.inputs))
        assert b.label == vertex_label(v) and b.output == v.is_output
    for row in range(layout.nrows):                  # boxes of a row never overlap
        xs = sorted(b.x for b in layout.boxes if b.row == row)
        assert all(b - a >= 1.0 for a, b in zip(xs, xs[1:]))
    for e in layout.edges:                           # from box to box, a row at a time
        src, dst = boxes[e.source], boxes[e.target]
        assert e.points[0] == (src.x, src.row) and e.points[-1] == (dst.x, dst.row)
        assert [p[1] for p in e.points] == list(range(src.row, dst.row + 1))
    assert all(-1e-9 <= b.x - 0.5 and b.x + 0.5 <= layout.width + 1e-9 for b in layout.boxes)


@pytest.mark.parametrize("build", [chain, residual, inception])
def test_the_layout_has_a_box_per_vertex_and_an_edge_per_input(build):
    check_layout(build())


@given(st.integers(0, 10_000), st.integers(10, 60))
def test_the_layout_of_random_networks_keeps_its_rows_and_room(seed, size):
    check_layout(random_graph(seed, size))


def test_forks_and_residuals_are_drawn_without_crossings_and_chains_straight():
    layout = architecture_layout(inception())
    assert crossings(layout) == 0
    merges = {e.target: e.merge for e in layout.edges if e.merge}
    assert merges == {"cat": "concat", "res": "add"}
    boxes = {b.name: b for b in architecture_layout(chain()).boxes}
    assert len({b.x for b in boxes.values()}) == 1                    # a chain is one column
    skip = next(e for e in layout.edges if (e.source, e.target) == ("stem", "res"))
    assert len(skip.points) == 5          # the residual bends in each of the 3 rows it passes


def test_the_labels_say_what_a_vertex_computes_with_its_sizes():
    labels = {b.name: b.label for b in architecture_layout(inception()).boxes}
    assert labels["in"] == "input 3 (conv2d)"
    assert labels["stem"] == "Conv 3x3, 3→6, relu"
    assert labels["cat"] == "concat 2+3+1=6" and labels["res"] == "add 6"
    assert labels["p3pool"] == "MaxPool window=3, stride=1"
    assert labels["out"].endswith("[shielded]")


def dot_counts(text: str) -> tuple[int, int]:
    nodes = re.findall(r"^  v\d+ \[label=", text, re.M)
    edges = re.findall(r"^  v\d+ -> v\d+", text, re.M)
    return len(nodes), len(edges)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_dot_has_a_node_per_vertex_and_an_edge_per_edge(seed):
    graph = random_graph(seed, 30)
    text = architecture_dot(graph)
    assert text.startswith("digraph architecture {") and text.rstrip().endswith("}")
    assert dot_counts(text) == (len(graph.vertices), nedges(graph))


def test_dot_escapes_names_and_counts_a_repeated_input_twice():
    inp = input_vertex('in "1"\\x\nnext', 2)
    graph = CompGraph(inp, vertex(Dense(2, 2), add(inp, inp, name="twice")))
    text = architecture_dot(graph)
    assert dot_counts(text) == (3, 3)
    assert r'label="in \"1\"\\x\nnext\ninput 2 (dense)"' in text


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz's dot is not installed")
def test_graphviz_renders_the_dot_text(tmp_path):
    inp = input_vertex('odd "name" \\ ', 2)
    graph = CompGraph(inp, vertex(Dense(2, 2), inp))
    assert render_dot(architecture_dot(inception()), tmp_path / "a.png")
    assert (tmp_path / "a.png").read_bytes().startswith(PNG)
    assert render_dot(architecture_dot(graph), tmp_path / "b.svg")
    assert b"<svg" in (tmp_path / "b.svg").read_bytes()


def test_without_graphviz_render_dot_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    assert render_dot(architecture_dot(chain()), tmp_path / "a.svg") is False
    assert not (tmp_path / "a.svg").exists()


def test_bad_arguments_say_what_was_expected(tmp_path):
    with pytest.raises(TypeError, match="CompGraph"):
        architecture_layout("not a graph")
    with pytest.raises(ValueError, match="png, svg, pdf"):
        render_dot(architecture_dot(chain()), tmp_path / "a.jpg")
    with pytest.raises(ValueError, match="DOT text"):
        render_dot("not dot", tmp_path / "a.png")
    with pytest.raises(ValueError, match=".png, .svg or .pdf"):
        draw_architecture(chain(), tmp_path / "a.txt")
    with pytest.raises(ValueError, match="plain file name"):
        DrawArchitecture(tmp_path, name="a/b")


def test_draw_architecture_writes_a_png(tmp_path):
    pytest.importorskip("matplotlib")
    path = draw_architecture(random_graph(3, 60), tmp_path / "arch.png")
    assert path == tmp_path / "arch.png" and path.read_bytes().startswith(PNG)
    assert [p.name for p in tmp_path.iterdir()] == ["arch.png"]       # no temporary left


def test_the_callback_draws_the_best_member_of_each_generation(tmp_path):
    pytest.importorskip("matplotlib")
    from tinyevo.evolution import CandidateModel, FittedCandidate, Population

    small, big = chain(sizes=(4,)), inception("dense")
    population = Population([FittedCandidate(CandidateModel(small), 0.2, 1),
                             FittedCandidate(CandidateModel(big), 0.9, 1)], 1)
    cb = DrawArchitecture(tmp_path)
    cb(population)
    assert (tmp_path / "architecture.png").read_bytes().startswith(PNG)
    assert (tmp_path / "architecture.dot").read_text() == architecture_dot(big)
    with pytest.raises(TypeError, match="Population"):
        cb([1, 2])
