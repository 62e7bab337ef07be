"""The run report: report.html of a tiny seeded digits run parses, has every section, embeds
every image (and nothing but pictures), names the best model and fitness as `tinyevo show` does,
shows the winner's line as `tinyevo show --lineage` does, escapes what it shows, survives a
failing Graphviz and damaged optional files, and changes nothing in the run directory but what
it writes; the family tree of a lineage, whose edges pass no candidate they do not connect.

Lineage parts use a stand-in: `Step` and `Lineage` below are built as the #28 contract
describes tinyevo.evolution.lineage's, and the report reads a run's lineage where the loaded
checkpoint attaches it, ``population.lineage``."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import os
import shutil
import time
from html.parser import HTMLParser
from types import SimpleNamespace

import numpy as np
import pytest

import tinyevo as te
from tinyevo.app import drawing
from tinyevo.app import report as report_module
from tinyevo.app import summary as summary_module
from tinyevo.app.drawing import DrawFamilyTree, draw_family_tree
from tinyevo.app.layout import family_layout
from tinyevo.app.lineage_io import LINE_COLUMNS
from tinyevo.app.report import REPORT_FILE, SECTIONS, report_html, write_report
from tinyevo.app.summary import run_summary, show_text
from tinyevo.cli import main
from tinyevo.evolution.lineage import Lineage, Step

PNG = b"\x89PNG\r\n\x1a\n"
pytest.importorskip("sklearn")
pytest.importorskip("matplotlib")


# --------------------------------------------------------------------- a made-up lineage
def standin_lineage(generations: int = 6, size: int = 5, seed: int = 0) -> Lineage:
    """Elites copied, the rest mutated or crossed from the best four, the ancestry of the last
    population and the hall of fame kept."""
    rng = np.random.default_rng(seed)
    records, population = {}, []
    for i in range(size):
        records[i] = Step(i, (), 1, (), float(rng.uniform(0.1, 0.3)), 1000 + 10 * i)
        population.append(i)
    for gen in range(2, generations + 1):
        ranked = sorted(population, key=lambda i: -records[i].fitness)
        population = []
        for k in range(size):
            new, p = len(records), ranked[k] if k < 2 else ranked[int(rng.integers(0, 4))]
            fitness = min(1.0, records[p].fitness + float(rng.normal(0.03, 0.02)))
            if k < 2:
                step = Step(new, (p,), gen, (), records[p].fitness, records[p].nparams)
            elif k % 3 == 0:
                q = ranked[(ranked.index(p) + 1) % 4]
                step = Step(new, (p, q), gen, (f"CrossoverSwap with #{q}: segment "
                                               "conv_4..bn_7",), fitness, records[p].nparams)
            else:
                step = Step(new, (p,), gen, (f"NoutMutation conv_{new} 32->38",
                                             "AddVertexMutation after bn_7: Conv(3x3, 24) <&>"),
                            fitness, records[p].nparams + 200)
            records[new] = step
            population.append(new)
    population.sort(key=lambda i: -records[i].fitness)
    fame = sorted(records, key=lambda i: -records[i].fitness)[:3]
    lineage = Lineage(records.values(), population, fame)
    kept = lineage.ancestry(population + fame)
    lineage.records = {i: records[i] for i in kept}
    return lineage


def long_lived_lineage(generations: int = 12, size: int = 6, seed: int = 0) -> Lineage:
    """The two best live on with their ids (elites), so a child's parent may have been made
    many generations before it; the rest are mutated or crossed from living members."""
    rng = np.random.default_rng(seed)
    records = {i: Step(i, (), 1, (), float(rng.uniform(0.1, 0.3)), 1000) for i in range(size)}
    alive = list(records)
    for gen in range(2, generations + 1):
        alive.sort(key=lambda i: -records[i].fitness)
        children = []
        for _ in range(size - 2):
            new = len(records)
            p, q = (alive[int(rng.integers(0, len(alive)))] for _ in range(2))
            parents, ops = (((p, q), (f"CrossoverSwap with #{q}: segment a..b",))
                            if q != p and rng.random() < 0.3 else ((p,), ("NoutMutation c 1->2",)))
            fitness = min(1.0, records[p].fitness + float(rng.normal(0.02, 0.05)))
            records[new] = Step(new, parents, gen, ops, fitness, 1000)
            children.append(new)
        alive = alive[:2] + children
    alive.sort(key=lambda i: -records[i].fitness)
    fame = sorted(records, key=lambda i: -records[i].fitness)[:3]
    kept = Lineage(records.values(), alive, fame).ancestry(alive + fame)
    return Lineage([records[i] for i in sorted(kept)], alive, fame)


def edges_through_candidates(tree, eps: float = 0.4) -> list[tuple[int, int, int]]:
    """(parent, child, candidate) for each candidate an edge passes within ``eps`` of (at the
    candidate's generation) but does not connect."""
    found = []
    for e in tree.edges:
        for (g0, y0), (g1, y1) in zip(e.points, e.points[1:]):
            for n in tree.nodes:
                if n.id not in (e.parent, e.child) and g0 <= n.generation <= g1 and g0 < g1:
                    y = y0 + (y1 - y0) * (n.generation - g0) / (g1 - g0)
                    if abs(y - n.y) < eps:
                        found.append((e.parent, e.child, n.id))
    return found


# --------------------------------------------------------------------- a tiny run
@pytest.fixture(scope="module")
def run(digits, tmp_path_factory):
    """A seeded two-generation digits run made by the command (plots and report included)."""
    x, y = digits
    folder = tmp_path_factory.mktemp("report")
    data = folder / "digits.npz"
    np.savez(data, x_train=x[:180], y_train=y[:180], x_test=x[180:], y_test=y[180:])
    code = main(["fit", "--data", str(data), "--generations", "2", "--population", "3",
                 "--batches-per-generation", "2", "--dir", str(folder / "run"), "--workers", "1",
                 "--no-progress"])
    assert code == 0
    return folder / "run"


class Page(HTMLParser):
    """What the report's HTML holds: section ids, image sources, scripts, links, text."""

    def __init__(self, text: str):
        super().__init__()
        self.sections, self.images, self.tags, self.links, self.text = [], [], [], [], []
        self.feed(text)
        self.close()

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.append(tag)
        if tag == "section":
            self.sections.append(attrs["id"])
        elif tag == "img":
            self.images.append(attrs["src"])
        elif tag == "a":
            self.links.append(attrs["href"])

    def handle_data(self, data):
        self.text.append(data)

    @property
    def words(self) -> str:
        return " ".join(" ".join(self.text).split())


def files(folder) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def image_bytes(src: str) -> bytes:
    head, _, data = src.partition(",")
    assert head in ("data:image/png;base64", "data:image/svg+xml;base64"), head
    return base64.b64decode(data, validate=True)


# --------------------------------------------------------------------- the report
def test_fit_writes_a_self_contained_report_with_every_section(run):
    text = (run / REPORT_FILE).read_text(encoding="utf-8")
    page = Page(text)
    assert page.sections == ["summary", "plots", "hall-of-fame", "architecture", "lineage"]
    assert "multiplot.png" in page.words and "architecture.png" in page.words  # captions
    assert page.images and all(image_bytes(src) for src in page.images)
    assert any(image_bytes(src).startswith(PNG) for src in page.images)
    assert "script" not in page.tags and "link" not in page.tags
    assert all(href.startswith("#") for href in page.links)
    has_lineage = run_summary(run).lineage is not None
    assert ("predates lineage" in page.words) is not has_lineage
    assert ("family.png" in page.words) is has_lineage
    assert (run / "architecture.png").read_bytes().startswith(PNG)
    assert "digraph architecture" in (run / "architecture.dot").read_text()
    # the architecture at its own size, in a box that scrolls sideways
    assert '<div class="wide"><img src="data:image/png;base64,' in text


def test_the_report_names_the_best_model_and_fitness_as_show_does(run, capsys):
    assert main(["show", str(run)]) == 0
    shown = capsys.readouterr().out
    summary = run_summary(run)
    words = Page(report_html(summary)).words
    winner = summary.hall_of_fame.best()
    export = (f"tinyevo fit exports the hall of fame's best: fitness {winner.fitness:.4f}, "
              f"evaluated in generation {winner.generation}")
    assert summary.export_line() == export and export in shown and export in words
    assert summary.best_line() in shown and summary.best_line() in words
    assert summary.test_line() in shown and summary.test_line() in words
    assert shown.rstrip("\n") == show_text(summary)
    assert f"{winner.graph().nparams():,} parameters" in words
    assert summary.best is summary.population.best()


def test_reading_changes_nothing_and_writing_only_the_report_and_pictures(run):
    before = files(run)
    report_html(run_summary(run))
    assert files(run) == before
    write_report(run, draw=False)
    after = files(run)
    assert {k for k in after if after[k] != before.get(k)} <= {REPORT_FILE}
    (run / "architecture.png").unlink()
    write_report(run)
    drawn = files(run)
    assert set(drawn) - set(before) == set()
    assert {k for k in drawn if drawn[k] != before[k]} <= {
        REPORT_FILE, "architecture.png", "architecture.dot", "architecture.svg"}


def test_a_picture_older_than_the_checkpoint_is_not_shown(run, tmp_path):
    import os

    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    earlier = (copy / "checkpoint" / "state.json").stat().st_mtime - 60
    os.utime(copy / "architecture.png", (earlier, earlier))    # the run went on since
    page = Page(write_report(copy, draw=False).read_text(encoding="utf-8"))
    assert "architecture.png" not in page.words
    assert "Not drawn for the last checkpoint" in page.words
    page = Page(write_report(copy).read_text(encoding="utf-8"))
    assert "architecture.png" in page.words


def test_odd_values_in_the_runs_json_files_are_left_out_and_a_damaged_file_named(
        run, tmp_path, capsys):
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    (copy / "result.json").write_text(json.dumps({"task": ["x"], "test_accuracy": "high",
                                                  "test_samples": 10**400, "seconds": "long"}))
    (copy / "data.json").write_text(json.dumps({"format": "csv", "features": 3,
                                                "classes": 7, "sample_shape": "big"}))
    words = Page(write_report(copy, draw=False).read_text(encoding="utf-8")).words
    assert "not tested yet" in words and "its feature columns" in words
    # a damaged optional file is left out as if absent, with a line that says so
    (copy / "result.json").write_text("[1, 2]")
    (copy / "data.json").write_text("{not json")
    assert main(["report", str(copy)]) == 0
    words = Page((copy / REPORT_FILE).read_text(encoding="utf-8")).words
    assert main(["show", str(copy)]) == 0
    shown = capsys.readouterr().out
    for said in ("result.json is left out: it holds a list, not a JSON object",
                 "data.json is left out: it is not readable JSON"):
        assert said in words and said in shown
    assert "samples of shape 1x8x8" in words           # the checkpoint's state says so too


def test_text_is_escaped(run, tmp_path):
    odd = tmp_path / 'a<b>&"c'
    shutil.copytree(run, odd)
    page = Page(write_report(odd, draw=False).read_text(encoding="utf-8"))
    assert "b" not in page.tags                   # the name is text, not a tag
    assert 'a<b>&"c' in page.words


def test_the_command_writes_the_report_and_refuses_what_is_no_run(run, tmp_path, capsys):
    assert main(["report", str(run)]) == 0
    assert str(run / REPORT_FILE) in capsys.readouterr().out
    assert main(["report", str(tmp_path / "missing")]) == 1
    assert "no run directory" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["report", str(tmp_path / "empty")]) == 1
    assert "no checkpoint" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["report", "--help"])
    assert "report.html" in capsys.readouterr().out
    with pytest.raises(TypeError, match="True or False"):
        write_report(run, draw="yes")


def test_a_run_with_objectives_has_its_front(digits, tmp_path):
    x, y = digits
    data = tmp_path / "digits.npz"
    np.savez(data, x_train=x[:120], y_train=y[:120], x_test=x[120:160], y_test=y[120:160])
    assert main(["fit", "--data", str(data), "--generations", "1", "--population", "2",
                 "--batches-per-generation", "1", "--dir", str(tmp_path / "run"),
                 "--workers", "1", "--no-progress", "--no-plots",
                 "--objectives", "accuracy,params"]) == 0
    page = Page((tmp_path / "run" / REPORT_FILE).read_text(encoding="utf-8"))
    assert page.sections == ["summary", "plots", "hall-of-fame", "front", "architecture",
                             "lineage"]
    assert "accuracy, params" in page.words and "no plots" in page.words
    assert set(page.sections) <= set(SECTIONS)


@pytest.mark.skipif(os.name != "posix", reason="the stand-in dot is a shell script")
@pytest.mark.parametrize("script, said", [
    ('echo "Layout type: dot not recognized" >&2; exit 1', "could not render architecture.svg"),
    ("exec sleep 20", "within 0.3 s")])
def test_a_failing_or_hanging_graphviz_leaves_a_note_not_a_missing_report(
        run, tmp_path, monkeypatch, capsys, script, said):
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    for name in (REPORT_FILE, "architecture.svg", "architecture.png"):
        (copy / name).unlink(missing_ok=True)
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "dot").write_text(f"#!/bin/sh\n{script}\n")
    (tmp_path / "bin" / "dot").chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setattr(drawing, "DOT_TIMEOUT", 0.3)
    started = time.monotonic()
    assert main(["report", str(copy)]) == 0
    assert time.monotonic() - started < 60
    words = Page((copy / REPORT_FILE).read_text(encoding="utf-8")).words
    assert "Not laid out by Graphviz" in words and said in words
    assert (copy / "architecture.png").read_bytes().startswith(PNG)      # drawn before dot
    assert "architecture.png" in words and "family.png" in words
    capsys.readouterr()


def test_only_pictures_are_embedded(run, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    secret = tmp_path / "secret.txt"
    secret.write_bytes(PNG + b"SECRET KEY MATERIAL")
    for name in ("multiplot.png", "architecture.png"):
        (copy / name).unlink()
        (copy / name).symlink_to(secret)                  # a link is not followed
    text = write_report(copy, draw=False).read_text(encoding="utf-8")
    encoded = base64.b64encode(secret.read_bytes()).decode()
    assert encoded[:24] not in text and "SECRET" not in text
    words = Page(text).words
    assert "multiplot.png is left out" in words and "architecture.png is left out" in words
    (copy / "multiplot.png").unlink()
    os.mkfifo(copy / "multiplot.png")                     # a pipe: neither read nor waited on
    assert "multiplot.png is left out" in Page(report_html(run_summary(copy))).words
    (copy / "multiplot.png").unlink()
    (copy / "multiplot.png").write_text("<html>not a picture</html>")
    page = Page(report_html(run_summary(copy)))
    assert "multiplot.png is left out" in page.words
    assert all(image_bytes(src).startswith((PNG, b"<?xml", b"<svg")) for src in page.images)


def test_a_run_made_by_te_fit_is_worded_as_such(digits, tmp_path, capsys):
    x, y = digits
    te.fit(x, y, generations=1, mdir=tmp_path, population_size=2, batches_per_generation=1,
           batch_size=16, widths=(4, 8), seed=5)
    words = Page(write_report(tmp_path, draw=False).read_text(encoding="utf-8")).words
    assert main(["show", str(tmp_path)]) == 0
    shown = capsys.readouterr().out
    summary = run_summary(tmp_path)
    assert not summary.by_command
    assert "samples of shape 1x8x8" in words                 # from the checkpoint's state
    assert "te.fit made this run and tests nothing" in words
    assert "drew no plots: te.fit draws them only with plot callbacks" in words
    assert summary.export_line().startswith("the run's model is the hall of fame's best")
    assert summary.export_line() in words and summary.export_line() in shown
    assert "tinyevo fit exports" not in words + shown and "not tested yet" not in words


# --------------------------------------------------------------------- lineage
def test_the_report_shows_the_winners_line_and_the_family_tree(run, tmp_path, monkeypatch):
    lineage = standin_lineage()
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    summary = run_summary(copy)
    summary.population.lineage = lineage
    monkeypatch.setattr(report_module, "run_summary", lambda run_dir: summary)
    text = write_report(copy).read_text(encoding="utf-8")
    page = Page(text)
    line = lineage.line(lineage.hall_of_fame[0])
    assert f"candidate #{line[-1].id}" in page.words
    assert "predates lineage" not in page.words
    rows = text.split('<section id="lineage">')[1].count("<tr>")
    assert rows == len(line) + 1                                 # a step a row, and the header
    assert "AddVertexMutation after bn_7: Conv(3x3, 24) <&>" in page.words
    assert "&lt;&amp;&gt;" in text                                # escaped in the page
    assert (copy / "family.png").read_bytes().startswith(PNG)
    assert len(page.images) >= 3 and all(image_bytes(src) for src in page.images)
    assert tuple(lineage_table(text)[0]) == LINE_COLUMNS


class Cells(HTMLParser):
    """The rows of a page's tables as cell texts (a cell's lines joined by "; ")."""

    def __init__(self, text: str):
        super().__init__()
        self.rows, self.cell = [], None
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        if tag == "tr":
            self.rows.append([])
        elif tag in ("td", "th"):
            self.cell = []

    def handle_endtag(self, tag):
        if tag in ("td", "th"):
            self.rows[-1].append("; ".join(self.cell))
            self.cell = None

    def handle_data(self, data):
        if self.cell is not None:
            self.cell.append(data)


def lineage_table(text: str) -> list[list[str]]:
    section = text.split('<section id="lineage">')[1].split("</section>")[0]
    return Cells(section).rows


def test_the_report_shows_the_line_as_show_lineage_does(run, tmp_path, monkeypatch, capsys):
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    loaded = run_summary(copy)
    steps = [Step(7, (), 3, (), 0.4, 900),            # resumed from a run without lineage
             Step(9, (7,), 4, ("NoutMutation conv_2 3->4", "AddVertexMutation after in"),
                  0.6, 950), Step(12, (9,), 5, (), 0.65, 950)]
    loaded.population.lineage = Lineage(steps, population=[12], hall_of_fame=[12])
    summary = dataclasses.replace(loaded, state={**loaded.state,
                                                 "final": {"fitness": 0.7, "generation": 5}})
    monkeypatch.setattr(summary_module, "run_summary", lambda run_dir: summary)
    assert main(["show", str(copy), "--lineage"]) == 0
    shown = capsys.readouterr().out.splitlines()
    text = report_html(summary)
    table = lineage_table(text)
    assert shown[2].split() == " ".join(LINE_COLUMNS).split()
    assert [row.split(maxsplit=6) for row in shown[3:6]] == table[1:]
    assert table[1][-1] == "(no parents recorded)" and table[3][-1] == "a copy (nothing changed)"
    assert table[2][1:4] == ["4", "mutation", "0.6000"] and table[2][5] == "+50"
    notes = shown[6:]
    assert [n[:39] for n in notes] == ["(the line starts at generation 3: no pa",
                                       "then the final training: fitness 0.7000"]
    words = Page(text).words
    assert all(note in words for note in notes)


def test_family_tree_edges_pass_no_candidate_they_do_not_connect():
    # #2 and #3 made in generations 3 and 5 from #1: the edge #1 -> #3 must not pass #2
    chain = Lineage([Step(1, (), 1, (), 0.1), Step(2, (1,), 3, ("m",), 0.2),
                     Step(3, (1,), 5, ("m",), 0.3)], population=[3, 2], hall_of_fame=[3])
    tree = family_layout(chain)
    assert edges_through_candidates(tree) == []
    assert [len(e.points) for e in tree.edges] == [2, 3]            # a bend beside #2
    for seed in range(6):
        lineage = long_lived_lineage(seed=seed)
        tree = family_layout(lineage)
        assert edges_through_candidates(tree) == []
        columns = sorted({n.generation for n in tree.nodes})
        at = {n.id: (n.generation, n.y) for n in tree.nodes}
        spans = 0
        for e in tree.edges:
            assert e.points[0] == at[e.parent] and e.points[-1] == at[e.child]
            places = [columns.index(g) for g, _ in e.points]
            assert places == list(range(places[0], places[-1] + 1))  # a point in each column
            spans += len(places) > 2
        assert spans                                  # the case: edges that pass columns


def test_a_run_without_lineage_says_it_predates_lineage(run, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    (copy / "checkpoint" / "lineage.json").unlink()      # as a checkpoint before lineages
    summary = run_summary(copy)
    words = Page(report_html(summary)).words
    assert "This run predates lineage" in words and "family.png" not in words


def test_the_family_tree_keeps_the_ancestry_and_marks_the_winners_line():
    lineage = standin_lineage(generations=8, size=6, seed=3)
    tree = family_layout(lineage)
    kept = lineage.ancestry(lineage.population + lineage.hall_of_fame)
    assert {n.id for n in tree.nodes} == kept
    assert len(tree.edges) == sum(len(lineage.records[i].parents) for i in kept)
    winner = lineage.hall_of_fame[0]
    assert tree.winner == winner and [n.id for n in tree.nodes if n.winner] == [winner]
    assert sum(e.winner for e in tree.edges) == len(lineage.line(winner)) - 1
    assert all(e.second == (e.parent == lineage.records[e.child].parents[-1]
                            and len(lineage.records[e.child].parents) == 2)
               for e in tree.edges)
    for gen in {n.generation for n in tree.nodes}:                 # no two in one place
        ys = [n.y for n in tree.nodes if n.generation == gen]
        assert len(set(ys)) == len(ys)
    assert {n.id for n in tree.nodes if n.population} == set(lineage.population)


def test_draw_family_tree_and_its_callback(tmp_path):
    lineage = standin_lineage()
    assert draw_family_tree(lineage, tmp_path / "tree.png").read_bytes().startswith(PNG)
    with pytest.raises(TypeError, match="Lineage"):
        draw_family_tree(object(), tmp_path / "x.png")
    DrawFamilyTree(tmp_path / "a")(SimpleNamespace(generation=1, members=[]))
    assert not (tmp_path / "a").exists()                           # no lineage: nothing
    DrawFamilyTree(tmp_path / "b")(SimpleNamespace(lineage=lineage))    # as fit attaches it
    assert (tmp_path / "b" / "family.png").read_bytes().startswith(PNG)
    DrawFamilyTree(tmp_path / "c", lineage_of=lambda population: lineage)(None)
    assert (tmp_path / "c" / "family.png").is_file()
    with pytest.raises(TypeError, match="lineage_of"):
        DrawFamilyTree(tmp_path, lineage_of="lineage")
    assert family_layout(Lineage()).nodes == ()
    with pytest.raises(ValueError, match="keeps no candidate"):
        draw_family_tree(Lineage(), tmp_path / "empty.png")
    DrawFamilyTree(tmp_path / "d")(SimpleNamespace(lineage=Lineage()))
    assert not (tmp_path / "d").exists()                           # nothing to draw yet
    assert draw_family_tree(long_lived_lineage(), tmp_path / "long.png").read_bytes()[:8] == PNG


def test_the_line_is_the_winners_whatever_order_the_members_were_saved_in(digits, tmp_path):
    # A population saved worst first: the lineage lists its members in that order, and its
    # own guess (the first listed, without a hall of fame) would be the worst.
    from tinyevo.app.checkpoint import persist
    from tinyevo.evolution.lineage import candidate_id
    x, y = digits
    population = te.fit(x[:240], y[:240], generations=2, population_size=4,
                        batches_per_generation=2, batch_size=16, widths=(4, 8), seed=7)
    population.members.sort(key=lambda c: c.fitness)
    population.hall_of_fame = None
    persist(tmp_path / "run")(population)
    summary = run_summary(tmp_path / "run")
    best = candidate_id(summary.winner())
    assert summary.lineage.winner() != best and summary.winner_id() == best
    assert f"candidate #{best} " in report_html(summary)


def test_a_lineage_file_that_did_not_load_is_named_not_called_missing(run, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    (copy / "checkpoint" / "lineage.json").write_text("{broken")
    summary = run_summary(copy)
    assert summary.lineage is None
    assert any("lineage.json is left out" in note for note in summary.notes)
    words = Page(report_html(summary)).words
    assert "did not load" in words and "predates lineage" not in words
