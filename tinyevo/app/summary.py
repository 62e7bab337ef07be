"""What a run directory says about its run, read once for ``tinyevo show`` and the report.

:func:`run_summary` reads the checkpoint, the recorded fitness history, ``data.json`` and
``result.json`` of a run written by ``tinyevo fit`` (or ``fit(..., mdir=...)``), changing
nothing; :func:`show_text` is what ``tinyevo show`` prints. The report
(:mod:`tinyevo.app.report`) takes its sentences from the same :class:`RunSummary`, so both name
the same best model with the same fitness. The files beside the checkpoint are optional: a
damaged one is left out, as if absent, with a note (``RunSummary.notes``) that says so; a run
made by ``te.fit`` has none of them and is worded as such (``RunSummary.by_command``).

    >>> summary = run_summary("runs/digits")                 # doctest: +SKIP
    >>> print(summary.export_line())                          # doctest: +SKIP
    tinyevo fit exports the hall of fame's best: fitness 0.9712, evaluated in generation 9
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tinyevo.app._validate import finite_number
from tinyevo.app.callbacks import history
from tinyevo.app.checkpoint import CHECKPOINT_DIR, LINEAGE_FILE, load_checkpoint
from tinyevo.app.io import read_json
from tinyevo.app.predict import DATA_FILE, RESULT_FILE
from tinyevo.app.tasks import SCORE_NAMES, TASKS
from tinyevo.evolution.lineage import candidate_id

__all__ = ["RunSummary", "run_summary", "show_text", "test_text"]


@dataclass(frozen=True)
class RunSummary:
    """A run directory as read by :func:`run_summary`.

    ``best`` is the best member of the last generation; :meth:`winner` is the model ``tinyevo
    fit`` exports (the hall of fame's best, the final training's copy of it where the run had
    one); ``history`` the recorded best and mean fitness per generation; ``data`` and ``result``
    the run's ``data.json`` and ``result.json`` (None where absent or damaged); ``by_command``
    whether the command ``tinyevo fit`` made the run (it writes ``data.json``), not ``te.fit``;
    ``notes`` a sentence per optional file left out as damaged.
    """

    mdir: Path
    task: str
    population: Any
    state: dict
    history: list[dict]
    data: dict | None
    result: dict | None
    by_command: bool
    notes: tuple[str, ...]

    @property
    def generation(self) -> int:
        return self.population.generation

    @property
    def best(self) -> Any:
        """The last generation's best member (what ``tinyevo show`` calls the best candidate)."""
        return self.population.best()

    @property
    def hall_of_fame(self) -> Any:
        return self.population.hall_of_fame

    @property
    def front(self) -> Any:
        """The Pareto front (None for a run without objectives)."""
        return self.population.pareto_front

    @property
    def lineage(self) -> Any:
        """The run's lineage (:class:`tinyevo.evolution.lineage.Lineage`) as the checkpoint
        read holds it; None for a run that predates lineage."""
        return getattr(self.population, "lineage", None)

    @property
    def final(self) -> dict | None:
        """The final training's fitness and generation, where the run exported its model."""
        final = self.state.get("final")
        return final if isinstance(final, dict) else None

    def winner(self) -> Any:
        """The candidate whose architecture ``tinyevo fit`` exports: the hall of fame's best
        (the final training trains a copy of it), else the last generation's best."""
        return self.hall_of_fame.best() if len(self.hall_of_fame) else self.best

    def winner_id(self) -> int | None:
        """The lineage id of :meth:`winner`, where the lineage records it (else None: then the
        lineage's own winner stands for it)."""
        if self.lineage is None:
            return None
        id = candidate_id(self.winner())
        return id if id in self.lineage.records else None

    def run_line(self) -> str:
        """The run in one line: task, generation, population and time."""
        return (f"run {self.mdir}: {self.task}, generation {self.generation}, "
                f"{len(self.population.members)} candidates, "
                f"{self.state.get('elapsed', 0):.0f} s of evolution"
                + ("; fitness is the validation R²" if self.task == "regression" else ""))

    def best_line(self) -> str:
        """The last generation's best member: fitness and optimiser."""
        return f"best candidate: fitness {self.best.fitness:.4f}, optimiser {self.best.opt()!r}"

    def export_line(self) -> str:
        """Which model the run gives (``tinyevo fit`` exports it, ``te.fit``'s
        ``result_model`` returns it), with its fitness and generation."""
        gives = "tinyevo fit exports" if self.by_command else "the run's model is"
        if not len(self.hall_of_fame):
            return (f"hall of fame: none in this checkpoint; {gives} the best candidate of the "
                    "last generation (above)")
        if self.final is not None:
            fitness = self.final.get("fitness")
            value = f"{fitness:.4f}" if finite_number(fitness) else "-"
            gave = "tinyevo fit exported" if self.by_command else gives
            return (f"{gave} the final training's model: fitness {value}, from generation "
                    f"{self.final.get('generation')}")
        top = self.hall_of_fame.best()
        return (f"{gives} the hall of fame's best: fitness {top.fitness:.4f}, "
                f"evaluated in generation {top.generation}")

    def test_line(self) -> str | None:
        """The exported model's test score as ``result.json`` records it; None where the run
        has not ended yet (or its file says nothing readable)."""
        result = self.result or {}
        task = result.get("task") if result.get("task") in TASKS else self.task
        score, n = result.get(SCORE_NAMES[task]), result.get("test_samples")
        if not finite_number(score) or not finite_number(n):
            return None
        return (f"test {test_text(task, score)} on {n} held-out samples (the exported model, "
                f"when tinyevo fit ended at generation {result.get('generation')})")

    def untested_line(self) -> str:
        """Why there is no test score: the command has not ended yet, or ``te.fit`` (which
        tests nothing) made the run."""
        if self.by_command:
            return "not tested yet: tinyevo fit tests the exported model when the run ends"
        return ("not tested: te.fit made this run and tests nothing (tinyevo fit tests its model "
                "on held-out data; from Python: model.evaluate(x_test, y_test))")

    def sample_shape(self) -> list | None:
        """The shape of a sample, as ``data.json`` or the checkpoint's state records it."""
        for shape in ((self.data or {}).get("sample_shape"), self.state.get("sample_shape")):
            if isinstance(shape, list) and all(isinstance(n, int) for n in shape):
                return shape
        return None

    def front_lines(self) -> list[str]:
        """The Pareto front as ``tinyevo show`` prints it: a sentence, then a table; empty for
        a run without objectives."""
        if self.front is None:
            return []
        from tinyevo.app.pareto import format_front, front_rows

        names = ", ".join(self.front.names or ())
        return [f"Pareto front: {len(self.front)} models no other evaluated model beats on "
                f"every objective ({names})", format_front(front_rows(self.front))]

    def hall_of_fame_rows(self) -> list[dict[str, Any]]:
        """A row per hall-of-fame entry, best first: rank, fitness, generation, parameters and
        vertices."""
        return [{"rank": rank, "fitness": c.fitness, "generation": c.generation,
                 "parameters": c.graph().nparams(), "vertices": len(c.graph().vertices)}
                for rank, c in enumerate(self.hall_of_fame, 1)]


def run_summary(mdir: str | os.PathLike) -> RunSummary:
    """The run in ``mdir``, read without changing anything there.

    Raises FileNotFoundError where ``mdir`` is no directory or holds no complete checkpoint
    yet, and ValueError for a damaged one."""
    path = Path(mdir).expanduser()
    if not path.is_dir():
        raise FileNotFoundError(f"no run directory at {path}: pass the --dir of a tinyevo fit run")
    loaded = load_checkpoint(path)
    if loaded is None:
        raise FileNotFoundError(f"{path} holds no checkpoint yet (no complete generation)")
    population, state = loaded
    config = state.get("config")
    task = (config.get("task") if isinstance(config, dict) else None) or "classification"
    notes: list[str] = []
    try:
        fitness_history = history(path).get("fitness", [])
    except (OSError, ValueError) as err:
        fitness_history = []
        notes.append(f"the fitness history (plotdata/) is left out: {err}")
    if getattr(population, "lineage", None) is None and (path / CHECKPOINT_DIR
                                                          / LINEAGE_FILE).exists():
        notes.append(f"{CHECKPOINT_DIR}/{LINEAGE_FILE} is left out: it is damaged or does not "
                     "fit its checkpoint (the warning above says why); restore it from a copy, "
                     "or resume the run to record a lineage from this generation on")
    return RunSummary(mdir=path, task=task, population=population, state=state,
                      history=fitness_history, data=_optional_object(path / DATA_FILE, notes),
                      result=_optional_object(path / RESULT_FILE, notes),
                      by_command=(path / DATA_FILE).exists() or (path / RESULT_FILE).exists(),
                      notes=tuple(notes))


def show_text(summary: RunSummary) -> str:
    """What ``tinyevo show`` prints: the run (and a line per damaged file left out), progress,
    the best candidate's architecture, the hall of fame, the exported model with its test score,
    and the Pareto front where there is one."""
    lines = [summary.run_line(), *summary.notes]
    if summary.history:
        lines.append("generation  best     mean")
        lines += [f"{int(r['generation']):10d}  {r['best']:.4f}  {r['mean']:.4f}"
                  for r in summary.history[-10:]]
    lines += ["", summary.best_line(), summary.best.graph().summary()]
    fame = summary.hall_of_fame
    if len(fame):
        lines += ["", f"hall of fame: the {len(fame)} best candidates ever evaluated (keeps "
                      f"{fame.size})", "rank  fitness  generation  parameters  vertices"]
        for r in summary.hall_of_fame_rows():
            gen = "-" if r["generation"] is None else str(r["generation"])
            lines.append(f"{r['rank']:4d}  {r['fitness']:.4f}  {gen:>10}  "
                         f"{r['parameters']:10,d}  {r['vertices']:8d}")
        lines.append(summary.export_line())
    else:
        lines += ["", summary.export_line()]
    if summary.test_line() is not None:
        lines.append(summary.test_line())
    if summary.front is not None:
        lines += ["", *summary.front_lines()]
    return "\n".join(lines)


def test_text(task: str, score: float) -> str:
    """A test score as the command words it: "accuracy 97.12 %" or "R² 0.8731"."""
    return f"accuracy {100 * score:.2f} %" if task == "classification" else f"R² {score:.4f}"


def _optional_object(path: Path, notes: list[str]) -> dict | None:
    """The JSON object in ``path``; None where there is none. The run does not need the file:
    one that is damaged (no JSON, or no object) is left out as if absent, with a note."""
    if not path.exists():
        return None
    try:
        value = read_json(path)
    except (OSError, ValueError) as err:
        why = f"it is not readable JSON ({err})"
    else:
        if isinstance(value, dict):
            return value
        why = f"it holds a {type(value).__name__}, not a JSON object"
    notes.append(f"{path.name} is left out: {why}; the file is damaged: restore it or remove it")
    return None
