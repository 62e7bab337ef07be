"""Pictures of an architecture: the layered layout (a box per vertex, an edge per input, rows
and room kept, no edge behind a box it does not connect), the DOT text (a node per vertex, an
edge per edge), Graphviz where installed (and where it fails or hangs), the PNG and the
callback."""

import os
import re
import shutil
import time

import numpy as np
import pytest
from graph_cases import chain, inception, residual
from hypothesis import given
from hypothesis import strategies as st

from tinyevo.app import drawing
from tinyevo.app.drawing import DrawArchitecture, draw_architecture, render_dot
from tinyevo.app.layout import (
    BOX_HEIGHT,
    BOX_WIDTH,
    architecture_dot,
    architecture_layout,
    vertex_label,
)
from tinyevo.graph import CompGraph, add, concat, input_vertex, vertex
from tinyevo.layers import BatchNorm, Conv, Dense

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


def meets_box(a, b, box, eps: float = 1e-6) -> bool:
    """Whether the segment from ``a`` to ``b`` enters ``box`` (Liang-Barsky clipping)."""
    lo, hi = 0.0, 1.0
    for p, q in ((-(b[0] - a[0]), a[0] - (box.x - BOX_WIDTH / 2 + eps)),
                 (b[0] - a[0], box.x + BOX_WIDTH / 2 - eps - a[0]),
                 (-(b[1] - a[1]), a[1] - (box.row - BOX_HEIGHT / 2 + eps)),
                 (b[1] - a[1], box.row + BOX_HEIGHT / 2 - eps - a[1])):
        if p == 0:
            if q < 0:
                return False
        elif p < 0:
            lo = max(lo, q / p)
        else:
            hi = min(hi, q / p)
    return lo <= hi


def edges_behind_boxes(layout) -> list[tuple[str, str, str]]:
    """(source, target, box) for each box an edge, as drawn, runs through but does not
    connect."""
    return [(e.source, e.target, box.name) for e in layout.edges
            for a, b in zip(e.path, e.path[1:]) for box in layout.boxes
            if box.name not in (e.source, e.target) and meets_box(a, b, box)]


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
    for e in layout.edges:                           # sideways only between rows
        for (x0, y0), (x1, y1) in zip(e.path, e.path[1:]):
            assert x0 == x1 or {round(y0 % 1, 9), round(y1 % 1, 9)} == {
                round(BOX_HEIGHT / 2, 9), round(1 - BOX_HEIGHT / 2, 9)}
    assert edges_behind_boxes(layout) == []


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


def wide_forks() -> CompGraph:
    """Two wide forks of chains of one to three convolutions, joined by concat, inside a
    residual block: long edges that pass rows of other boxes."""
    inp = input_vertex("in", 4, "conv2d")
    v = inp
    for block in range(2):
        start, paths = v, []
        for k in range(7):
            p = start
            for _ in range(1 + (k * 5 + block) % 3):
                p = vertex(Conv(p.nout, 3 + k % 3, (3, 3)), p)
            paths.append(p)
        v = concat(*paths)
        v = vertex(Conv(v.nout, start.nout, (1, 1)), v)
        v = add(start, v)
    return CompGraph(inp, v)


def test_no_edge_runs_behind_a_box_it_does_not_connect():
    layout = architecture_layout(wide_forks())
    assert edges_behind_boxes(layout) == []
    long = [e for e in layout.edges if len(e.points) > 2]
    assert long                                  # edges that pass rows: straight down there
    for e in long:
        assert all(a[0] == b[0] for a, b in zip(e.path[1::2], e.path[2::2]))
    check_layout(wide_forks())


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


def fake_dot(folder, script: str, monkeypatch) -> None:
    """A program called dot, first on the PATH, that runs ``script`` (sh)."""
    folder.mkdir(exist_ok=True)
    (folder / "dot").write_text("#!/bin/sh\n" + script + "\n")
    (folder / "dot").chmod(0o755)
    monkeypatch.setenv("PATH", f"{folder}{os.pathsep}{os.environ.get('PATH', '')}")


@pytest.mark.skipif(os.name != "posix", reason="the stand-in dot is a shell script")
def test_a_dot_that_fails_or_hangs_is_a_runtime_error_and_writes_nothing(tmp_path, monkeypatch):
    fake_dot(tmp_path / "bin", 'echo "Layout type: dot not recognized" >&2; exit 1', monkeypatch)
    with pytest.raises(RuntimeError, match="could not render a.svg: Layout type"):
        render_dot(architecture_dot(chain()), tmp_path / "a.svg")
    fake_dot(tmp_path / "bin", "exec sleep 20", monkeypatch)
    monkeypatch.setattr(drawing, "DOT_TIMEOUT", 0.3)
    started = time.monotonic()
    with pytest.raises(RuntimeError, match="within 0.3 s"):
        render_dot(architecture_dot(chain()), tmp_path / "a.svg")
    assert time.monotonic() - started < 10
    assert not (tmp_path / "a.svg").exists()


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


def test_text_is_drawn_as_it_is_not_as_a_formula(tmp_path):
    pytest.importorskip("matplotlib")
    inp = input_vertex("a$\\frac{$b", 2)                        # mathtext would fail on it
    graph = CompGraph(inp, vertex(Dense(2, 2), inp, name="conv$_1$ and $x^{$"))
    assert draw_architecture(graph, tmp_path / "a.png").read_bytes().startswith(PNG)


def test_the_callback_draws_the_best_member_of_each_generation(tmp_path):
    pytest.importorskip("matplotlib")
    from tinyevo.evolution import CandidateModel, FittedCandidate, Population

    small, big = chain(sizes=(4,)), inception("dense")
    population = Population([FittedCandidate(CandidateModel(small), 0.2, 1),
                             FittedCandidate(CandidateModel(big), 0.9, 1)], 1)
    cb = DrawArchitecture(tmp_path)
    cb(population)
    assert (tmp_path / "generation_best.png").read_bytes().startswith(PNG)
    assert (tmp_path / "generation_best.dot").read_text() == architecture_dot(big)
    assert not (tmp_path / "architecture.png").exists()     # the report's: the run's winner
    with pytest.raises(TypeError, match="Population"):
        cb([1, 2])


def test_the_family_tree_callback_skips_a_lineage_with_no_candidate_to_show(tmp_path):
    # Records, but none of them in the population or hall of fame: nothing to lay out, and
    # the callback must not end the run with draw_family_tree's ValueError.
    pytest.importorskip("matplotlib")
    from types import SimpleNamespace

    from tinyevo.app.drawing import DrawFamilyTree
    from tinyevo.evolution.lineage import Lineage, Step
    lineage = Lineage([Step(1, (), 1, (), 0.5, 10)], population=[], hall_of_fame=[])
    DrawFamilyTree(tmp_path)(SimpleNamespace(lineage=lineage))
    assert not list(tmp_path.iterdir())
