"""Pictures of a run: a model's architecture and the family tree of an evolution.

:func:`draw_architecture` draws a model's graph as :func:`~tinyevo.app.layout.
architecture_layout` lays it out: a box per vertex saying its name and what it computes with
its sizes, the inputs on top, a row per step of depth; edges into a residual ``add`` or a
``concat`` have the merge's colour, so forks and merges stand out. :func:`render_dot` draws the
same graph's Graphviz DOT text (:func:`~tinyevo.app.layout.architecture_dot`) with Graphviz's
``dot`` where that program is installed.

:func:`draw_family_tree` draws a run's lineage (``Lineage``, see
:mod:`tinyevo.evolution.lineage`) as :func:`~tinyevo.app.layout.family_layout` lays it out:
generations from left to right, an edge from each parent to its child coloured by what made the
child (mutation, crossover, copy), each candidate coloured by the best fitness it reached, and
the line of the run's winner in bold.

    >>> draw_architecture(graph, "runs/a/architecture.png")          # doctest: +SKIP
    >>> render_dot(architecture_dot(graph), "runs/a/architecture.svg")  # doctest: +SKIP

Drawing needs matplotlib (``pip install 'tinyevo[app]'``); the layouts and the DOT text
(:mod:`tinyevo.app.layout`) do not. Every text is drawn as it is (a ``$`` is a dollar sign, not
the start of a formula).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from tinyevo.app._validate import finite_number
from tinyevo.app.callbacks import require_matplotlib
from tinyevo.app.io import atomic_open, write_text
from tinyevo.app.layout import (
    BOX_HEIGHT,
    BOX_WIDTH,
    COLOURS,
    EDGE_COLOURS,
    MERGES,
    Box,
    Edge,
    FamilyLayout,
    Layout,
    TreeNode,
    architecture_dot,
    architecture_layout,
    family_layout,
    keeps_candidates,
)
from tinyevo.evolution.candidate import graph as candidate_graph
from tinyevo.graph import CompGraph

__all__ = ["draw_architecture", "render_dot", "draw_family_tree", "DrawArchitecture",
           "DrawFamilyTree", "KIND_COLOURS", "DOT_FORMATS", "DOT_TIMEOUT"]

KIND_COLOURS = {"mutation": "#3182bd", "crossover": "#756bb1", "copy": "#969696",
                "initial": "#969696"}
DOT_FORMATS = ("png", "svg", "pdf")
DOT_TIMEOUT = 30.0                   # seconds Graphviz's dot gets to lay a graph out
_MAX_PIXELS = 16000                  # the longer side of a picture at most


# --------------------------------------------------------------------- architecture: pictures
def draw_architecture(graph: CompGraph, path: str | os.PathLike) -> Path:
    """Draw ``graph`` as boxes and edges (:func:`~tinyevo.app.layout.architecture_layout`)
    to ``path`` (PNG, or SVG/PDF by its suffix), atomically; returns the path.

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
    ax.set_title(f"{len(layout.boxes)} vertices, {graph.nparams():,} parameters", loc="left",
                 parse_math=False)
    _architecture_legend(ax, layout)
    _save(fig, path)
    return path


def _draw_box(ax: Any, b: Box) -> None:
    from matplotlib.patches import FancyBboxPatch

    w, h = BOX_WIDTH, BOX_HEIGHT
    ax.add_patch(FancyBboxPatch((b.x - w / 2, b.row - h / 2), w, h,
                                boxstyle="round,pad=0,rounding_size=0.08",
                                facecolor=COLOURS[b.role], edgecolor="black",
                                linewidth=2.0 if b.output else 0.8, zorder=3))
    ax.text(b.x, b.row - 0.1, b.name, ha="center", va="center", fontsize=7.5,
            fontweight="bold", zorder=4, parse_math=False)
    ax.text(b.x, b.row + 0.13, b.label, ha="center", va="center", fontsize=7.5, zorder=4,
            parse_math=False)


def _draw_edge(ax: Any, e: Edge) -> None:
    """``e.path``: a line to its last turn, an arrow from there into the target's top."""
    colour = EDGE_COLOURS[e.merge]
    path = e.path
    if len(path) > 2:
        ax.plot([p[0] for p in path[:-1]], [p[1] for p in path[:-1]], color=colour,
                lw=1.2, zorder=1, solid_capstyle="round", solid_joinstyle="round")
    ax.annotate("", xy=path[-1], xytext=path[-2], zorder=2,
                arrowprops={"arrowstyle": "-|>", "color": colour, "lw": 1.2,
                            "shrinkA": 0, "shrinkB": 0, "mutation_scale": 10})


def _architecture_legend(ax: Any, layout: Layout) -> None:
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    roles = [r for r in COLOURS if any(b.role == r for b in layout.boxes)]
    merges = [m for m in MERGES if any(e.merge == m for e in layout.edges)]
    handles = [Patch(facecolor=COLOURS[r], edgecolor="black", label=r) for r in roles]
    handles += [Line2D([], [], color=EDGE_COLOURS[m], label=f"into {m}") for m in merges]
    handles.append(Patch(facecolor="white", edgecolor="black", linewidth=2.0, label="output"))
    ax.legend(handles=handles, loc="upper right", fontsize=8, frameon=False)


def render_dot(dot_text: str, path: str | os.PathLike, timeout: float | None = None) -> bool:
    """Render DOT text to ``path`` (PNG, SVG or PDF by its suffix) with Graphviz's ``dot``,
    atomically; False, writing nothing, where ``dot`` is not installed. A RuntimeError, writing
    nothing, where ``dot`` fails or takes over ``timeout`` seconds (default
    :data:`DOT_TIMEOUT`).

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
    timeout = DOT_TIMEOUT if timeout is None else timeout
    try:
        done = subprocess.run([exe, f"-T{fmt}"], input=dot_text.encode("utf-8"),
                              capture_output=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"Graphviz dot did not render {path.name} within {timeout:g} s "
                           "(a graph too large for it, or a dot that hangs)") from None
    if done.returncode != 0:
        raise RuntimeError(f"Graphviz dot could not render {path.name}: "
                           f"{done.stderr.decode('utf-8', 'replace').strip()[:500]}")
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_open(path, "wb") as f:
        f.write(done.stdout)
    return True


# --------------------------------------------------------------------- family tree
def draw_family_tree(lineage: Any, path: str | os.PathLike) -> Path:
    """Draw the family tree of ``lineage`` (:func:`~tinyevo.app.layout.family_layout`) to
    ``path``, atomically: generations left to right, parent-to-child edges coloured by what made
    the child (a crossover's second parent dashed), candidates coloured by the best fitness they
    reached, the last population ringed, the hall of fame as diamonds, the winner's line in
    bold. Returns the path; a ValueError for a lineage that keeps no candidate.

        >>> draw_family_tree(lineage, "runs/a/family.png")           # doctest: +SKIP
    """
    tree = family_layout(lineage)
    path = _picture_path(path)
    if not tree.nodes:
        raise ValueError("the lineage keeps no candidate (no generation was evaluated yet): "
                         "there is no family tree to draw")
    gens = sorted({n.generation for n in tree.nodes})
    ys = [y for e in tree.edges for _, y in e.points] + [n.y for n in tree.nodes]
    tall = max(ys) - min(ys) + 1.0                 # in candidates' rooms
    height = min(30.0, max(3.5, 0.3 * tall + 1.6))
    fig, ax = _figure(min(30.0, max(6.5, 0.45 * (gens[-1] - gens[0]) + 3.5)), height)
    for e in sorted(tree.edges, key=lambda e: e.winner):       # the winner's line on top
        ax.plot([p[0] for p in e.points], [p[1] for p in e.points],
                color=KIND_COLOURS.get(e.kind, "grey"), lw=2.8 if e.winner else 1.0,
                ls="--" if e.second else "-", alpha=1.0 if e.winner else 0.75,
                zorder=2 if e.winner else 1, solid_joinstyle="round")
    _draw_tree_nodes(ax, tree.nodes, size=max(14.0, min(70.0, 900.0 / tall)))
    ax.set_xlabel("generation (the one a candidate was made in)")
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
    values = [n.fitness for n in nodes if finite_number(n.fitness)]
    lo, hi = (min(values), max(values)) if values else (0.0, 1.0)
    unknown = [n for n in nodes if not finite_number(n.fitness)]
    ax.scatter([n.generation for n in unknown], [n.y for n in unknown], s=size, c="#dddddd",
               edgecolors="grey", linewidths=0.5, zorder=3)
    for marker, group in (("o", lambda n: not n.fame), ("D", lambda n: n.fame)):
        known = [n for n in nodes if finite_number(n.fitness) and group(n)]
        sc = ax.scatter([n.generation for n in known], [n.y for n in known],
                        c=[n.fitness for n in known], cmap="viridis", vmin=lo,
                        vmax=max(hi, lo + 1e-9), s=size * (1.6 if marker == "D" else 1.0),
                        marker=marker, edgecolors=["black" if n.population else "none"
                                                   for n in known],
                        linewidths=1.0, zorder=3)
    if values:
        ax.figure.colorbar(sc, ax=ax, pad=0.01).set_label("best fitness it reached")
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
    """Callback: after each generation, the architecture of that generation's best member in
    ``mdir/NAME.png`` (:func:`draw_architecture`) and ``mdir/NAME.dot``
    (:func:`~tinyevo.app.layout.architecture_dot`). Its name is not the report's
    ``architecture.png``, which is the run's winner (the best model ever evaluated).

        >>> fit(x, y, mdir="runs/a", callbacks=[DrawArchitecture("runs/a")])  # doctest: +SKIP
    """

    def __init__(self, mdir: str | os.PathLike, name: str = "generation_best") -> None:
        _check_name(name)
        require_matplotlib()   # fail now, not after the first generation of a long run
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
    lineage, or one that keeps no candidate yet.

        >>> cb = DrawFamilyTree("runs/a")                            # doctest: +SKIP
    """

    def __init__(self, mdir: str | os.PathLike, name: str = "family",
                 lineage_of: Callable[[Any], Any] | None = None) -> None:
        _check_name(name)
        if lineage_of is not None and not callable(lineage_of):
            raise TypeError(f"lineage_of must be a function population -> Lineage or None, "
                            f"got {lineage_of!r}")
        require_matplotlib()
        self.mdir, self.name = Path(mdir), name
        self.lineage_of = lineage_of if lineage_of is not None else _attached_lineage

    def __call__(self, population: Any) -> None:
        lineage = self.lineage_of(population)
        if keeps_candidates(lineage):
            draw_family_tree(lineage, self.mdir / f"{self.name}.png")

    def __repr__(self) -> str:
        return f"DrawFamilyTree({str(self.mdir)!r}, name={self.name!r})"


# --------------------------------------------------------------------- helpers
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


def _figure(width: float, height: float) -> tuple[Any, Any]:
    """A new Agg figure of ``width`` x ``height`` inches (pyplot's state left alone)."""
    require_matplotlib()
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
