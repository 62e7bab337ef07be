"""A run's lineage read back from its run directory, and its winner's line as a table that
``tinyevo show DIR --lineage`` prints and the report shows (:func:`winner_line`: the same rows
and notes for both).

    >>> lineage = load_lineage("runs/digits")       # doctest: +SKIP
    >>> print(format_line(lineage))                 # doctest: +SKIP
    line of #57, the best model ever evaluated: 5 steps from generation 1
      candidate  made in generation  made by   best fitness it reached  parameters  change  ...
             #3                   1  initial                    0.8611      12,345       -  ...
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tinyevo.app._validate import finite_number
from tinyevo.app.checkpoint import CHECKPOINT_DIR, STATE_FILE, read_lineage
from tinyevo.app.io import read_complete_dir
from tinyevo.evolution.lineage import Lineage, Step

__all__ = ["load_lineage", "format_line", "winner_line", "WinnerLine", "LINE_COLUMNS"]

# A step's columns; the last, what changed, is a list of operations.
LINE_COLUMNS = ("candidate", "made in generation", "made by", "best fitness it reached",
                "parameters", "change", "what changed")
_KIND_TEXT = {"initial": "drawn from the search space", "copy": "a copy (nothing changed)"}


@dataclass(frozen=True)
class WinnerLine:
    """A candidate's line of ancestors as a table: ``who`` the candidate is ("the best model
    ever evaluated"), ``heading`` (whose line, how many steps), ``rows`` oldest first, each the
    cells of :data:`LINE_COLUMNS` but the last and, last, what changed (a tuple: the
    operations, or what made it where none changed it), and ``notes``, the sentences that go
    after the table."""

    id: int
    who: str
    heading: str
    rows: tuple[tuple[Any, ...], ...]
    notes: tuple[str, ...]


def load_lineage(run_dir: str | os.PathLike) -> Lineage | None:
    """The lineage of the newest complete checkpoint in ``run_dir``, checked, without building
    a model; None for a run whose checkpoint has none (written before lineages were
    recorded). Changes nothing in ``run_dir``. FileNotFoundError where it holds no checkpoint;
    ValueError where the lineage is damaged."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"no run directory at {run_dir}")
    found = read_complete_dir(run_dir / CHECKPOINT_DIR, _read)
    if found is None:
        raise FileNotFoundError(f"{run_dir} holds no checkpoint yet (no complete generation)")
    return found[0]


def winner_line(lineage: Lineage, winner: int | None = None, final: Any = None) -> WinnerLine:
    """The line of the run's winner back to generation 1, a row per step. ``winner``: its id
    where the caller knows which candidate the run exports (:meth:`RunSummary.winner_id`, by the
    members' fitness), else ``lineage.winner()`` (the hall of fame's first, else the first
    member listed). ``final``, the run's final training (``{"fitness": ...}`` as the
    checkpoint's state holds it), adds a note that gives its fitness. A ValueError for a
    lineage that keeps no candidate."""
    id = lineage.winner() if winner is None else winner
    if id is None or id not in lineage.records:
        raise ValueError("the lineage keeps no record of the run's winner: the run evaluated "
                         "none yet, or its lineage does not fit its checkpoint")
    who = ("the best model ever evaluated" if lineage.hall_of_fame
           else "the best of the last generation")
    steps = lineage.line(id)
    rows = tuple(_row(step, before.nparams if before is not None else None)
                 for before, step in zip([None, *steps], steps))
    notes = []
    first = steps[0]
    if first.parents or first.generation > 1:
        notes.append(f"(the line starts at generation {first.generation}: no parent of "
                     f"#{first.id} is on record, as in a run resumed from a checkpoint that had "
                     "no lineage)")
    if isinstance(final, dict):
        fitness = final.get("fitness")
        notes.append("then the final training: fitness "
                     + (f"{fitness:.4f}" if finite_number(fitness) else "-")
                     + " (the run's final model, the one tinyevo fit exports)")
    return WinnerLine(id, who, f"line of #{id}, {who}: {len(steps)} step{'s' * (len(steps) != 1)} "
                          f"from generation {first.generation}", rows, tuple(notes))


def format_line(lineage: Lineage, winner: int | None = None, final: Any = None) -> str:
    """:func:`winner_line` as text, a step per line (what ``tinyevo show DIR --lineage``
    prints)."""
    line = winner_line(lineage, winner, final)
    table = [LINE_COLUMNS[:-1], *(row[:-1] for row in line.rows)]
    widths = [max(len(r[c]) for r in table) for c in range(len(LINE_COLUMNS) - 1)]
    changed = [LINE_COLUMNS[-1], *("; ".join(row[-1]) for row in line.rows)]
    lines = [line.heading]
    lines += ["  " + "  ".join(cell.ljust(w) if c == 2 else cell.rjust(w)   # made by: a word
                               for c, (cell, w) in enumerate(zip(r, widths))) + "  " + what
              for r, what in zip(table, changed)]
    return "\n".join([*lines, *line.notes])


def _row(step: Step, before: int | None) -> tuple[Any, ...]:
    """A step's cells: id, generation, kind, fitness, parameters and their change, and what
    changed it."""
    fitness = f"{step.fitness:.4f}" if finite_number(step.fitness) else "-"
    params = "-" if step.nparams is None else f"{step.nparams:,}"
    change = ("-" if step.nparams is None or before is None else
              f"{step.nparams - before:+,}")
    changed = step.ops or (_KIND_TEXT.get(step.kind, ""),)
    if step.kind == "initial" and step.generation > 1:
        changed = ("(no parents recorded)",)
    return (f"#{step.id}", str(step.generation), step.kind, fitness, params, change, changed)


def _read(folder: Path) -> tuple[Lineage | None]:
    """The lineage of checkpoint ``folder`` (in a tuple: None is a checkpoint without one); a
    folder without a state file is not a checkpoint (a stray copy is skipped)."""
    if not (folder / STATE_FILE).is_file():
        raise FileNotFoundError(f"{folder / STATE_FILE}: no such file")
    return (read_lineage(folder),)
