"""Where the pictures of a run put things, without matplotlib: the layered layout of a model's
architecture, the same as Graphviz DOT text, and the layout of a run's family tree.

The architecture is laid out in rows: a vertex sits one row below the deepest vertex it reads
(the longest path from an input), an edge that passes rows gets a bend point in each, with room
of its own there, boxes and bend points within a row are ordered to cross few edges
(barycentre sweeps, as in Sugiyama's method), and each is pulled under what it reads. An edge
runs straight down through the rows it passes and travels sideways only in the gaps between
rows (:attr:`Edge.path`), so it never runs behind a box it does not connect.

The family tree of a lineage puts each generation in a column; an edge that spans columns gets
a bend point, with room of its own, in each column it passes, so no edge runs through a
candidate it does not connect either.

    >>> layout = architecture_layout(graph)                  # doctest: +SKIP
    >>> print(architecture_dot(graph))                       # doctest: +SKIP
    >>> tree = family_layout(lineage)                        # doctest: +SKIP

:mod:`tinyevo.app.drawing` draws these.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tinyevo.graph import CompGraph

__all__ = [
    "Box", "Edge", "Layout", "architecture_layout", "vertex_label", "architecture_dot",
    "TreeNode", "TreeEdge", "FamilyLayout", "family_layout", "keeps_candidates",
    "BOX_WIDTH", "BOX_HEIGHT", "COLOURS", "EDGE_COLOURS",
]

# What a vertex is, for its colour: by the layer's class, else by the vertex's op.
ROLES = {"Conv": "conv", "Dense": "dense", "BatchNorm": "norm", "Rescale": "norm",
         "MaxPool": "pool", "MeanPool": "pool", "GlobalPool": "pool", "Flatten": "pool"}
MERGES = ("add", "concat", "mul")
COLOURS = {"input": "#d9d9d9", "conv": "#9ecae1", "dense": "#a1d99b", "norm": "#fdd0a2",
           "pool": "#dadaeb", "add": "#fdae6b", "concat": "#fcbba1", "mul": "#fde0ef",
           "layer": "#f0f0f0"}
EDGE_COLOURS = {None: "#555555", "add": "#e6550d", "concat": "#cb181d", "mul": "#c51b8a"}
BOX_WIDTH, BOX_HEIGHT = 0.92, 0.52   # a box, in layout units (a box's room is 1 wide, a row 1)
_DUMMY_WIDTH, _GAP = 0.25, 0.15      # a bend point's room, and the room between two neighbours
# The family tree: the room between two candidates of a generation, beside a bend point, and
# between two bend points.
_NODE_GAP, _BESIDE_GAP, _BEND_GAP = 1.0, 0.5, 0.3


# --------------------------------------------------------------------- architecture
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

    @property
    def path(self) -> tuple[tuple[float, float], ...]:
        """The edge as drawn, ``(x, y)`` with ``y`` in rows: from the bottom of the source's
        box, straight down through each row it passes (at its bend point, where the row keeps
        room for it) and sideways only in the gaps between rows, to the top of the target's."""
        (x0, r0), *bends, (x1, r1) = self.points
        half = BOX_HEIGHT / 2
        path = [(x0, r0 + half)]
        for x, row in bends:
            path += [(x, row - half), (x, row + half)]
        return (*path, (x1, r1 - half))


@dataclass(frozen=True)
class Layout:
    """Where :func:`~tinyevo.app.drawing.draw_architecture` puts each vertex and edge;
    ``width`` in box widths."""

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
                       v.op if v.op in MERGES else None)
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
    return v.op if v.op in MERGES else "layer"


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


def architecture_dot(graph: CompGraph) -> str:
    """``graph`` as Graphviz DOT text: a node per vertex (name, what it computes, coloured as
    :func:`~tinyevo.app.drawing.draw_architecture` does), an edge per input of each vertex.

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
        colour = f' [color="{EDGE_COLOURS[v.op]}"]' if v.op in MERGES else ""
        lines += [f"  v{index[id(u)]} -> v{j}{colour};" for u in v.inputs]
    lines.append("}")
    return "\n".join(lines) + "\n"


def _dot_string(text: str) -> str:
    """``text`` as a quoted DOT string, a line break as DOT's ``\\n``."""
    escaped = text.replace("\\", "\\\\").replace('"', '\\"')
    return '"' + escaped.replace("\r", "").replace("\n", "\\n") + '"'


def _check_graph(graph: Any) -> None:
    if not isinstance(graph, CompGraph):
        raise TypeError(f"expected a tinyevo CompGraph (e.g. candidate.graph() or "
                        f"load_model(dir)), got {type(graph).__name__}")


# --------------------------------------------------------------------- family tree
@dataclass(frozen=True)
class TreeNode:
    """A candidate of the family tree at ``(generation, y)``; ``fitness`` the best it reached
    (None where it was not evaluated); whether it is in the last population, the hall of fame,
    the Pareto front, and whether it is the run's winner (``Lineage.winner()``)."""

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
    """From ``parent`` to ``child`` through ``points`` ``(generation, y)``: the parent, a bend
    in each generation between that has candidates (where the column keeps room for it), the
    child. ``kind`` is the child's (mutation, crossover, copy); ``second`` marks a crossover
    child's second parent; ``winner`` the winner's line."""

    parent: int
    child: int
    kind: str
    second: bool
    winner: bool
    points: tuple[tuple[float, float], ...]


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
    kept = sorted(lineage.ancestry([*lineage.population, *lineage.hall_of_fame, *lineage.front]))
    winner = lineage.winner()
    winner = winner if winner in records else None
    line = {s.id for s in lineage.line(winner)} if winner is not None else set()
    chains = [(p, i, k) for i in kept for k, p in enumerate(records[i].parents)
              if p in records]                # (kept: the ancestry holds every recorded parent)
    y, paths = _tree_places(kept, [(p, i) for p, i, _ in chains],
                            lambda i: records[i].generation)
    sets = (set(lineage.population), set(lineage.hall_of_fame), set(lineage.front))
    nodes = tuple(TreeNode(i, records[i].generation, y[i], records[i].fitness, records[i].kind,
                           i in sets[0], i in sets[1], i in sets[2], i == winner) for i in kept)
    edges = tuple(TreeEdge(p, i, records[i].kind, k > 0, i in line and p in line and k == 0,
                           path) for (p, i, k), path in zip(chains, paths))
    return FamilyLayout(nodes, edges, winner)


def _tree_places(ids: list[int], links: list[tuple[int, int]], generation: Callable[[int], int]
                 ) -> tuple[dict[int, float], list[tuple[tuple[float, float], ...]]]:
    """A ``y`` per candidate, and per link ``(parent, child)`` its points: a column per
    generation that has candidates, a bend point for each link in each column it passes;
    column by column, everything as near as the room between allows to what leads to it."""
    columns = sorted({generation(i) for i in ids})
    place = {g: k for k, g in enumerate(columns)}
    slots: dict[int, list[tuple]] = {g: [] for g in columns}
    for i in ids:
        slots[generation(i)].append(("node", i))
    before: dict[tuple, list[tuple]] = {}
    chains = []
    for n, (p, i) in enumerate(links):
        passed = columns[place[generation(p)] + 1:place[generation(i)]]
        chain = [("node", p), *[("bend", n, g) for g in passed], ("node", i)]
        for g in passed:
            slots[g].append(("bend", n, g))
        for a, b in zip(chain, chain[1:]):
            before.setdefault(b, []).append(a)
        chains.append(chain)
    y: dict[tuple, float] = {}
    for g in columns:
        want = {s: _mean([y[a] for a in before.get(s, []) if a in y], 0.0) for s in slots[g]}
        column = sorted(slots[g], key=lambda s: (want[s], s))
        gaps = [_NODE_GAP if a[0] == b[0] == "node" else
                _BEND_GAP if a[0] == b[0] == "bend" else _BESIDE_GAP
                for a, b in zip(column, column[1:])]
        y.update(zip(column, _pack([want[s] for s in column], gaps)))
    at = {s: (float(s[2] if s[0] == "bend" else generation(s[1])), y[s]) for s in y}
    return {i: y[("node", i)] for i in ids}, [tuple(at[s] for s in c) for c in chains]


def keeps_candidates(lineage: Any) -> bool:
    """Whether ``lineage`` keeps a candidate to show: its winner (then the family tree has it
    and its line)."""
    return lineage is not None and lineage.winner() in lineage.records


def _check_lineage(lineage: Any) -> None:
    missing = [a for a in ("records", "population", "hall_of_fame", "front", "line", "ancestry",
                           "winner") if not hasattr(lineage, a)]
    if missing:
        raise TypeError(f"expected a tinyevo Lineage (records, population, hall_of_fame, "
                        f"front, line, ancestry, winner), got {type(lineage).__name__} "
                        f"without {', '.join(missing)}")
