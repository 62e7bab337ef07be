"""The lineage of ``fit`` runs: recorded for every member, kept in checkpoints, exact on
resume, bounded, and printed by ``tinyevo show DIR --lineage``."""

from __future__ import annotations

import json
import os

import pytest

import tinyevo as te
from tinyevo.app.checkpoint import CHECKPOINT_DIR, LINEAGE_FILE, load_checkpoint
from tinyevo.app.lineage_io import format_line, load_lineage
from tinyevo.cli import main
from tinyevo.evolution.lineage import candidate_id

pytest.importorskip("sklearn")

TINY = dict(population_size=4, batches_per_generation=2, batch_size=16, widths=(4, 8), seed=5)


@pytest.fixture(scope="module")
def run(digits, tmp_path_factory):
    """A seeded run of 4 generations in a run directory: (directory, population)."""
    x, y = digits
    mdir = tmp_path_factory.mktemp("lineage") / "run"
    return mdir, te.fit(x, y, generations=4, mdir=mdir, **TINY)


def test_every_kept_candidate_has_a_line_back_to_generation_one(run):
    _, population = run
    lineage = population.lineage
    kept = [*population.members, *population.hall_of_fame]
    assert lineage.population == [candidate_id(c) for c in population.members]
    assert lineage.hall_of_fame == [candidate_id(c) for c in population.hall_of_fame]
    for c in kept:
        line = lineage.line(candidate_id(c))
        assert line[0].generation == 1 and line[0].parents == () and line[0].kind == "initial"
        assert [s.generation for s in line] == sorted({s.generation for s in line})
        assert line[-1].nparams == c.graph().nparams()
        assert line[-1].fitness >= c.fitness        # the best it reached
    best = population.hall_of_fame.best()
    assert lineage.records[lineage.winner()].fitness == best.fitness
    assert any(s.ops for s in lineage.records.values())      # children record what made them


def test_the_lineage_is_bounded_to_the_ancestry_of_what_is_kept(run):
    lineage = run[1].lineage
    kept = lineage.ancestry([*lineage.population, *lineage.hall_of_fame, *lineage.front])
    assert set(lineage.records) == kept
    assert lineage.next_id > max(lineage.records)


def test_the_checkpoint_holds_the_lineage_and_a_resumed_run_continues_it_exactly(run, digits,
                                                                                tmp_path):
    mdir, straight = run
    x, y = digits
    assert load_lineage(mdir).to_json() == straight.lineage.to_json()
    te.fit(x, y, generations=2, mdir=tmp_path, **TINY)
    resumed = te.fit(x, y, generations=4, mdir=tmp_path, **TINY)
    assert resumed.lineage.to_json() == straight.lineage.to_json()
    loaded, _ = load_checkpoint(tmp_path)
    assert [candidate_id(c) for c in loaded.hall_of_fame] == straight.lineage.hall_of_fame


def test_load_lineage_changes_nothing_in_the_run_directory(run, tmp_path):
    mdir, _ = run
    before = sorted((p, p.stat().st_mtime_ns) for p in mdir.rglob("*"))
    load_lineage(mdir)
    assert sorted((p, p.stat().st_mtime_ns) for p in mdir.rglob("*")) == before
    with pytest.raises(FileNotFoundError, match="holds no checkpoint"):
        load_lineage(tmp_path)
    with pytest.raises(FileNotFoundError, match="no run directory"):
        load_lineage(tmp_path / "nope")


def test_show_lineage_prints_the_winners_line_a_step_a_line(run, capsys):
    mdir, population = run
    assert main(["show", str(mdir), "--lineage"]) == 0
    out = capsys.readouterr().out.splitlines()
    lineage = population.lineage
    line = lineage.line(lineage.winner())
    assert out[1].startswith(f"line of #{lineage.winner()}, the best model ever evaluated")
    assert out[2].split() == ["candidate", "made", "in", "generation", "made", "by", "best",
                              "fitness", "it", "reached", "parameters", "change", "what",
                              "changed"]
    rows = out[3:]
    assert len(rows) == len(line)
    for row, step in zip(rows, line):
        cells = row.split(maxsplit=6)
        assert cells[:5] == [f"#{step.id}", str(step.generation), step.kind,
                             f"{step.fitness:.4f}", f"{step.nparams:,}"]
        assert cells[6] == ("; ".join(step.ops) if step.ops else
                            "drawn from the search space" if step.kind == "initial"
                            else "a copy (nothing changed)")


def test_a_run_without_lineage_says_so_and_a_resume_records_from_there(run, digits, tmp_path,
                                                                       capsys):
    x, y = digits
    te.fit(x, y, generations=2, mdir=tmp_path, **TINY)
    os.remove(tmp_path / CHECKPOINT_DIR / LINEAGE_FILE)       # as an older tinyevo wrote it
    population, _ = load_checkpoint(tmp_path)
    assert population.lineage is None and load_lineage(tmp_path) is None
    assert main(["show", str(tmp_path), "--lineage"]) == 1
    assert "has no lineage" in capsys.readouterr().err
    resumed = te.fit(x, y, generations=3, mdir=tmp_path, **TINY)
    assert resumed.lineage.to_json() == load_lineage(tmp_path).to_json()
    for c in resumed.members:
        first = resumed.lineage.line(candidate_id(c))[0]
        assert first.generation == 2 and first.parents == ()
    assert "the line starts at generation 2" in format_line(resumed.lineage)


def test_a_damaged_lineage_file_is_refused_naming_it(run, digits, tmp_path):
    x, y = digits
    te.fit(x, y, generations=2, mdir=tmp_path, **TINY)
    path = tmp_path / CHECKPOINT_DIR / LINEAGE_FILE
    doc = json.loads(path.read_text())
    doc["hall_of_fame"] = doc["hall_of_fame"][:1]
    path.write_text(json.dumps(doc))
    with pytest.raises(ValueError, match="lineage.json lists 1 ids in hall_of_fame"):
        load_checkpoint(tmp_path)
    doc["records"][-1]["parents"] = [10_000]
    path.write_text(json.dumps(doc))
    with pytest.raises(ValueError, match=r"lineage.json: record .* parent #10000"):
        load_lineage(tmp_path)


def test_the_pareto_front_keeps_its_ancestry(digits):
    x, y = digits
    population = te.fit(x, y, generations=2, objectives=("accuracy", "params"), **TINY)
    lineage = population.lineage
    assert lineage.front == [candidate_id(c) for c in population.pareto_front]
    assert set(lineage.front) <= set(lineage.records)
