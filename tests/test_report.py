"""The run report: report.html of a tiny seeded digits run parses, has every section, embeds
every image, names the best model and fitness as `tinyevo show` does, escapes what it shows
and changes nothing in the run directory but what it writes; the family tree of a lineage.

Lineage parts use a stand-in: `Step` and `Lineage` below are built as the #28 contract
describes tinyevo.evolution.lineage's, and the report reads a run's lineage where the loaded
checkpoint attaches it, ``population.lineage``."""

from __future__ import annotations

import base64
import hashlib
import shutil
from html.parser import HTMLParser
from types import SimpleNamespace

import numpy as np
import pytest

from tinyevo.app import report as report_module
from tinyevo.app.drawing import DrawFamilyTree, draw_family_tree, family_layout
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
    page = Page((run / REPORT_FILE).read_text(encoding="utf-8"))
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
    import json

    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    (copy / "result.json").write_text(json.dumps({"task": ["x"], "test_accuracy": "high",
                                                  "test_samples": 60, "seconds": "long"}))
    (copy / "data.json").write_text(json.dumps({"format": "csv", "features": 3,
                                                "classes": 7, "sample_shape": "big"}))
    words = Page(write_report(copy, draw=False).read_text(encoding="utf-8")).words
    assert "not tested yet" in words and "its feature columns" in words
    (copy / "result.json").write_text("[1, 2]")
    assert main(["report", str(copy)]) == 1
    assert "result.json: expected a JSON object" in capsys.readouterr().err


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


def test_a_run_without_lineage_says_it_predates_lineage(run):
    summary = run_summary(run)
    summary.population.lineage = None
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
