"""A run's lineage read back from its run directory, and its winner's line as text
(``tinyevo show DIR --lineage``).

    >>> lineage = load_lineage("runs/digits")       # doctest: +SKIP
    >>> print(format_line(lineage))                 # doctest: +SKIP
    line of #57, the best model ever evaluated: 5 steps from generation 1
      id  generation  fitness  parameters  what changed
      #3           1   0.8611      12,345  drawn from the search space
     #17           2   0.9028      12,998  NoutMutation conv_12 32->38; LearningRateMutation ...
"""

from __future__ import annotations

import os
from pathlib import Path

from tinyevo.app.checkpoint import CHECKPOINT_DIR, STATE_FILE, read_lineage
from tinyevo.app.io import read_complete_dir
from tinyevo.evolution.lineage import Lineage, Step

__all__ = ["load_lineage", "format_line"]

_KIND_TEXT = {"initial": "drawn from the search space", "copy": "a copy (nothing changed)"}


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


def format_line(lineage: Lineage, id: int | None = None) -> str:
    """The line of candidate ``id`` (default: the winner, the hall of fame's best) back to
    generation 1, a step per line: its id, generation, fitness, parameters and what changed
    it, oldest first."""
    if id is None:
        id = lineage.winner()
        if id is None:
            raise ValueError("the lineage keeps no candidate: the run evaluated none yet")
        who = ("the best model ever evaluated" if lineage.hall_of_fame
               else "the best of the last generation")
    else:
        who = "candidate"
    steps = lineage.line(id)
    rows = [("id", "generation", "fitness", "parameters", "what changed")]
    rows += [_row(s) for s in steps]
    widths = [max(len(r[c]) for r in rows) for c in range(4)]
    lines = [f"line of #{id}, {who}: {len(steps)} step{'s' * (len(steps) != 1)} from "
             f"generation {steps[0].generation}"]
    lines += ["  " + "  ".join(cell.rjust(w) for cell, w in zip(r, widths)) + "  " + r[4]
              for r in rows]
    first = steps[0]
    if first.parents or first.generation > 1:
        lines.append(f"(the line starts at generation {first.generation}: no parent of "
                     f"#{first.id} is on record, as in a run resumed from a checkpoint that had "
                     "no lineage)")
    return "\n".join(lines)


def _row(step: Step) -> tuple[str, ...]:
    fitness = "-" if step.fitness is None else f"{step.fitness:.4f}"
    params = "-" if step.nparams is None else f"{step.nparams:,}"
    changed = "; ".join(step.ops) or _KIND_TEXT.get(step.kind, "")
    if step.kind == "initial" and step.generation > 1:
        changed = "(no parents recorded)"
    return (f"#{step.id}", str(step.generation), fitness, params, changed)


def _read(folder: Path) -> tuple[Lineage | None]:
    """The lineage of checkpoint ``folder`` (in a tuple: None is a checkpoint without one); a
    folder without a state file is not a checkpoint (a stray copy is skipped)."""
    if not (folder / STATE_FILE).is_file():
        raise FileNotFoundError(f"{folder / STATE_FILE}: no such file")
    return (read_lineage(folder),)
