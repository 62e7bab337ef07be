"""The lineage of ``fit`` runs: recorded for every member, kept in checkpoints, exact on
resume, bounded, and printed by ``tinyevo show DIR --lineage``."""

from __future__ import annotations

import json
import logging
import os
import re
import shutil

import pytest

import tinyevo as te
from tinyevo.app.checkpoint import (
    CHECKPOINT_DIR,
    LINEAGE_FILE,
    load_checkpoint,
    persist,
    save_checkpoint,
)
from tinyevo.app.lineage_io import format_line, load_lineage
from tinyevo.app.resume import Resumed, continued_lineage
from tinyevo.app.warmstart import fingerprint
from tinyevo.cli import main
from tinyevo.evolution import CandidateModel, FittedCandidate, HallOfFame, Population
from tinyevo.evolution.lineage import candidate_id

pytest.importorskip("sklearn")

TINY = dict(population_size=4, batches_per_generation=2, batch_size=16, widths=(4, 8), seed=5)


@pytest.fixture(scope="module")
def run(digits, tmp_path_factory):
    """A seeded run of 4 generations in a run directory: (directory, population)."""
    x, y = digits
    mdir = tmp_path_factory.mktemp("lineage") / "run"
    return mdir, te.fit(x, y, generations=4, mdir=mdir, **TINY)


@pytest.fixture(scope="module")
def two(digits, tmp_path_factory):
    """A seeded run of 2 generations in a run directory, to copy and edit."""
    x, y = digits
    mdir = tmp_path_factory.mktemp("lineage") / "two"
    te.fit(x, y, generations=2, mdir=mdir, **TINY)
    return mdir


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


@pytest.mark.parametrize("edit, field", [
    (lambda d: d.update(hall_of_fame=d["hall_of_fame"][:1]),
     r"field hall_of_fame: expected \d+ ids, one per hall-of-fame entry of the checkpoint"),
    (lambda d: d["records"][-1].update(generation=3),
     r"field records\[\d+\]\.generation: expected a generation up to the checkpoint's \(2\)"),
    (lambda d: d["records"][-1].update(fitness=10**400),
     r"field records\[\d+\]\.fitness: expected null or a finite number"),
], ids=["an id short", "made after the checkpoint", "fitness 10**400"])
def test_a_lineage_that_is_damaged_or_does_not_fit_loads_as_none_with_a_warning(
        two, digits, tmp_path, caplog, edit, field):
    mdir = shutil.copytree(two, tmp_path / "run")
    path = mdir / CHECKPOINT_DIR / LINEAGE_FILE
    doc = json.loads(path.read_text())
    edit(doc)
    path.write_text(json.dumps(doc))
    with caplog.at_level(logging.WARNING, logger="tinyevo"):
        population, _ = load_checkpoint(mdir)          # the checkpoint is whole without it
    assert population.lineage is None and len(population.members) == TINY["population_size"]
    assert re.search(field, caplog.text) and f"{path} is damaged or does not fit" in caplog.text
    with pytest.raises(ValueError, match=field):
        load_lineage(mdir)                             # asked for the lineage: an error
    x, y = digits                                      # resumed: recorded anew from there
    resumed = te.fit(x, y, generations=3, mdir=mdir, **TINY)
    assert load_lineage(mdir).to_json() == resumed.lineage.to_json()
    assert {resumed.lineage.line(i)[0].generation for i in resumed.lineage.population} == {2}


def test_the_checkpoint_lists_the_ids_of_the_candidates_it_saves(run, tmp_path):
    _, population = run
    lineage = population.lineage                       # it keeps the hall of fame's too
    save_checkpoint(tmp_path / "a", population, {}, lineage=lineage)   # without a hall of fame
    loaded, _ = load_checkpoint(tmp_path / "a")
    assert [candidate_id(c) for c in loaded.members] == loaded.lineage.population
    assert loaded.lineage.population == lineage.population and loaded.lineage.hall_of_fame == []
    assert set(loaded.lineage.records) == lineage.ancestry(lineage.population)
    stranger = FittedCandidate(CandidateModel(population.members[0].graph().copy()), 0.5, 4)
    with pytest.raises(ValueError, match="the lineage has no record of member 4"):
        save_checkpoint(tmp_path / "b", Population([*population.members, stranger], 4), {},
                        lineage=lineage)
    assert not (tmp_path / "b").exists()               # refused before anything is written


def test_resuming_without_a_lineage_gives_a_copy_of_a_member_the_members_id(two, tmp_path):
    mdir = shutil.copytree(two, tmp_path / "run")
    os.remove(mdir / CHECKPOINT_DIR / LINEAGE_FILE)    # as an older tinyevo wrote it
    loaded, state = load_checkpoint(mdir)
    members, fame = loaded.members, loaded.hall_of_fame.members
    lineage = continued_lineage(Resumed(loaded, state), fame, [])
    ids = dict(zip(fingerprint([c.graph() for c in members]), map(candidate_id, members)))
    copies = [(c, p) for c, p in zip(fame, fingerprint([c.graph() for c in fame])) if p in ids]
    assert copies                  # the last generation's best are in the hall of fame
    assert all(candidate_id(c) == ids[p] for c, p in copies)
    models = fingerprint([c.graph() for c in [*members, *fame]])
    assert len(lineage.records) == len(set(models))    # one id per model
    assert lineage.hall_of_fame == [candidate_id(c) for c in fame]


def test_persist_saves_the_lineage_fit_attaches(run, digits, tmp_path, caplog):
    x, y = digits
    te.fit(x, y, generations=2, callbacks=[persist(tmp_path / "a")], **TINY)
    loaded, _ = load_checkpoint(tmp_path / "a")
    assert loaded.lineage.population == [candidate_id(c) for c in loaded.members]
    assert main(["show", str(tmp_path / "a"), "--lineage"]) == 0
    _, population = run            # a hall of fame of the user's, with a model not on record
    fame = HallOfFame(2)
    fame.update([FittedCandidate(CandidateModel(population.members[0].graph().copy()), 9.0, 4)])
    with caplog.at_level(logging.WARNING, logger="tinyevo"):
        persist(tmp_path / "b", hall_of_fame=fame)(population)
    assert "the lineage has no record of hall-of-fame entry 0" in caplog.text
    assert load_checkpoint(tmp_path / "b")[0].lineage is None


def test_the_pareto_front_keeps_its_ancestry(digits):
    x, y = digits
    population = te.fit(x, y, generations=2, objectives=("accuracy", "params"), **TINY)
    lineage = population.lineage
    assert lineage.front == [candidate_id(c) for c in population.pareto_front]
    assert set(lineage.front) <= set(lineage.records)
