"""Callbacks that watch a run: fitness curves and population scatter plots, kept on disk.

A callback is any callable ``cb(population)``; ``fit`` calls it after each generation's fitness is
computed. The plots here record what they show in a CSV file under ``mdir/plotdata/`` and draw a
PNG in ``mdir``, both written atomically, so a run resumed on the same ``mdir`` continues the
curves, and a generation recorded twice (a resume after a crash mid-generation) replaces its rows.

    >>> plots = MultiPlot(PlotFitness("runs/a"), ScatterPop("runs/a"), ScatterOpt("runs/a"))
    >>> report = lambda p: print(p.generation, p.best().fitness)
    >>> population = fit(x, y, mdir="runs/a", callbacks=[CbAll(plots, report)])  # doctest: +SKIP

Plotting needs matplotlib (``pip install 'tinyevo[app]'``), imported only when a plot is built;
figures are drawn with the Agg canvas, so no display is needed and pyplot's state is left alone.
:func:`history` reads the recorded data back without matplotlib.

Evaluation time (for :class:`ScatterPop`) comes from ``timeof(candidate)``; the default,
:func:`eval_time`, reads a candidate's ``eval_time`` attribute (seconds) or, for a
``TimeFitness`` value ``(seconds, value)``, its seconds.
"""

from __future__ import annotations

import csv
import io as _io
import math
import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from tinyevo.app.checkpoint import persist
from tinyevo.app.io import atomic_open, write_text
from tinyevo.evolution.candidate import graph, nparams, opt
from tinyevo.evolution.objectives import Objectives
from tinyevo.evolution.pareto import nondominated_sort

__all__ = [
    "PlotFitness", "ScatterPop", "ScatterOpt", "PlotPareto", "MultiPlot", "CbAll",
    "history", "fitness_value", "eval_time", "callback_list", "run_callback",
    "require_matplotlib",
]

DATA_DIR = "plotdata"


# --------------------------------------------------------------------- the plots
class _RecordingPlot:
    """A callback that keeps one CSV of rows per generation and draws itself into axes.

    Subclasses set ``columns`` (name -> type), implement ``_rows(population)`` and
    ``_draw(axes)``, and may override ``npanels``.
    """

    columns: dict[str, type] = {}

    def __init__(self, mdir: str | os.PathLike, name: str) -> None:
        if not isinstance(name, str) or not name or os.sep in name or "/" in name:
            raise ValueError(f"name must be a plain file name without folders, got {name!r}")
        require_matplotlib()  # fail now, not after the first generation of a long run
        self.mdir = Path(mdir)
        self.name = name
        self.rows: list[dict[str, Any]] = _read_csv(self.datafile, self.columns)

    @property
    def datafile(self) -> Path:
        """Where the plotted data lives: ``mdir/plotdata/NAME.csv``."""
        return self.mdir / DATA_DIR / f"{self.name}.csv"

    @property
    def pngfile(self) -> Path:
        """Where the figure is drawn: ``mdir/NAME.png``."""
        return self.mdir / f"{self.name}.png"

    def __call__(self, population: Any) -> None:
        """Record ``population`` and redraw ``mdir/NAME.png``."""
        self.record(population)
        _save(self, self.pngfile)

    def record(self, population: Any) -> None:
        """Add ``population``'s rows and write the data file, without drawing.

        Rows of ``population.generation`` and of any later generation are replaced: a run
        resumed from an earlier generation rewrites its history from there on.
        """
        gen = _generation(population)
        kept = [r for r in self.rows if r["generation"] < gen]
        self.rows = kept + [{"generation": gen, **row} for row in self._rows(population)]
        _write_csv(self.datafile, self.columns, self.rows)

    @property
    def npanels(self) -> int:
        """How many axes :meth:`draw` fills."""
        return 1

    def draw(self, axes: Sequence[Any]) -> None:
        """Draw into ``npanels`` matplotlib axes (what :class:`MultiPlot` calls)."""
        self._draw(list(axes))

    def _rows(self, population: Any) -> list[dict[str, Any]]:
        raise NotImplementedError

    def _draw(self, axes: list[Any]) -> None:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.mdir)!r}, name={self.name!r})"


class PlotFitness(_RecordingPlot):
    """Best and mean fitness per generation: ``mdir/NAME.png``, data ``mdir/plotdata/NAME.csv``.

    The mean is over valid (finite) fitness values; ``nvalid`` of ``size`` members had one.

        >>> cb = PlotFitness("runs/a")
        >>> cb(population)  # doctest: +SKIP
    """

    columns = {"generation": int, "best": float, "mean": float, "size": int, "nvalid": int}

    def __init__(self, mdir: str | os.PathLike, name: str = "fitness") -> None:
        super().__init__(mdir, name)

    def _rows(self, population):
        values = [fitness_value(c) for c in population.members]
        valid = [v for v in values if math.isfinite(v)]
        best = max(valid) if valid else math.nan
        mean = math.fsum(valid) / len(valid) if valid else math.nan
        return [{"best": best, "mean": mean, "size": len(values), "nvalid": len(valid)}]

    def _draw(self, axes):
        ax = axes[0]
        gens = [r["generation"] for r in self.rows]
        ax.plot(gens, [r["best"] for r in self.rows], "o-", label="best", markersize=4)
        ax.plot(gens, [r["mean"] for r in self.rows], "s--", label="mean", markersize=3)
        ninvalid = sum(r["size"] - r["nvalid"] for r in self.rows)
        ax.set_title("Fitness per generation" + _invalid_note(ninvalid))
        ax.set_xlabel("generation")
        ax.set_ylabel("fitness")
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.grid(True, alpha=0.3)
        if self.rows:
            ax.legend(loc="best")


class ScatterPop(_RecordingPlot):
    """Fitness of every member vs. model size (log10 parameters) and, when known, evaluation time.

    Points are coloured by generation; the best member of the latest generation is a star. The
    time panel appears once some member has a time from ``timeof(candidate)`` (seconds or None;
    default :func:`eval_time`).

        >>> cb = ScatterPop("runs/a", timeof=lambda c: c.eval_time)
    """

    columns = {"generation": int, "member": int, "fitness": float, "nparams": int,
               "nvertices": int, "eval_time": float}

    def __init__(self, mdir: str | os.PathLike, name: str = "population",
                 timeof: Callable[[Any], float | None] | None = None) -> None:
        if timeof is not None and not callable(timeof):
            raise TypeError(f"timeof must be a function candidate -> seconds, got {timeof!r}")
        super().__init__(mdir, name)
        self.timeof = timeof if timeof is not None else eval_time

    def _rows(self, population):
        rows = []
        for i, c in enumerate(population.members):
            model = graph(c)
            rows.append({"member": i, "fitness": fitness_value(c), "nparams": nparams(model),
                         "nvertices": _nvertices(model), "eval_time": _float(self.timeof(c))})
        return rows

    @property
    def npanels(self):
        return 2 if any(math.isfinite(r["eval_time"]) for r in self.rows) else 1

    def _draw(self, axes):
        def size(r):
            return math.log10(r["nparams"]) if r["nparams"] > 0 else math.nan

        _scatter_by_generation(axes[0], self.rows, size, "model size (log10 parameters)")
        axes[0].set_title("Fitness vs. model size" + _invalid_note(self._ninvalid(size)))
        if len(axes) > 1:
            def seconds(r):
                return r["eval_time"]

            _scatter_by_generation(axes[1], self.rows, seconds, "evaluation time (s)")
            axes[1].set_title("Fitness vs. evaluation time" +
                              _invalid_note(self._ninvalid(seconds)))

    def _ninvalid(self, x):
        return sum(not (math.isfinite(r["fitness"]) and math.isfinite(x(r))) for r in self.rows)


class ScatterOpt(_RecordingPlot):
    """Fitness vs. learning rate (log10), coloured by optimiser type.

    A candidate without its own optimiser (a ``CandidateModel``) counts with ``defaultopt``, or is
    left out when that is None. Older generations are drawn faded.

        >>> cb = ScatterOpt("runs/a")
    """

    columns = {"generation": int, "member": int, "fitness": float, "optimizer": str,
               "learning_rate": float}

    def __init__(self, mdir: str | os.PathLike, name: str = "optimizer",
                 defaultopt: Any = None) -> None:
        super().__init__(mdir, name)
        self.defaultopt = defaultopt

    def _rows(self, population):
        rows = []
        for i, c in enumerate(population.members):
            o = opt(c, self.defaultopt)
            rows.append({"member": i, "fitness": fitness_value(c),
                         "optimizer": "" if o is None else type(o).__name__,
                         "learning_rate": _float(getattr(o, "learning_rate", None))})
        return rows

    def _draw(self, axes):
        ax = axes[0]
        latest = max((r["generation"] for r in self.rows), default=0)
        names = sorted({r["optimizer"] for r in self.rows if r["optimizer"]})
        colours = _colours(len(names))
        shown = 0
        for name, colour in zip(names, colours):
            pts = [(math.log10(r["learning_rate"]), r["fitness"], r["generation"] == latest)
                   for r in self.rows if r["optimizer"] == name
                   and r["learning_rate"] > 0 and math.isfinite(r["learning_rate"])
                   and math.isfinite(r["fitness"])]
            for current in (False, True):  # faded history first, the latest generation on top
                xs = [p[0] for p in pts if p[2] == current]
                ys = [p[1] for p in pts if p[2] == current]
                ax.scatter(xs, ys, color=colour, alpha=1.0 if current else 0.25, s=24,
                           edgecolors="none", label=name if current else None)
            shown += len(pts)
        if not names and self.rows:
            ax.text(0.5, 0.5, "no candidate carries an optimiser\n(pass defaultopt=...)",
                    ha="center", va="center", transform=ax.transAxes)
        ax.set_title("Fitness vs. learning rate" + _invalid_note(len(self.rows) - shown))
        ax.set_xlabel("learning rate (log10)")
        ax.set_ylabel("fitness")
        ax.grid(True, alpha=0.3)
        if names:
            ax.legend(loc="best", title=f"generation {latest} (older: faded)")


class PlotPareto(_RecordingPlot):
    """The Pareto front of a run with objectives: objective ``y`` against ``x`` (default the
    first objective against "params", else the second), on a log x axis where every x is
    positive. Every member evaluated is a point, earlier generations faded; the front (the
    members no other one recorded dominates, on all the objectives) is highlighted and joined.

    The data file has a column per objective after ``generation,member,fitness``; it is
    written once members carry objectives (:class:`~tinyevo.evolution.Objectives`), so the
    plot draws nothing, and writes nothing, for a run without them.

        >>> cb = PlotPareto("runs/a")              # with fit(..., objectives=...)
    """

    PREFIX = {"generation": int, "member": int, "fitness": float}

    def __init__(self, mdir: str | os.PathLike, name: str = "pareto", x: str | None = None,
                 y: str | None = None) -> None:
        self.columns: dict[str, type] = {}
        self.senses: tuple[str, ...] = ()
        self.x, self.y = x, y
        path = Path(mdir) / DATA_DIR / f"{name}.csv"
        if path.is_file():                     # a resumed run: its objectives are the file's
            self.columns = self.columns_for(_header(path)) or {"": str}
        super().__init__(mdir, name)

    @classmethod
    def columns_for(cls, header: list[str]) -> dict[str, type] | None:
        """The columns of a data file of this plot with ``header``; None if it is none."""
        if header[:3] != list(cls.PREFIX) or len(header) < 5:
            return None
        return {**cls.PREFIX, **dict.fromkeys(header[3:], float)}

    def record(self, population: Any) -> None:
        values = [getattr(c, "fitness", None) for c in population.members]
        marked = [v for v in values if isinstance(v, Objectives)]
        if not marked:
            return
        names = {**self.PREFIX, **dict.fromkeys(marked[0].names, float)}
        if self.columns and self.columns != names:
            raise ValueError(f"{self.datafile}: recorded objectives "
                             f"{list(self.columns)[3:]}, the population has "
                             f"{list(marked[0].names)}; give the plot another name=")
        self.columns, self.senses = names, marked[0].senses
        super().record(population)

    def __call__(self, population: Any) -> None:
        """Record ``population`` and, once there is a front, redraw ``mdir/NAME.png``."""
        self.record(population)
        if self.npanels:
            _save(self, self.pngfile)

    def _rows(self, population):
        rows = []
        for i, c in enumerate(population.members):
            f = getattr(c, "fitness", None)
            vector = f.as_dict() if isinstance(f, Objectives) else {}
            rows.append({"member": i, "fitness": fitness_value(c),
                         **{n: _float(vector.get(n)) for n in list(self.columns)[3:]}})
        return rows

    @property
    def npanels(self):
        return 1 if self.rows and self.senses else 0

    def _draw(self, axes):
        if not self.npanels:
            return
        names = list(self.columns)[3:]
        y = self.y or names[0]
        x = self.x or ("params" if "params" in names and y != "params" else names[1])
        ok = [r for r in self.rows if all(math.isfinite(r[n]) for n in names)]
        front = _front_rows(ok, names, self.senses)
        ax, latest = axes[0], max((r["generation"] for r in ok), default=0)
        for gen in sorted({r["generation"] for r in ok}):   # earlier generations faded
            pts = [r for r in ok if r["generation"] == gen]
            age = latest - gen
            ax.scatter([r[x] for r in pts], [r[y] for r in pts], s=18,
                       color="tab:blue" if age == 0 else "grey",
                       alpha=1.0 if age == 0 else max(0.12, 0.5 - 0.05 * age),
                       edgecolors="none", label=f"generation {gen}" if age == 0 else None)
        front.sort(key=lambda r: r[x])
        ax.plot([r[x] for r in front], [r[y] for r in front], "-", color="crimson", lw=1.2,
                drawstyle="steps-post" if len(names) == 2 else "default")
        ax.scatter([r[x] for r in front], [r[y] for r in front], marker="D", s=40,
                   color="crimson", edgecolors="black", linewidths=0.6, zorder=3,
                   label=f"Pareto front ({len(front)})")
        if ok and all(r[x] > 0 for r in ok):
            ax.set_xscale("log")
        ax.set_title(f"Pareto front, {len(ok)} evaluations (latest: generation {latest})"
                     + _invalid_note(len(self.rows) - len(ok)))
        ax.set_xlabel(x + (" (log)" if ax.get_xscale() == "log" else ""))
        ax.set_ylabel(y)
        ax.grid(True, alpha=0.3)
        if front:
            ax.legend(loc="best")


# --------------------------------------------------------------------- combining
class MultiPlot:
    """Several plots in one figure, one or two panels each, saved to ``path`` after each call.

    ``path`` defaults to ``multiplot.png`` in the first plot's ``mdir``. Each plot records its
    data as when called alone; only the combined figure is drawn. A plot is anything with
    ``record(population)``, ``npanels`` and ``draw(axes)``, as the plots here have.

        >>> plots = MultiPlot(PlotFitness("runs/a"), ScatterPop("runs/a"), ScatterOpt("runs/a"))
    """

    def __init__(self, *plots: Any, path: str | os.PathLike | None = None) -> None:
        if not plots:
            raise ValueError("MultiPlot needs at least one plot, e.g. MultiPlot(PlotFitness(mdir))")
        for p in plots:
            if not all(hasattr(p, a) for a in ("record", "npanels", "draw")):
                raise TypeError(f"MultiPlot combines PlotFitness, ScatterPop, ScatterOpt and "
                                f"PlotPareto objects, got {p!r}; wrap other callbacks with "
                                "CbAll")
        if path is None and not hasattr(plots[0], "mdir"):
            raise ValueError("MultiPlot: pass path=..., the first plot has no mdir")
        self.plots = tuple(plots)
        self.path = Path(path) if path is not None else Path(plots[0].mdir) / "multiplot.png"

    def __call__(self, population: Any) -> None:
        """Record ``population`` in every plot and redraw the combined figure."""
        for p in self.plots:
            p.record(population)
        _save(self, self.path)

    @property
    def npanels(self) -> int:
        return sum(p.npanels for p in self.plots)

    def draw(self, axes: Sequence[Any]) -> None:
        axes = list(axes)
        for p in self.plots:
            p.draw(axes[:p.npanels])
            axes = axes[p.npanels:]

    def __repr__(self) -> str:
        inner = ", ".join(repr(p) for p in self.plots)
        return f"MultiPlot({inner}, path={str(self.path)!r})"


class CbAll:
    """One callback that calls each of ``callbacks`` in order with the population.

        >>> cb = CbAll(persist("runs/a-copy"), PlotFitness("runs/a"))  # doctest: +SKIP

    Each must be a callback itself, not a function that makes one: ``persist`` takes a folder
    and returns the callback, so ``CbAll(persist, ...)`` is a TypeError at once (and any
    callback that returns a function instead of acting is one when it is called).
    """

    def __init__(self, *callbacks: Callable[[Any], Any]) -> None:
        self.callbacks = tuple(_checked(cb, "CbAll") for cb in callbacks)

    def __call__(self, population: Any) -> None:
        for cb in self.callbacks:
            run_callback(cb, population)

    def __repr__(self) -> str:
        return f"CbAll({', '.join(repr(cb) for cb in self.callbacks)})"


def callback_list(callbacks: Any) -> list[Callable[[Any], Any]]:
    """``fit``'s ``callbacks`` (one callable or a list of them) as a list, each checked as
    :class:`CbAll` checks its own."""
    if not callable(callbacks) and not isinstance(callbacks, Sequence | None):
        raise TypeError(f"fit: callbacks must be a callable of the population or a list of "
                        f"them, got {type(callbacks).__name__}")
    cbs = [callbacks] if callable(callbacks) else list(callbacks or ())
    return [_checked(cb, "fit: callbacks") for cb in cbs]


def run_callback(cb: Callable[[Any], Any], population: Any) -> None:
    """Call ``cb(population)``; a callback that returns a function made a callback instead of
    acting (a factory passed by mistake) and is a TypeError, not a silent no-op."""
    made = cb(population)
    if callable(made):
        raise TypeError(f"the callback {cb!r} returned {made!r} instead of acting on the "
                        "population: it makes callbacks rather than being one; pass what it "
                        "returns (e.g. persist(mdir), not persist)")


def _checked(cb: Any, where: str) -> Callable[[Any], Any]:
    if not callable(cb):
        raise TypeError(f"{where} takes callables cb(population), got {cb!r}")
    if cb is persist:
        raise TypeError(f"{where}: persist makes a callback from a folder, it is not one: pass "
                        "persist(mdir), which writes the population's checkpoint to mdir after "
                        "each generation (fit with mdir= already checkpoints there)")
    return cb


# --------------------------------------------------------------------- reading back
def history(mdir: str | os.PathLike) -> dict[str, list[dict[str, Any]]]:
    """The recorded plot data of a run: data file name -> rows (dicts), oldest first.

    Needs no matplotlib. Columns are typed as the callbacks wrote them; unknown files are read
    with every value a string. Empty when nothing was recorded.

        >>> history("runs/a")["fitness"][-1]  # doctest: +SKIP
        {'generation': 7, 'best': 0.97, 'mean': 0.91, 'size': 8, 'nvalid': 8}
    """
    folder = Path(mdir) / DATA_DIR
    if not folder.is_dir():
        return {}
    known = {"fitness": PlotFitness.columns, "population": ScatterPop.columns,
             "optimizer": ScatterOpt.columns}
    out = {}
    for path in sorted(folder.glob("*.csv")):
        columns = known.get(path.stem)
        if columns is None:  # a renamed plot, or PlotPareto's: recognise it by its header
            header = _header(path)
            columns = next((c for c in known.values() if list(c) == header),
                           PlotPareto.columns_for(header) or dict.fromkeys(header, str))
        out[path.stem] = _read_csv(path, columns)
    return out


# --------------------------------------------------------------------- values of candidates
def fitness_value(c: Any) -> float:
    """The fitness of ``c`` as a float; NaN when missing or not a number.

    A ``TimeFitness`` value ``(seconds, value)`` gives ``value``.

        >>> fitness_value(FittedCandidate(c, (0.2, 0.9)))  # doctest: +SKIP
        0.9
    """
    f = getattr(c, "fitness", None)
    if isinstance(f, tuple | list) and len(f) == 2:
        f = f[1]
    return _float(f)


def eval_time(c: Any) -> float | None:
    """Seconds it took to evaluate ``c``: its ``eval_time`` attribute (set by ``fit``), else the
    seconds of a ``TimeFitness`` value ``(seconds, value)``, else None.

        >>> eval_time(FittedCandidate(c, (0.2, 0.9)))  # doctest: +SKIP
        0.2
    """
    t = getattr(c, "eval_time", None)
    if t is not None:
        return t
    f = getattr(c, "fitness", None)
    if isinstance(f, tuple | list) and len(f) == 2:
        return f[0]
    return None


# --------------------------------------------------------------------- helpers
def _generation(population: Any) -> int:
    gen = getattr(population, "generation", None)
    if not isinstance(gen, int) or isinstance(gen, bool) or not hasattr(population, "members"):
        raise TypeError(f"a callback takes a Population (with .generation and .members), got "
                        f"{type(population).__name__}")
    return gen


def _float(x: Any) -> float:
    """``float(x)`` for numbers (NumPy/CuPy scalars included), NaN for anything else."""
    if x is None or isinstance(x, str | bool):
        return math.nan
    try:
        return float(x)
    except (TypeError, ValueError, OverflowError):
        return math.nan


def _nvertices(model: Any) -> int:
    vertices = getattr(model, "vertices", None)
    if vertices is not None and not callable(vertices):
        return len(vertices)
    layers = getattr(model, "layers", None)
    if callable(layers):
        return sum(1 for _ in layers())
    return 0


def _invalid_note(n: int) -> str:
    return f"\n({n} invalid not shown)" if n else ""


def _colours(n: int) -> list[Any]:
    from matplotlib import colormaps

    cmap = colormaps["tab10" if n <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(n)]


def _scatter_by_generation(ax: Any, rows: list[dict], x: Callable[[dict], float],
                           xlabel: str) -> None:
    pts = [(x(r), r["fitness"], r["generation"]) for r in rows]
    pts = [p for p in pts if math.isfinite(p[0]) and math.isfinite(p[1])]
    gens = [r["generation"] for r in rows]
    if pts:
        lo, hi = min(gens), max(gens)
        sc = ax.scatter([p[0] for p in pts], [p[1] for p in pts], c=[p[2] for p in pts],
                        cmap="viridis", vmin=lo, vmax=max(hi, lo + 1), s=24, alpha=0.8,
                        edgecolors="none")
        bar = ax.figure.colorbar(sc, ax=ax)
        bar.set_label("generation")
        bar.locator = _integer_locator()
        bar.update_ticks()
        latest = [p for p in pts if p[2] == hi]
        if latest:
            bx, by, _ = max(latest, key=lambda p: p[1])
            ax.scatter([bx], [by], marker="*", s=180, color="crimson", edgecolors="black",
                       linewidths=0.6, zorder=3, label=f"best of generation {hi}")
            ax.legend(loc="best")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("fitness")
    ax.grid(True, alpha=0.3)


def _front_rows(rows: list[dict], names: list[str], senses: Sequence[str]) -> list[dict]:
    """The rows on the Pareto front of ``rows`` by the objectives ``names`` (one point each)."""
    points = [tuple(r[n] if s == "max" else -r[n] for n, s in zip(names, senses))
              for r in rows]
    unique: dict[tuple, dict] = {}
    for i in nondominated_sort(points)[0] if points else []:
        unique.setdefault(points[i], rows[i])
    return list(unique.values())


def _integer_locator() -> Any:
    from matplotlib.ticker import MaxNLocator

    return MaxNLocator(integer=True)


def _save(plot: Any, path: Path) -> None:
    """Draw ``plot`` into a new Agg figure and write it to ``path`` atomically as PNG."""
    require_matplotlib()
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    n = max(plot.npanels, 1)
    ncols = 1 if n == 1 else 2 if n in (2, 4) else 3
    nrows = -(-n // ncols)
    fig = Figure(figsize=(5.2 * ncols, 4.0 * nrows), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel().tolist()
    for ax in axes[n:]:
        ax.remove()
    plot.draw(axes[:n])
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_open(path, "wb") as f:
        fig.savefig(f, format="png", dpi=100)


def require_matplotlib() -> Any:
    """matplotlib, imported; an ImportError that says how to install it where it is missing."""
    try:
        import matplotlib
    except ImportError:
        raise ImportError("tinyevo's plots need matplotlib, which is not installed: "
                          "pip install 'tinyevo[app]' (or pip install matplotlib)") from None
    return matplotlib


def _write_csv(path: Path, columns: dict[str, type], rows: Iterable[dict]) -> None:
    buf = _io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow([repr(float(row[k])) if columns[k] is float else row[k] for k in columns])
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text(path, buf.getvalue())


def _header(path: Path) -> list[str]:
    with open(path, newline="", encoding="utf-8") as f:
        return next(csv.reader(f), [])


def _read_csv(path: Path, columns: dict[str, type]) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header != list(columns):
            raise ValueError(f"{path}: expected the columns {','.join(columns)}, found "
                             f"{header}; the file was not written by this plot — move it away "
                             "or give the plot another name=")
        rows = []
        for lineno, fields in enumerate(reader, start=2):
            try:
                if len(fields) != len(columns):
                    raise ValueError(f"{len(fields)} fields, expected {len(columns)}")
                rows.append({k: t(v) for (k, t), v in zip(columns.items(), fields)})
            except ValueError as err:
                raise ValueError(f"{path}, line {lineno}: {err}; the file is damaged — fix or "
                                 "remove it") from err
    return rows
