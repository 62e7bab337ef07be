"""A run's report: one self-contained HTML page, ``report.html`` in the run directory.

The page holds the summary (data, settings, time, generations, the best model's fitness and
test score, worded as ``tinyevo show`` words them: both read :func:`~tinyevo.app.summary.
run_summary`), the fitness plots the run drew, the hall of fame (and the Pareto front of a run
with objectives), the winner's architecture, and how evolution got there: the winner's line of
ancestors, a step per line, and the family tree. Images are embedded as data URIs and the style
is inline: no network, no server, no script; the page can be mailed or archived alone.

    >>> write_report("runs/digits")                        # doctest: +SKIP
    PosixPath('runs/digits/report.html')

``tinyevo report DIR`` runs it; ``tinyevo fit`` runs it at the end of a run. It reads the run
directory without changing anything but what it writes: ``report.html`` and, with ``draw``
(the default), the pictures ``architecture.png``, ``architecture.dot``, ``architecture.svg``
(where Graphviz's ``dot`` is installed) and ``family.png`` (where the run has a lineage).
"""

from __future__ import annotations

import base64
import datetime
import html
import os
import stat
from pathlib import Path
from typing import Any

from tinyevo._version import __version__
from tinyevo.app._validate import finite_number
from tinyevo.app.checkpoint import CHECKPOINT_DIR, LINEAGE_FILE, STATE_FILE
from tinyevo.app.drawing import draw_architecture, draw_family_tree, render_dot
from tinyevo.app.io import write_text
from tinyevo.app.layout import architecture_dot, keeps_candidates
from tinyevo.app.lineage_io import LINE_COLUMNS, winner_line
from tinyevo.app.summary import RunSummary, run_summary

__all__ = ["write_report", "write_pictures", "report_html", "REPORT_FILE", "SECTIONS"]

REPORT_FILE = "report.html"
ARCHITECTURE = "architecture"         # architecture.png, .dot and .svg in the run directory
FAMILY = "family"                     # family.png
# The fitness plots a run may have drawn (tinyevo fit: multiplot.png), in the order shown.
PLOTS = ("multiplot", "fitness", "population", "optimizer", "pareto")
# The page's sections: id -> heading ("front" only in a run with objectives).
SECTIONS = {"summary": "Summary", "plots": "Fitness over the generations",
            "hall-of-fame": "Hall of fame", "front": "Pareto front",
            "architecture": "The winner's architecture", "lineage": "How evolution got there"}
_MIME = {".png": "image/png", ".svg": "image/svg+xml"}
_PNG = b"\x89PNG\r\n\x1a\n"


def write_report(run_dir: str | os.PathLike, draw: bool = True) -> Path:
    """Write ``run_dir/report.html`` (atomically) and return its path; with ``draw``, draw the
    pictures first (:func:`write_pictures`), else show those already in ``run_dir``.

        >>> write_report("runs/digits")                    # doctest: +SKIP
    """
    if not isinstance(draw, bool):
        raise TypeError(f"draw must be True or False, got {draw!r}")
    summary = run_summary(run_dir)
    notes = write_pictures(summary) if draw else {}
    path = summary.mdir / REPORT_FILE
    write_text(path, report_html(summary, notes))
    return path


def write_pictures(summary: RunSummary) -> dict[str, str]:
    """Draw the winner's architecture (DOT text, PNG, and SVG where Graphviz is installed)
    and, where the run has a lineage, the family tree into the run directory, Graphviz last.
    A picture that cannot be drawn stops none of the others: returns a note per picture not
    drawn (file name -> why): matplotlib missing, Graphviz failing or taking too long."""
    mdir, model, lineage = summary.mdir, summary.winner().graph(), summary.lineage
    notes: dict[str, str] = {}
    dot = architecture_dot(model)
    write_text(mdir / f"{ARCHITECTURE}.dot", dot)
    try:
        draw_architecture(model, mdir / f"{ARCHITECTURE}.png")
        if keeps_candidates(lineage):
            draw_family_tree(lineage, mdir / f"{FAMILY}.png")
    except ImportError as err:
        notes[f"{ARCHITECTURE}.png"] = notes[f"{FAMILY}.png"] = str(err)
    try:
        render_dot(dot, mdir / f"{ARCHITECTURE}.svg")
    except (RuntimeError, OSError) as err:    # render_dot makes a timeout a RuntimeError
        notes[f"{ARCHITECTURE}.svg"] = str(err)
    return notes


def report_html(summary: RunSummary, notes: dict[str, str] | None = None) -> str:
    """The report page of ``summary``'s run as HTML text, embedding the pictures found in its
    directory; ``notes`` says why a picture is missing (file name -> why; else: not drawn
    yet)."""
    notes = notes or {}
    parts = [_summary(summary), _plots(summary), _hall_of_fame(summary)]
    if summary.front is not None:
        parts.append(_front(summary))
    parts += [_architecture(summary, notes), _lineage(summary, notes)]
    title = f"tinyevo run {summary.mdir.name or summary.mdir}"
    links = " · ".join(f'<a href="#{k}">{_e(v)}</a>' for k, v in SECTIONS.items()
                       if k != "front" or summary.front is not None)
    written = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">\n'
            f"<title>{_e(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
            f"<h1>{_e(title)}</h1>\n<p class=\"path\">{_e(str(summary.mdir))}</p>\n"
            f"<nav>{links}</nav>\n" + "\n".join(parts) +
            f"\n<footer>Written by tinyevo {_e(__version__)} on {written}. "
            f"Rewrite it with <code>tinyevo report {_e(str(summary.mdir))}</code>.</footer>\n"
            "</body>\n</html>\n")


# --------------------------------------------------------------------- sections
def _summary(s: RunSummary) -> str:
    result = s.result or {}
    seconds = result.get("seconds")
    rows = [("run", s.run_line()), ("data", _data_text(s)),
            ("generations", f"{s.generation} ({len(s.population.members)} candidates each)"),
            ("time", f"{s.state.get('elapsed', 0):.0f} s of evolution"
             + (f"; the last session took {seconds:.0f} s" if finite_number(seconds) else "")),
            ("best model", s.export_line()), ("last generation", s.best_line()),
            ("test score", s.test_line() or s.untested_line())]
    config = s.state.get("config")
    settings = "" if not isinstance(config, dict) else (
        "<details><summary>Settings (FitConfig)</summary>"
        + _table(["setting", "value"], [[k, _setting(v)] for k, v in config.items()])
        + "</details>")
    notes = "".join(f'<p class="note">{_e(note)}</p>' for note in s.notes)
    return _section("summary", notes + _table(None, rows) + settings)


def _plots(s: RunSummary) -> str:
    found, body = {}, ""
    for name in PLOTS:
        path = s.mdir / f"{name}.png"
        data = _picture(path)
        if data is not None:
            found[name] = data
        elif os.path.lexists(path):
            body += _left_out(path)
    if "multiplot" in found:
        found = {"multiplot": found["multiplot"]}
    body += "".join(_image(f"{name}.png", data, f"{name} plot") for name, data in found.items())
    if not found:
        body += ("<p>This run drew no plots (tinyevo fit --no-plots, or matplotlib was "
                 "missing).</p>" if s.by_command else
                 "<p>This run drew no plots: te.fit draws them only with plot callbacks, such "
                 "as <code>MultiPlot(PlotFitness(mdir), ScatterPop(mdir))</code> "
                 "(docs/callbacks.md).</p>")
    if s.history:
        body += ("<details><summary>Best and mean fitness per generation</summary>"
                 + _table(["generation", "best", "mean", "valid members"],
                          [[r["generation"], f"{r['best']:.4f}", f"{r['mean']:.4f}",
                            f"{r['nvalid']} of {r['size']}"] for r in s.history])
                 + "</details>")
    return _section("plots", body)


def _hall_of_fame(s: RunSummary) -> str:
    rows = s.hall_of_fame_rows()
    if not rows:
        return _section("hall-of-fame", f"<p>{_e(s.export_line())}</p>")
    table = _table(["rank", "fitness", "generation", "parameters", "vertices"],
                   [[r["rank"], f"{r['fitness']:.4f}",
                     "-" if r["generation"] is None else r["generation"],
                     f"{r['parameters']:,}", r["vertices"]] for r in rows])
    return _section("hall-of-fame", f"<p>The {len(rows)} best candidates ever evaluated "
                                    f"(the run keeps {s.hall_of_fame.size}).</p>" + table)


def _front(s: RunSummary) -> str:
    sentence, table = s.front_lines()
    return _section("front", f"<p>{_e(sentence)}.</p><pre>{_e(table)}</pre>")


def _architecture(s: RunSummary, notes: dict[str, str]) -> str:
    model = s.winner().graph()
    png, svg = s.mdir / f"{ARCHITECTURE}.png", s.mdir / f"{ARCHITECTURE}.svg"
    picture = _shown(s, png, "the winner's architecture", notes, wide=True)
    graphviz = ("" if svg.name not in notes else
                f"<p>Not laid out by Graphviz this time: {_e(notes[svg.name])}</p>")
    if _current(s, svg):
        graphviz += ("<details><summary>The same, laid out by Graphviz</summary>"
                     + _shown(s, svg, "the winner's architecture, laid out by Graphviz", notes,
                              wide=True) + "</details>")
    return _section("architecture", f"<p>{model.nparams():,} parameters, "
                                    f"{len(model.vertices)} vertices: a box per vertex (what it "
                                    f"computes, with its sizes), the inputs on top.</p>"
                    + picture + graphviz
                    + "<details><summary>The vertices as a table</summary>"
                    f"<pre>{_e(model.summary())}</pre></details>"
                    f"<p>Graphviz DOT text: <code>{ARCHITECTURE}.dot</code> in the run "
                    "directory.</p>")


def _lineage(s: RunSummary, notes: dict[str, str]) -> str:
    lineage = s.lineage
    if lineage is None and (s.mdir / CHECKPOINT_DIR / LINEAGE_FILE).exists():
        return _section("lineage", f"<p>This run's {CHECKPOINT_DIR}/{LINEAGE_FILE} did not "
                                   "load (damaged, or it does not fit its checkpoint; the summary "
                                   "above says so), so there is no line of ancestors or family "
                                   "tree to show.</p>")
    if lineage is None:
        return _section("lineage", "<p>This run predates lineage: its checkpoint does not "
                                   "record which parent each candidate came from, so there is "
                                   "no line of ancestors or family tree to show. Runs made by "
                                   "this tinyevo record them.</p>")
    if not keeps_candidates(lineage):
        return _section("lineage", "<p>The lineage holds no candidate of the hall of fame or "
                                   "the last population.</p>")
    line = winner_line(lineage, s.winner_id(), final=s.final)
    rows = [[*row[:-1], _Raw("<br>".join(_e(what) for what in row[-1]))] for row in line.rows]
    tree = _shown(s, s.mdir / f"{FAMILY}.png", "the family tree", notes)
    return _section("lineage", f"<p>The winner, candidate #{line.id} ({_e(line.who)}), and its "
                               f"line of ancestors back to generation {line.rows[0][1]}, "
                               "following each candidate's first parent: a step per row. A "
                               "step's fitness is the best its candidate reached, in the "
                               "generation it was made in or later (an elite goes on training "
                               "while it lives).</p>"
                    + _table(list(LINE_COLUMNS), rows)
                    + "".join(f"<p>{_e(note)}</p>" for note in line.notes)
                    + "<h3>Family tree</h3>" + tree)


# --------------------------------------------------------------------- pieces
class _Raw(str):
    """HTML made here, put into a table as it is (everything else is escaped)."""


def _e(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _section(key: str, body: str) -> str:
    return f'<section id="{key}">\n<h2>{_e(SECTIONS[key])}</h2>\n{body}\n</section>'


def _table(header: list[str] | None, rows: list) -> str:
    head = "" if header is None else "<tr>" + "".join(f"<th>{_e(h)}</th>" for h in header) + "</tr>"
    body = "".join("<tr>" + "".join(f"<td>{c if isinstance(c, _Raw) else _e(c)}</td>"
                                    for c in row) + "</tr>" for row in rows)
    kind = "" if header else ' class="fields"'
    return f"<table{kind}>{head}{body}</table>"


def _shown(s: RunSummary, path: Path, alt: str, notes: dict[str, str],
           wide: bool = False) -> str:
    """The picture at ``path`` embedded, where it was drawn from the checkpoint read; else
    why it is not there."""
    if not _current(s, path):
        return _missing(s, notes.get(path.name))
    data = _picture(path)
    return _left_out(path) if data is None else _image(path.name, data, alt, wide)


def _image(name: str, data: bytes, alt: str, wide: bool = False) -> str:
    """An embedded picture; a ``wide`` one at its own size, in a box that scrolls sideways."""
    src = f"data:{_MIME[Path(name).suffix]};base64,{base64.b64encode(data).decode('ascii')}"
    img = f'<img src="{src}" alt="{_e(alt)}"' + (' class="natural">' if wide else ">")
    if wide:
        img = f'<div class="wide">{img}</div>'
    return f"<figure>{img}<figcaption>{_e(name)}</figcaption></figure>"


def _picture(path: Path) -> bytes | None:
    """The bytes of the picture at ``path``: a regular file, not a link (nor a pipe, nor a
    device), that starts as a PNG or an SVG by its suffix does; None for anything else."""
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    try:
        fd = os.open(path, flags)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            return None
        data = f.read()
    if path.suffix == ".png":
        return data if data.startswith(_PNG) else None
    head = data[:4096].lstrip()
    return data if head.startswith((b"<?xml", b"<svg", b"<!DOCTYPE")) and b"<svg" in head else None


def _left_out(path: Path) -> str:
    return (f"<p>{_e(path.name)} is left out: it is no {path.suffix[1:].upper()} picture (a "
            "link, or a damaged file).</p>")


def _current(s: RunSummary, picture: Path) -> bool:
    """Whether ``picture`` (one the report draws) was drawn from the checkpoint read: not
    before it was written (a report of a run that went on since would show an old winner)."""
    state = s.mdir / CHECKPOINT_DIR / STATE_FILE
    return os.path.lexists(picture) and (
        not state.is_file() or picture.lstat().st_mtime >= state.stat().st_mtime)


def _missing(s: RunSummary, why: str | None) -> str:
    return (f"<p>Not drawn: {_e(why)}</p>" if why else
            f"<p>Not drawn for the last checkpoint: <code>tinyevo report {_e(str(s.mdir))}"
            "</code> draws it.</p>")


def _data_text(s: RunSummary) -> str:
    data, result = s.data or {}, s.result or {}
    shape = s.sample_shape()
    text = ("samples of shape " + "x".join(map(str, shape)) if shape is not None
            else "samples of an unrecorded shape")
    if data.get("format") == "csv":
        features, classes = data.get("features"), data.get("classes")
        text = (f"a table: {len(features) if isinstance(features, list) else 'its'} feature "
                f"columns, target {str(data.get('target'))!r}"
                + (f", classes {', '.join(map(str, classes))}"
                   if isinstance(classes, list) and classes else ""))
    if finite_number(result.get("test_samples")):
        text += f"; {result['test_samples']} held out for the test"
    return text


def _setting(value: Any) -> str:
    if isinstance(value, list):
        return ", ".join(map(str, value)) or "-"
    return "-" if value is None else str(value)


_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Helvetica,Arial,sans-serif;max-width:72rem;
margin:2rem auto;padding:0 1rem;color:#222;line-height:1.45}
h1{margin-bottom:.2rem}h2{border-bottom:1px solid #ccc;padding-bottom:.2rem;margin-top:2.2rem}
.path{color:#666;margin-top:0}nav{margin:1rem 0;font-size:.95rem}
table{border-collapse:collapse;margin:.6rem 0;font-size:.92rem}
th,td{border:1px solid #ddd;padding:.25rem .55rem;text-align:left;vertical-align:top}
th{background:#f4f4f4}table.fields td:first-child{font-weight:600;white-space:nowrap}
figure{margin:1rem 0}img{max-width:100%;height:auto;border:1px solid #eee}
.wide{overflow-x:auto}img.natural{max-width:none}.note{color:#8a4b00}
figcaption{color:#666;font-size:.85rem}pre{background:#f8f8f8;padding:.6rem;overflow-x:auto;
font-size:.82rem}details{margin:.6rem 0}summary{cursor:pointer;color:#245}
footer{margin-top:3rem;color:#777;font-size:.85rem}
"""
