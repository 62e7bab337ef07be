"""Pictures of a run: a model's architecture and the family tree of an evolution.

The architecture is drawn in layers: a vertex sits one row below the deepest vertex it reads
(the longest path from an input), boxes within a row are ordered to cross few edges
(barycentre sweeps over the rows, with a bend point in every row a long edge passes, as in
Sugiyama's method), and each box is pulled under the vertices it reads. A box says the vertex's
name and what it computes with its sizes; edges into a residual ``add`` or a ``concat`` have
the merge's colour, so forks and merges stand out. :func:`architecture_dot` writes the same
graph as Graphviz DOT text, and :func:`render_dot` draws it with Graphviz's ``dot`` where that
program is installed.

The family tree (:func:`draw_family_tree`) draws a run's lineage (``Lineage``, see
:mod:`tinyevo.evolution.lineage`): generations from left to right, an edge from each parent to
its child coloured by what made the child (mutation, crossover, copy), each candidate coloured
by the fitness it reached, and the line of the run's winner in bold.

    >>> draw_architecture(graph, "runs/a/architecture.png")          # doctest: +SKIP
    >>> render_dot(architecture_dot(graph), "runs/a/architecture.svg")  # doctest: +SKIP

Drawing needs matplotlib (``pip install 'tinyevo[app]'``); the layouts
(:func:`architecture_layout`, :func:`family_layout`) and the DOT text do not.
"""

from __future__ import annotations

import math
import os
import re
import shutil
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tinyevo.app.callbacks import _matplotlib
from tinyevo.app.io import atomic_open, write_text
from tinyevo.evolution.candidate import graph as candidate_graph
from tinyevo.graph import CompGraph

__all__ = [
    "Box", "Edge", "Layout", "architecture_layout", "vertex_label", "draw_architecture",
    "architecture_dot",
    "render_dot", "TreeNode", "TreeEdge", "FamilyLayout", "family_layout", "draw_family_tree",
    "DrawArchitecture", "DrawFamilyTree",
]

# What a vertex is, for its colour: by the layer's class, else by the vertex's op.
ROLES = {"Conv": "conv", "Dense": "dense", "BatchNorm": "norm", "Rescale": "norm",
         "MaxPool": "pool", "MeanPool": "pool", "GlobalPool": "pool", "Flatten": "pool"}
COLOURS = {"input": "#d9d9d9", "conv": "#9ecae1", "dense": "#a1d99b", "norm": "#fdd0a2",
           "pool": "#dadaeb", "add": "#fdae6b", "concat": "#fcbba1", "mul": "#fde0ef",
           "layer": "#f0f0f0"}
EDGE_COLOURS = {None: "#555555", "add": "#e6550d", "concat": "#cb181d", "mul": "#c51b8a"}
KIND_COLOURS = {"mutation": "#3182bd", "crossover": "#756bb1", "copy": "#969696",
                "initial": "#969696"}
DOT_FORMATS = ("png", "svg", "pdf")
_DUMMY_WIDTH, _GAP = 0.25, 0.15      # in box widths: a bend point's room, the room between
_BOX_HEIGHT = 0.52                   # in rows
_MAX_PIXELS = 16000                  # the longer side of a picture at most


# --------------------------------------------------------------------- architecture: layout
@dataclass(frozen=True)
class Box:
    """A vertex's box: ``row`` 0 holds the inputs, ``x`` is its centre in box widths."""

    name: str
    label: str
    role: str
    row: int
    x: float
    output: bool


@dataclass(frozen=True)
class Edge:
    """An edge from vertex ``source`` to vertex ``target`` through ``points`` ``(x, row)``,
    from the source's box to the target's (a bend in every row between); ``merge`` is the
    target's op where it merges its inputs ("add", "concat", "mul"), else None."""

    source: str
    target: str
    points: tuple[tuple[float, float], ...]
    merge: str | None


@dataclass(frozen=True)
class Layout:
    """Where :func:`draw_architecture` puts each vertex and edge; ``width`` in box widths."""

    boxes: tuple[Box, ...]
    edges: tuple[Edge, ...]
    nrows: int
    width: float


def architecture_layout(graph: CompGraph) -> Layout:
    """The layered layout of ``graph``: a box per vertex, an edge per input of each vertex.

        >>> layout = architecture_layout(graph)                      # doctest: +SKIP
        >>> len(layout.boxes) == len(graph.vertices)                 # doctest: +SKIP
        True
    """
    _check_graph(graph)
    vertices = graph.vertices
    row, pred, succ, chains = _layered(vertices)
    rows = [[n for n in range(len(row)) if row[n] == r] for r in range(max(row) + 1)]
    rows = _order(rows, pred, succ)
    width = [1.0 if n < len(vertices) else _DUMMY_WIDTH for n in range(len(row))]
    x = _coordinates(rows, pred, succ, width)
    left = min(x[n] - width[n] / 2 for n in x)
    boxes = tuple(Box(v.name, vertex_label(v), _role(v), row[i], x[i] - left, v.is_output)
                  for i, v in enumerate(vertices))
    edges = tuple(Edge(u.name, v.name, tuple((x[n] - left, float(row[n])) for n in chain),
                       v.op if v.op in ("add", "concat", "mul") else None)
                  for v, u, chain in chains)
    return Layout(boxes, edges, len(rows), max(x[n] + width[n] / 2 for n in x) - left)


def _layered(vertices: list) -> tuple[list[int], list[list[int]], list[list[int]], list]:
    """The graph in rows: ``row`` of each node (the vertices, in order, then a bend point for
    each row a long edge passes), each node's predecessors ``pred`` and successors ``succ``,
    and per edge ``(target, source, chain of nodes from source to target)``."""
    index = {id(v): i for i, v in enumerate(vertices)}
    row: list[int] = []
    for v in vertices:                      # topological order: inputs come first
        row.append(1 + max((row[index[id(u)]] for u in v.inputs), default=-1))
    pred: list[list[int]] = [[] for _ in vertices]
    succ: list[list[int]] = [[] for _ in vertices]
    chains = []
    for j, v in enumerate(vertices):
        for u in v.inputs:
            chain = [index[id(u)]]
            for r in range(row[chain[0]] + 1, row[j]):
                row.append(r)
                pred.append([])
                succ.append([])
                chain.append(len(row) - 1)
            chain.append(j)
            for a, b in zip(chain, chain[1:]):
                succ[a].append(b)
                pred[b].append(a)
            chains.append((v, u, chain))
    return row, pred, succ, chains


def vertex_label(v: Any) -> str:
    """What a vertex computes, with its sizes: "Conv 3x3, 16→24, relu", "concat 8+16=24"."""
    if v.is_input:
        return f"input {v.nout} ({v.kind})"
    if v.layer is not None:
        text = re.sub(r"^(\w+)\((.*)\)$", r"\1 \2", repr(v.layer)).replace(" => ", "→")
        text = re.sub(r"\((\d+), (\d+)\)", r"\1x\2", text)          # window=(2, 2): 2x2
        return text + (" [shielded]" if v.shielded else "")
    if v.op == "concat":
        return f"concat {'+'.join(map(str, v.nin))}={v.nout}"
    return f"{v.op} {v.nout}"


def _role(v: Any) -> str:
    if v.is_input:
        return "input"
    if v.layer is not None:
        return ROLES.get(type(v.layer).__name__, "layer")
    return v.op if v.op in COLOURS else "layer"


def _order(rows: list[list[int]], pred: list[list[int]], succ: list[list[int]],
           sweeps: int = 8) -> list[list[int]]:
    """``rows`` reordered by barycentre sweeps, down and up; the order with fewest crossings."""
    rows = [list(r) for r in rows]
    pos = {n: i for r in rows for i, n in enumerate(r)}
    best, fewest = [list(r) for r in rows], _crossings(rows, succ, pos)
    for sweep in range(sweeps):
        down = sweep % 2 == 0
        near = pred if down else succ
        for r in (range(1, len(rows)) if down else range(len(rows) - 2, -1, -1)):
            rows[r].sort(key=lambda n: (_mean([pos[m] for m in near[n]], pos[n]), pos[n]))
            pos.update((n, i) for i, n in enumerate(rows[r]))
        crossings = _crossings(rows, succ, pos)
        if crossings < fewest:
            best, fewest = [list(r) for r in rows], crossings
    return best


def _crossings(rows: list[list[int]], succ: list[list[int]], pos: dict[int, int]) -> int:
    """How many pairs of edges cross between adjacent rows."""
    total = 0
    for r in rows:
        pairs = [(pos[a], pos[b]) for a in r for b in succ[a]]
        total += sum((a1 - a2) * (b1 - b2) < 0
                     for i, (a1, b1) in enumerate(pairs) for a2, b2 in pairs[i + 1:])
    return total


def _coordinates(rows: list[list[int]], pred: list[list[int]], succ: list[list[int]],
                 width: list[float], sweeps: int = 8) -> dict[int, float]:
    """An x per node: each row keeps its order and its room, each node as near as that allows
    to the mean x of its neighbours, sweeping down (towards what it reads) and up."""
    x: dict[int, float] = {}
    for r in rows:
        x.update(zip(r, _pack([0.0] * len(r), [_gap(a, b, width) for a, b in zip(r, r[1:])])))
    for sweep in range(sweeps):
        near = pred if sweep % 2 == 0 else succ
        for r in rows:
            want = [_mean([x[m] for m in near[n]], x[n]) for n in r]
            x.update(zip(r, _pack(want, [_gap(a, b, width) for a, b in zip(r, r[1:])])))
    return x


def _pack(want: list[float], gaps: list[float]) -> list[float]:
    """Positions in the given order, at least ``gaps`` apart, near ``want``: the mean of the
    tightest placements from the left and from the right (both keep the gaps, so it does)."""
    left = list(want)
    for i in range(1, len(left)):
        left[i] = max(left[i], left[i - 1] + gaps[i - 1])
    right = list(want)
    for i in range(len(right) - 2, -1, -1):
        right[i] = min(right[i], right[i + 1] - gaps[i])
    return [(a + b) / 2 for a, b in zip(left, right)]


def _gap(a: int, b: int, width: list[float]) -> float:
    return (width[a] + width[b]) / 2 + _GAP


def _mean(values: list[float], default: float) -> float:
    return sum(values) / len(values) if values else default


# --------------------------------------------------------------------- architecture: pictures
def draw_architecture(graph: CompGraph, path: str | os.PathLike) -> Path:
    """Draw ``graph`` as boxes and edges (:func:`architecture_layout`) to ``path`` (PNG, or
    SVG/PDF by its suffix), atomically; returns the path.

        >>> draw_architecture(graph, "runs/a/architecture.png")      # doctest: +SKIP
    """
    layout = architecture_layout(graph)
    path = _picture_path(path)
    chars = max(max(len(b.name), len(b.label)) for b in layout.boxes)
    unit = max(1.3, 0.066 * chars + 0.35)         # inches per box width: the longest label fits
    fig, ax = _figure((layout.width + 0.4) * unit + 2.4, layout.nrows * 0.62 + 0.9)
    ax.set_xlim(-0.2, layout.width + 0.2 + 2.4 / unit)
    ax.set_ylim(layout.nrows - 1 + 0.6, -0.8)
    ax.axis("off")
    for e in layout.edges:
        _draw_edge(ax, e)
    for b in layout.boxes:
        _draw_box(ax, b)
    ax.set_title(f"{len(layout.boxes)} vertices, {graph.nparams():,} parameters", loc="left")
    _architecture_legend(ax, layout)
    _save(fig, path)
    return path


def _draw_box(ax: Any, b: Box) -> None:
    from matplotlib.patches import FancyBboxPatch

    w, h = 0.92, _BOX_HEIGHT
    ax.add_patch(FancyBboxPatch((b.x - w / 2, b.row - h / 2), w, h,
                                boxstyle="round,pad=0,rounding_size=0.08",
                                facecolor=COLOURS[b.role], edgecolor="black",
                                linewidth=2.0 if b.output else 0.8, zorder=3))
    ax.text(b.x, b.row - 0.1, b.name, ha="center", va="center", fontsize=7.5,
            fontweight="bold", zorder=4)
    ax.text(b.x, b.row + 0.13, b.label, ha="center", va="center", fontsize=7.5, zorder=4)


def _draw_edge(ax: Any, e: Edge) -> None:
    colour = EDGE_COLOURS[e.merge]
    points = list(e.points)
    points[0] = (points[0][0], points[0][1] + _BOX_HEIGHT / 2)        # from the box's bottom
    end = (points[-1][0], points[-1][1] - _BOX_HEIGHT / 2)              # to the box's top
    if len(points) > 2:
        ax.plot([p[0] for p in points[:-1]], [p[1] for p in points[:-1]], color=colour,
                lw=1.2, zorder=1, solid_capstyle="round")
    ax.annotate("", xy=end, xytext=points[-2], zorder=2,
                arrowprops={"arrowstyle": "-|>", "color": colour, "lw": 1.2,
                            "shrinkA": 0, "shrinkB": 0, "mutation_scale": 10})


def _architecture_legend(ax: Any, layout: Layout) -> None:
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    roles = [r for r in COLOURS if any(b.role == r for b in layout.boxes)]
    merges = [m for m in ("add", "concat", "mul") if any(e.merge == m for e in layout.edges)]
    handles = [Patch(facecolor=COLOURS[r], edgecolor="black", label=r) for r in roles]
    handles += [Line2D([], [], color=EDGE_COLOURS[m], label=f"into {m}") for m in merges]
    handles.append(Patch(facecolor="white", edgecolor="black", linewidth=2.0, label="output"))
    ax.legend(handles=handles, loc="upper right", fontsize=8, frameon=False)


def architecture_dot(graph: CompGraph) -> str:
    """``graph`` as Graphviz DOT text: a node per vertex (name, what it computes, coloured as
    :func:`draw_architecture` does), an edge per input of each vertex.

        >>> print(architecture_dot(graph))                           # doctest: +SKIP
        digraph architecture {
        ...
    """
    _check_graph(graph)
    vertices = graph.vertices
    index = {id(v): i for i, v in enumerate(vertices)}
    lines = ["digraph architecture {",
             f'  graph [rankdir=TB, labelloc=t, fontname="Helvetica", label='
             f'{_dot_string(f"{len(vertices)} vertices, {graph.nparams():,} parameters")}];',
             '  node [shape=box, style="rounded,filled", fontname="Helvetica", fontsize=10];',
             f'  edge [color="{EDGE_COLOURS[None]}", arrowsize=0.7];']
    for i, v in enumerate(vertices):
        extra = ", penwidth=2" if v.is_output else ""
        lines.append(f"  v{i} [label={_dot_string(v.name + chr(10) + vertex_label(v))}, "
                     f'fillcolor="{COLOURS[_role(v)]}"{extra}];')
    for j, v in enumerate(vertices):
        colour = f' [color="{EDGE_COLOURS[v.op]}"]' if v.op in ("add", "concat", "mul") else ""
        lines += [f"  v{index[id(u)]} -> v{j}{colour};" for u in v.inputs]
    lines.append("}")
    return "\n".join(lines) + "\n"


def render_dot(dot_text: str, path: str | os.PathLike, timeout: float = 120.0) -> bool:
    """Render DOT text to ``path`` (PNG, SVG or PDF by its suffix) with Graphviz's ``dot``,
    atomically; False, writing nothing, where ``dot`` is not installed.

        >>> render_dot(architecture_dot(graph), "runs/a/architecture.svg")   # doctest: +SKIP
        True
    """
    if not isinstance(dot_text, str) or not dot_text.lstrip().startswith(("digraph", "graph")):
        raise ValueError(f"render_dot takes DOT text (starting 'digraph' or 'graph'), e.g. "
                         f"architecture_dot(graph); got {str(dot_text)[:40]!r}")
    path = Path(path)
    fmt = path.suffix.lower().lstrip(".")
    if fmt not in DOT_FORMATS:
        raise ValueError(f"render_dot writes {', '.join(DOT_FORMATS)} files, chosen by the "
                         f"suffix; {path} has none of these")
    exe = shutil.which("dot")
    if exe is None:
        return False
    done = subprocess.run([exe, f"-T{fmt}"], input=dot_text.encode("utf-8"),
                          capture_output=True, timeout=timeout, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"Graphviz dot could not render {path.name}: "
                           f"{done.stderr.decode('utf-8', 'replace').strip()[:500]}")
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_open(path, "wb") as f:
        f.write(done.stdout)
    return True


def _dot_string(text: str) -> str:
    """``text`` as a quoted DOT string, a line break as DOT's ``\\n``."""
    escaped = text.replace("\\", "\\\\").replace('"', '\\"')
    return '"' + escaped.replace("\r", "").replace("\n", "\\n") + '"'


# --------------------------------------------------------------------- family tree
@dataclass(frozen=True)
class TreeNode:
    """A candidate of the family tree at ``(generation, y)``; ``fitness`` None where it was not
    evaluated; whether it is in the last population, the hall of fame, the Pareto front, and
    whether it is the run's winner (the hall of fame's best)."""

    id: int
    generation: int
    y: float
    fitness: float | None
    kind: str
    population: bool
    fame: bool
    front: bool
    winner: bool


@dataclass(frozen=True)
class TreeEdge:
    """From ``parent`` to ``child``, ``kind`` the child's (mutation, crossover, copy);
    ``second`` for a crossover child's second parent; ``winner`` on the winner's line."""

    parent: int
    child: int
    kind: str
    second: bool
    winner: bool


@dataclass(frozen=True)
class FamilyLayout:
    """The family tree's nodes and edges; ``winner`` is the winner's id (None: no candidate)."""

    nodes: tuple[TreeNode, ...]
    edges: tuple[TreeEdge, ...]
    winner: int | None


def family_layout(lineage: Any) -> FamilyLayout:
    """The family tree of ``lineage`` (a ``tinyevo.evolution.lineage.Lineage``): the last
    population, the hall of fame and the Pareto front with all their ancestors, a column per
    generation, each candidate placed near its parents.

        >>> tree = family_layout(lineage)                             # doctest: +SKIP
    """
    _check_lineage(lineage)
    records = lineage.records
    kept = lineage.ancestry([*lineage.population, *lineage.hall_of_fame, *lineage.front])
    kept = sorted(i for i in kept if i in records)
    winner = next((i for i in (*lineage.hall_of_fame, *lineage.population) if i in records),
                  None)
    line = {s.id for s in lineage.line(winner)} if winner is not None else set()
    y: dict[int, float] = {}
    for gen in sorted({records[i].generation for i in kept}):
        column = [i for i in kept if records[i].generation == gen]
        column.sort(key=lambda i: (_mean([y[p] for p in records[i].parents if p in y], 0.0), i))
        y.update((i, k - (len(column) - 1) / 2) for k, i in enumerate(column))
    sets = (set(lineage.population), set(lineage.hall_of_fame), set(lineage.front))
    nodes = tuple(TreeNode(i, records[i].generation, y[i], records[i].fitness, records[i].kind,
                           i in sets[0], i in sets[1], i in sets[2], i == winner) for i in kept)
    edges = tuple(TreeEdge(p, i, records[i].kind, k > 0, i in line and p in line and k == 0)
                  for i in kept for k, p in enumerate(records[i].parents) if p in y)
    return FamilyLayout(nodes, edges, winner)


def draw_family_tree(lineage: Any, path: str | os.PathLike) -> Path:
    """Draw the family tree of ``lineage`` (:func:`family_layout`) to ``path``, atomically:
    generations left to right, parent-to-child edges coloured by what made the child
    (a crossover's second parent dashed), candidates coloured by fitness, the last population
    ringed, the hall of fame as diamonds, the winner's line in bold. Returns the path.

        >>> draw_family_tree(lineage, "runs/a/family.png")           # doctest: +SKIP
    """
    tree = family_layout(lineage)
    path = _picture_path(path)
    gens = sorted({n.generation for n in tree.nodes}) or [1]
    tall = max((sum(n.generation == g for n in tree.nodes) for g in gens), default=1)
    height = min(30.0, max(3.5, 0.3 * tall + 1.6))
    fig, ax = _figure(min(30.0, max(6.5, 0.45 * (gens[-1] - gens[0]) + 3.5)), height)
    where = {n.id: n for n in tree.nodes}
    for e in sorted(tree.edges, key=lambda e: e.winner):       # the winner's line on top
        a, b = where[e.parent], where[e.child]
        ax.plot([a.generation, b.generation], [a.y, b.y], color=KIND_COLOURS.get(e.kind, "grey"),
                lw=2.8 if e.winner else 1.0, ls="--" if e.second else "-",
                alpha=1.0 if e.winner else 0.75, zorder=2 if e.winner else 1)
    _draw_tree_nodes(ax, tree.nodes, size=max(14.0, min(70.0, 900.0 / tall)))
    ax.set_xlabel("generation")
    ax.set_yticks([])
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set_xlim(gens[0] - 0.6, gens[-1] + 0.6)
    ax.grid(True, axis="x", alpha=0.3)
    ax.set_title(f"Family tree: {len(tree.nodes)} candidates, the last population, the hall "
                 "of fame and their ancestors", loc="left", fontsize=10)
    _family_legend(ax, tree, below=0.6 / (height - 1.4))   # under the axis' label
    _save(fig, path)
    return path


def _draw_tree_nodes(ax: Any, nodes: Sequence[TreeNode], size: float) -> None:
    values = [n.fitness for n in nodes if _finite(n.fitness)]
    lo, hi = (min(values), max(values)) if values else (0.0, 1.0)
    unknown = [n for n in nodes if not _finite(n.fitness)]
    ax.scatter([n.generation for n in unknown], [n.y for n in unknown], s=size, c="#dddddd",
               edgecolors="grey", linewidths=0.5, zorder=3)
    for marker, group in (("o", lambda n: not n.fame), ("D", lambda n: n.fame)):
        known = [n for n in nodes if _finite(n.fitness) and group(n)]
        sc = ax.scatter([n.generation for n in known], [n.y for n in known],
                        c=[n.fitness for n in known], cmap="viridis", vmin=lo,
                        vmax=max(hi, lo + 1e-9), s=size * (1.6 if marker == "D" else 1.0),
                        marker=marker, edgecolors=["black" if n.population else "none"
                                                   for n in known],
                        linewidths=1.0, zorder=3)
    if values:
        ax.figure.colorbar(sc, ax=ax, pad=0.01).set_label("fitness")
    for n in nodes:
        if n.winner:
            ax.scatter([n.generation], [n.y], s=size * 5, facecolors="none",
                       edgecolors="crimson", linewidths=2.0, zorder=4)


def _family_legend(ax: Any, tree: FamilyLayout, below: float) -> None:
    from matplotlib.lines import Line2D

    kinds = [k for k in ("mutation", "crossover", "copy") if any(e.kind == k for e in tree.edges)]
    handles = [Line2D([], [], color=KIND_COLOURS[k], label=k) for k in kinds]
    handles += [Line2D([], [], marker="o", ls="", markerfacecolor="white",
                       markeredgecolor="black", label="last population"),
                Line2D([], [], marker="D", ls="", color="grey", label="hall of fame")]
    if tree.winner is not None:
        handles.append(Line2D([], [], marker="o", ls="", markersize=11, markerfacecolor="none",
                              markeredgecolor="crimson", markeredgewidth=2.0,
                              label="winner (its line in bold)"))
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(0.0, -below), ncol=3,
              fontsize=8, frameon=False)


# --------------------------------------------------------------------- callbacks
class DrawArchitecture:
    """Callback: after each generation, the architecture of its best member in
    ``mdir/NAME.png`` (:func:`draw_architecture`) and ``mdir/NAME.dot``
    (:func:`architecture_dot`).

        >>> fit(x, y, mdir="runs/a", callbacks=[DrawArchitecture("runs/a")])  # doctest: +SKIP
    """

    def __init__(self, mdir: str | os.PathLike, name: str = "architecture") -> None:
        _check_name(name)
        _matplotlib()          # fail now, not after the first generation of a long run
        self.mdir, self.name = Path(mdir), name

    def __call__(self, population: Any) -> None:
        model = candidate_graph(_best(population))
        draw_architecture(model, self.mdir / f"{self.name}.png")
        write_text(self.mdir / f"{self.name}.dot", architecture_dot(model))

    def __repr__(self) -> str:
        return f"DrawArchitecture({str(self.mdir)!r}, name={self.name!r})"


class DrawFamilyTree:
    """Callback: after each generation, the family tree in ``mdir/NAME.png``
    (:func:`draw_family_tree`) of the lineage ``lineage_of(population)`` gives; the default
    takes ``population.lineage``, which ``fit`` attaches. Draws nothing where there is no
    lineage.

        >>> cb = DrawFamilyTree("runs/a")                            # doctest: +SKIP
    """

    def __init__(self, mdir: str | os.PathLike, name: str = "family",
                 lineage_of: Callable[[Any], Any] | None = None) -> None:
        _check_name(name)
        if lineage_of is not None and not callable(lineage_of):
            raise TypeError(f"lineage_of must be a function population -> Lineage or None, "
                            f"got {lineage_of!r}")
        _matplotlib()
        self.mdir, self.name = Path(mdir), name
        self.lineage_of = lineage_of if lineage_of is not None else _attached_lineage

    def __call__(self, population: Any) -> None:
        lineage = self.lineage_of(population)
        if lineage is not None:
            draw_family_tree(lineage, self.mdir / f"{self.name}.png")

    def __repr__(self) -> str:
        return f"DrawFamilyTree({str(self.mdir)!r}, name={self.name!r})"


# --------------------------------------------------------------------- helpers
def _check_graph(graph: Any) -> None:
    if not isinstance(graph, CompGraph):
        raise TypeError(f"expected a tinyevo CompGraph (e.g. candidate.graph() or "
                        f"load_model(dir)), got {type(graph).__name__}")


def _check_lineage(lineage: Any) -> None:
    missing = [a for a in ("records", "population", "hall_of_fame", "front", "line", "ancestry")
               if not hasattr(lineage, a)]
    if missing:
        raise TypeError(f"expected a tinyevo Lineage (records, population, hall_of_fame, "
                        f"front, line, ancestry), got {type(lineage).__name__} without "
                        f"{', '.join(missing)}")


def _check_name(name: Any) -> None:
    if not isinstance(name, str) or not name or os.sep in name or "/" in name:
        raise ValueError(f"name must be a plain file name without folders, got {name!r}")


def _attached_lineage(population: Any) -> Any:
    """The lineage ``fit`` attaches to the populations it hands its callbacks; None for one
    made otherwise."""
    return getattr(population, "lineage", None)


def _best(population: Any) -> Any:
    if not hasattr(population, "best") or not getattr(population, "members", None):
        raise TypeError(f"a callback takes an evaluated Population, got "
                        f"{type(population).__name__}")
    return population.best()


def _picture_path(path: Any) -> Path:
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a file name such as 'architecture.png', got {path!r}")
    path = Path(path)
    if path.suffix.lower() not in (".png", ".svg", ".pdf"):
        raise ValueError(f"{path}: pictures are written as .png, .svg or .pdf (by the suffix)")
    return path


def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


def _figure(width: float, height: float) -> tuple[Any, Any]:
    """A new Agg figure of ``width`` x ``height`` inches (pyplot's state left alone)."""
    _matplotlib()
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig, fig.add_subplot()


def _save(fig: Any, path: Path) -> None:
    """Write ``fig`` to ``path`` atomically, at most ``_MAX_PIXELS`` on its longer side."""
    dpi = min(100.0, _MAX_PIXELS / max(fig.get_size_inches()))
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_open(path, "wb") as f:
        fig.savefig(f, format=path.suffix.lower().lstrip("."), dpi=dpi)
