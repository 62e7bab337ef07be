"""The ``tinyevo`` command: ``tinyevo fit`` evolves a model, ``tinyevo show`` summarises a run,
``tinyevo report`` writes its report.html, ``tinyevo predict`` runs a run's best model on new
data.

    tinyevo fit                                   # the bundled digits, 5 minutes
    tinyevo fit --data mnist:~/data/mnist --time-limit 1h --dir runs/mnist --workers 2
    tinyevo show runs/mnist
    tinyevo report runs/mnist                     # runs/mnist/report.html
    tinyevo fit --data iris.csv --target species --dir runs/iris
    tinyevo predict runs/iris new_flowers.csv -o predictions.csv
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import re
import sys
import time
from dataclasses import fields
from pathlib import Path
from typing import Any

from tinyevo.app.config import FitConfig

__all__ = ["main", "parse_duration"]

DEFAULT_DIR = "runs/digits"
AFTER_FIT_RESERVE = 10.0      # seconds kept from a time limit for the final test and export
FRONT_RESERVE = 30.0          # with objectives: also the test and export of the Pareto front


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    logging.basicConfig(level=logging.WARNING if not args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.run(args)
    except BrokenPipeError:
        # The reader went away (`tinyevo show DIR | head`): nothing more to say to it.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    except (ValueError, OSError, RuntimeError, ImportError) as err:
        print(f"tinyevo: error: {err}", file=sys.stderr)
        return 1


def parse_duration(text: str) -> float:
    """Seconds from "90", "90s", "5m", "1h30m", "2h"."""
    s = str(text).strip().lower()
    if re.fullmatch(r"\d+(\.\d+)?", s):
        return float(s)
    parts = re.findall(r"(\d+(?:\.\d+)?)([hms])", s)
    if not parts or "".join(n + u for n, u in parts) != s:
        raise argparse.ArgumentTypeError(f"cannot read {text!r} as a duration: use e.g. 90, 90s, "
                                         "5m, 1h30m")
    return sum(float(n) * {"h": 3600, "m": 60, "s": 1}[u] for n, u in parts)


def _positive_int(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return n


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="tinyevo",
        description="Evolve neural networks (classifiers, regressors) with a genetic algorithm "
                    "while training them (NAS with weight inheritance).")
    p.add_argument("-v", "--verbose", action="store_true", help="log what happens (INFO)")
    sub = p.add_subparsers(title="commands", dest="command")

    f = sub.add_parser(
        "fit", help="evolve a model on a dataset",
        description="Evolve a classifier or regressor. Resumes when --dir holds a run. Ends "
                    "with the best model's test accuracy (or R²) and where its checkpoint, "
                    "plots, ONNX file and report.html are. Ctrl-C stops cleanly; run the same "
                    "command again to continue.")
    f.add_argument("--data", default="digits",
                   help="digits (bundled, default) | mnist:DIR | fashion-mnist:DIR | "
                        "cifar10:DIR | FILE.npz (arrays x, y or x_train, y_train, x_test, "
                        "y_test) | FILE.csv or FILE.tsv (a header row; with --target)")
    f.add_argument("--target", default=None, metavar="COLUMN",
                   help="with --data FILE.csv: the column to predict; every other column is a "
                        "feature (docs/tabular.md)")
    f.add_argument("--generations", type=_positive_int, default=None,
                   help="stop after this many generations")
    f.add_argument("--time-limit", type=parse_duration, default=None,
                   help="stop after this long, e.g. 90s, 5m, 1h (default 5m when no "
                        "--generations)")
    f.add_argument("--dir", default=DEFAULT_DIR,
                   help=f"run directory: checkpoints, plots, best model (default {DEFAULT_DIR})")
    f.add_argument("--workers", type=_positive_int, default=None,
                   help="evaluate candidates in this many local processes, one core each "
                        "(default: one per CPU, at most 8; 1 = in this process)")
    f.add_argument("--dask-scheduler", default=None, metavar="ADDRESS",
                   help="evaluate candidates on a Dask cluster, e.g. tcp://host:8786")
    f.add_argument("--backend", choices=("numpy", "cupy"), default=None,
                   help="array backend (default numpy, or $TINYEVO_BACKEND)")
    f.add_argument("--init", action="append", default=None, metavar="DIR",
                   help="start from this saved tinyevo model (a folder written by save_model, "
                        "e.g. another run's best/); repeat for several")
    f.add_argument("--no-plots", action="store_true",
                   help="do not draw plots, nor the report's pictures (report.html is "
                        "written without them)")
    f.add_argument("--no-progress", action="store_true",
                   help="plain progress lines (a line per finished candidate, at most every "
                        "10 s, and per generation) instead of the live display")
    _add_settings(f)
    f.set_defaults(run=_fit)

    s = sub.add_parser("show", help="summarise a run directory",
                       description="Print a run's progress and its best architecture.")
    s.add_argument("dir", help="run directory written by tinyevo fit")
    s.add_argument("--lineage", action="store_true",
                   help="print the best model's line instead: each ancestor back to generation "
                        "1, with the generation it was made in, the best fitness it reached, "
                        "its parameters and the mutations and crossovers that made it "
                        "(docs/lineage.md)")
    s.set_defaults(run=_show)

    w = sub.add_parser("report", help="write a run's report.html",
                       description="Write DIR/report.html, one self-contained page (images "
                                   "embedded, no network): the summary, the fitness plots, the "
                                   "hall of fame (and Pareto front), the winner's architecture "
                                   "and its lineage. Draws the pictures first: "
                                   "architecture.png, architecture.dot (and architecture.svg "
                                   "where Graphviz's dot is installed), family.png. Changes "
                                   "nothing else in DIR. tinyevo fit writes it at the end of a "
                                   "run (docs/report.md).")
    w.add_argument("dir", help="run directory written by tinyevo fit")
    w.set_defaults(run=_report)

    r = sub.add_parser("predict", help="predict with a run's best model",
                       description="Run the best model of a finished tinyevo fit run on new "
                                   "data and write a CSV table: the prediction and, for a "
                                   "classifier, one probability column per class. Writes "
                                   "nothing in the run directory.")
    r.add_argument("dir", metavar="RUN_DIR", help="run directory written by tinyevo fit")
    r.add_argument("data", metavar="DATA",
                   help="FILE.csv or FILE.tsv with the training's feature columns (by name; "
                        "other columns are ignored), or FILE.npz with an array x (or x_test)")
    r.add_argument("-o", "--output", default=None, metavar="OUT.csv",
                   help="write the table here (default: standard output)")
    r.set_defaults(run=_predict)
    return p


# The flags of FitConfig's settings: --NAME-WITH-DASHES, its type read from the annotation,
# its help the field's doc, but for these.
_FLAG_NAMES = {"population_size": "--population"}
_FLAG_TYPES = {"int": int, "float": float, "candidate_time_limit": parse_duration,
               "tuple[str, ...]": str}         # objectives: "accuracy,params", read by FitConfig
_METAVARS = {"int": "N", "float": "X", "candidate_time_limit": "TIME",
             "tuple[str, ...]": "A,B"}
_FLAG_HELP = {"seed": "the run's random seed (default 0; a resumed run keeps its own)",
              "candidate_time_limit": FitConfig.doc("candidate_time_limit").replace(
                  "seconds", "time (e.g. 30s, 2m)")}


def _add_settings(parser: argparse.ArgumentParser) -> None:
    """A flag per field of :class:`FitConfig`, each defaulting to None (not given)."""
    group = parser.add_argument_group(
        "settings", "the fields of tinyevo.app.FitConfig (docs/fit.md). A setting not given "
                    "(None) is chosen for the data, or is the checkpoint's when resuming")
    for f in fields(FitConfig):
        flag = _FLAG_NAMES.get(f.name, "--" + f.name.replace("_", "-"))
        kind = f.type.split(" | ")[0]
        text = _FLAG_HELP.get(f.name, FitConfig.doc(f.name))
        if f.default is not None and kind != "bool":
            text += f" (default {f.default})"
        opts: dict[str, Any] = {"dest": f.name, "default": None, "help": text.replace("%", "%%")}
        if kind == "bool":          # a None default (chosen for the data): --X / --no-X
            opts["action"] = ("store_true" if f.default is not None
                              else argparse.BooleanOptionalAction)
        elif kind == "tuple[int, int]":
            opts.update(type=int, nargs=2, metavar=("LOW", "HIGH"))
        elif f.metadata["choices"]:
            opts.update(choices=f.metadata["choices"])
        else:
            opts.update(type=_FLAG_TYPES.get(f.name, _FLAG_TYPES[kind]),
                        metavar=_METAVARS.get(f.name, _METAVARS[kind]))
        group.add_argument(flag, **opts)


def _settings(args: argparse.Namespace, resuming: bool) -> FitConfig:
    """The run's FitConfig from the flags given; a new run's seed is 0 unless given."""
    given = {f.name: getattr(args, f.name) for f in fields(FitConfig)
             if getattr(args, f.name) is not None}
    if not resuming:
        given.setdefault("seed", 0)
    return FitConfig(**given)


# ---------------------------------------------------------------------------- fit

def _fit(args: argparse.Namespace) -> int:
    t_start = time.monotonic()          # the time limit counts from here, loading included
    import tinyevo as te
    from tinyevo.app import callbacks as cbs
    from tinyevo.app.checkpoint import CHECKPOINT_DIR, stored_settings
    from tinyevo.app.io import complete_dir, write_json
    from tinyevo.app.pareto import format_front
    from tinyevo.app.predict import RESULT_FILE, load_run_data, record_data
    from tinyevo.app.summary import test_text
    from tinyevo.app.tasks import SCORE_NAMES

    if args.backend:
        te.backend.use(args.backend)
    if args.workers and args.dask_scheduler:
        raise ValueError("give --workers or --dask-scheduler, not both")
    time_limit = args.time_limit
    if time_limit is None and args.generations is None:
        time_limit = 300.0
    mdir = Path(args.dir).expanduser()
    resumed = complete_dir(mdir / CHECKPOINT_DIR) is not None   # also one a crash left mid-swap
    config = _settings(args, resumed)
    task = config.task or (stored_settings(mdir) or {}).get("task") if resumed else config.task
    (x, y), (x_test, y_test), data_info = load_run_data(args.data, args.target, task)
    mdir.mkdir(parents=True, exist_ok=True)
    record_data(mdir, data_info, resumed)
    callbacks = []
    if not args.no_plots:
        try:       # PlotPareto draws only in a run with objectives
            callbacks.append(cbs.MultiPlot(cbs.PlotFitness(mdir), cbs.ScatterPop(mdir),
                                           cbs.ScatterOpt(mdir), cbs.PlotPareto(mdir)))
        except ImportError as err:
            print(f"tinyevo: plots off ({err})", file=sys.stderr)
    if args.dask_scheduler:
        executor = te.app.DaskEvaluator(args.dask_scheduler)
    else:
        workers = args.workers or min(os.cpu_count() or 1, 8)
        executor = te.app.ProcessEvaluator(workers) if workers > 1 else None
    print(f"tinyevo fit: {args.data}: {len(y)} training and {len(y_test)} test samples of shape "
          f"{tuple(x.shape[1:])}; run directory {mdir}"
          + (" (resuming)" if resumed else ""), flush=True)
    run_limit = None
    if time_limit is not None:
        # What loading took comes off the run's share, and a little is kept for the final
        # test and export, which come after fit (docs/fit.md).
        after = min(AFTER_FIT_RESERVE, 0.015 * time_limit)
        if _run_objectives(config, mdir):
            after = min(FRONT_RESERVE, 0.05 * time_limit)
        run_limit = max(1.0, time_limit - (time.monotonic() - t_start) - after)
    display = _Progress(args.generations, time_limit, t_start, live=not args.no_progress)
    try:
        with display:
            population = te.fit(x, y, generations=args.generations, time_limit=run_limit,
                                mdir=mdir, callbacks=callbacks, executor=executor,
                                progress=display.update, config=config, initial=args.init)
    finally:
        close = getattr(executor, "close", None)
        if callable(close):
            close()
    best = te.app.fitting.result_model(population)
    graph, task = best.graph(), population.task
    score = best.evaluate(x_test, y_test)           # accuracy, or R² for a regression
    te.save_model(graph, mdir / "best")
    onnx_path = mdir / "best.onnx"
    try:
        te.export_onnx(graph, onnx_path, input_shape=tuple(x.shape[1:]))
    except ImportError:
        onnx_path = None
    front = population.pareto_front
    rows = None if front is None else _export_front(front, mdir, x.shape[1:], (x_test, y_test))
    seconds = time.monotonic() - t_start
    write_json(mdir / RESULT_FILE, {
        "generation": population.generation, "best_generation": best.generation,
        "final_training": population.final is not None, "task": task,
        SCORE_NAMES[task]: score, "test_samples": len(y_test),
        "validation_fitness": best.fitness, "nparams": graph.nparams(),
        "nvertices": len(graph.vertices), "seconds": seconds,
        **({} if rows is None else {"pareto_front": rows})})
    print(f"\ngeneration {population.generation}, {seconds:.0f} s this session")
    which = ("the best ever evaluated, trained on at the end" if population.final is not None
             else "the best ever evaluated")
    print(f"best model ({which}, from generation {best.generation}): test "
          f"{test_text(task, score)} on {len(y_test)} held-out samples (validation "
          f"fitness {best.fitness:.4f}); {graph.nparams():,} parameters, "
          f"{len(graph.vertices)} vertices")
    print(f"checkpoint: {mdir / 'checkpoint'}   best model: {mdir / 'best'}")
    if onnx_path is not None:
        print(f"ONNX: {onnx_path}")
    else:
        print("ONNX: not written (pip install 'tinyevo[onnx]')")
    if rows is not None:
        print(f"\nPareto front: {len(rows)} models no other evaluated model beats on every "
              f"objective, in {mdir / 'front'} (NN/ saved model, NN.onnx; table front.json)")
        print(format_front(rows))
    if callbacks:
        print(f"plots: {mdir / 'multiplot.png'}")
    _end_report(mdir, draw=not args.no_plots)
    print(f"more: tinyevo show {mdir}")
    return 0


def _end_report(mdir: Path, draw: bool) -> None:
    """The run's report.html (pictures drawn unless ``draw`` is False); the run's results are
    saved already, so a report that fails is a warning, not a failed run."""
    from tinyevo.app.report import write_report

    try:
        print(f"report: {write_report(mdir, draw=draw)}")
    except (ValueError, OSError, RuntimeError, ImportError) as err:
        print(f"tinyevo: report not written ({err}); try: tinyevo report {mdir}",
              file=sys.stderr)


def _run_objectives(config: FitConfig, mdir: Path) -> Any:
    """The run's objectives: the flag's, else a resumed run's (from its checkpoint's settings,
    without loading its models); None where unknown."""
    if config.objectives is not None:
        return config.objectives
    from tinyevo.app.checkpoint import stored_settings

    return (stored_settings(mdir) or {}).get("objectives")


def _export_front(front: Any, mdir: Path, input_shape: tuple, test: tuple) -> list[dict]:
    """The Pareto front's models saved in ``mdir/front``, with its table; the rows."""
    from tinyevo.app.pareto import FRONT_DIR, export_front

    return export_front(front, mdir / FRONT_DIR, tuple(input_shape), test)


class _Progress:
    """Progress that never looks hung: a live display with rich on a terminal, else a line
    per finished candidate (at most one every ``every`` seconds, and always the generation's
    last) and one per generation, each with the time left."""

    def __init__(self, generations: int | None, time_limit: float | None, t_start: float,
                 live: bool, every: float = 10.0):
        self.generations, self.time_limit, self.t_start = generations, time_limit, t_start
        self.every, self.last_line = every, -math.inf
        self.live: Any = None
        self.state = {"generation": 1, "done": 0, "total": 0, "best": None, "mean": None,
                      "best_ever": None, "last": None, "final": None}
        if live and sys.stdout.isatty():
            try:
                from rich.live import Live
                self.live = Live(self._render(), refresh_per_second=4, transient=False)
            except ImportError:
                self.live = None

    def __enter__(self) -> _Progress:
        if self.live is not None:
            self.live.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.live is not None:
            self.live.__exit__(*exc)

    def update(self, event: dict) -> None:
        st = self.state
        now = time.monotonic()
        if event["event"] == "candidate":
            st.update(generation=event["generation"], done=event["done"], total=event["total"],
                      last=event.get("fitness"))
            line = (f"generation {event['generation']:4d}: candidate {event['done']}/"
                    f"{event['total']} trained{_value(' fitness', event.get('fitness'))}"
                    f"{_value(' in', event.get('seconds'), '.1f', ' s')}{self._left()}")
            due = now - self.last_line >= self.every or event["done"] == event["total"]
        elif event["event"] == "final":
            st.update(final=event)
            if "fitness" in event:
                line = (f"final training of the best model: {event['steps']} steps in "
                        f"{event['seconds']:.0f} s, validation fitness {event['before']:.4f} "
                        f"-> {event['fitness']:.4f}{self._left()}")
            else:
                line = (f"final training of the best model: {event['steps']} steps, "
                        f"{event['seconds']:.0f} of {event['of']:.0f} s{self._left()}")
            due = now - self.last_line >= self.every or "fitness" in event
        else:
            st.update(generation=event["generation"], best=event["best"], mean=event["mean"],
                      best_ever=event.get("best_ever"))
            line = (f"generation {event['generation']:4d}: best {event['best']:.4f}  mean "
                    f"{event['mean']:.4f}{_value('  best ever', event.get('best_ever'))}  "
                    f"({event['seconds']:.1f} s){self._left()}")
            due = True
        if self.live is not None:
            self.live.update(self._render())
        elif due:
            print(line, flush=True)
            self.last_line = now

    def _left(self) -> str:
        if self.time_limit is None:
            return ""
        left = max(0.0, self.time_limit - (time.monotonic() - self.t_start))
        return f", {left:.0f} s left"

    def _render(self) -> Any:
        from rich.table import Table
        st = self.state
        t = Table.grid(padding=(0, 2))
        gens = f"/{self.generations}" if self.generations else ""
        t.add_row("generation", f"{st['generation']}{gens}")
        t.add_row("candidates trained", f"{st['done']}/{st['total']}"
                  + _value("  last fitness", st["last"]))
        t.add_row("best fitness", "-" if st["best"] is None else f"{st['best']:.4f}")
        t.add_row("best ever", "-" if st["best_ever"] is None else f"{st['best_ever']:.4f}")
        t.add_row("mean fitness", "-" if st["mean"] is None else f"{st['mean']:.4f}")
        if st["final"] is not None:
            f = st["final"]
            t.add_row("final training", f"{f['steps']} steps, {f['seconds']:.0f} s"
                      + _value(", fitness", f.get("fitness")))
        t.add_row("elapsed", f"{time.monotonic() - self.t_start:.0f} s" + self._left())
        return t


def _value(label: str, value: Any, fmt: str = ".4f", unit: str = "") -> str:
    return "" if not isinstance(value, (int, float)) else f"{label} {value:{fmt}}{unit}"


# ---------------------------------------------------------------------------- predict

def _predict(args: argparse.Namespace) -> int:
    from tinyevo.app.predict import predict
    from tinyevo.app.tables import table_text, write_table

    run, out = Path(args.dir).expanduser(), args.output
    if out is not None:
        target = Path(out).expanduser().resolve()
        if run.resolve() in target.parents:
            raise ValueError(f"-o {out} lies in the run directory {run}, which predict leaves as "
                             "it is: write the predictions elsewhere")
        if target == Path(args.data).expanduser().resolve():
            raise ValueError(f"-o {out} is the data file itself: write the predictions elsewhere")
    header, columns = predict(run, args.data)
    if out is None:
        sys.stdout.write(table_text(header, columns))
    else:
        write_table(Path(out).expanduser(), header, columns)
        print(f"tinyevo predict: {len(columns[0])} predictions written to {out}", file=sys.stderr)
    return 0


# ---------------------------------------------------------------------------- show

def _show(args: argparse.Namespace) -> int:
    from tinyevo.app.summary import run_summary, show_text

    summary = run_summary(args.dir)
    if args.lineage:
        print(summary.run_line())
        return _show_lineage(summary.mdir, summary.lineage, summary.winner_id(), summary.final)
    print(show_text(summary))
    return 0


# ---------------------------------------------------------------------------- report

def _report(args: argparse.Namespace) -> int:
    from tinyevo.app.report import write_report

    print(f"tinyevo report: {write_report(args.dir)}")
    return 0


def _show_lineage(mdir: Path, lineage: Any, winner: int | None, final: Any) -> int:
    """The winner's line; an error for a run that recorded none."""
    from tinyevo.app.lineage_io import format_line

    if lineage is None:
        raise ValueError(f"{mdir} has no lineage: its checkpoint was written by a tinyevo that "
                         "did not record one yet, or its lineage.json did not load (a warning "
                         "above says why); resuming the run with this version records it from "
                         "then on (docs/lineage.md)")
    print(format_line(lineage, winner, final))
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
