"""Multi-objective ``fit``: the objectives by name, and the Pareto front's table and export.

``fit(x, y, objectives=("accuracy", "params"))`` measures, after each candidate's training and
validation, the objectives named here (:func:`objectives_fitness`); selects as NSGA-II does
(``tinyevo.app.defaults.default_strategy(..., pareto=True)``); and keeps every non-dominated
candidate ever evaluated in ``population.pareto_front``
(:class:`~tinyevo.evolution.ParetoFront`). :func:`export_front` saves each member of the front
and writes its table, which ``tinyevo fit --objectives`` prints:

    >>> population = te.fit(x, y, generations=5, objectives="accuracy,params")  # doctest: +SKIP
    >>> rows = export_front(population.pareto_front, "runs/x/front", (1, 8, 8))  # doctest: +SKIP
    >>> print(format_front(rows))                                               # doctest: +SKIP
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from typing import Any

from tinyevo.app.io import atomic_dir, write_json
from tinyevo.app.model_io import save_model
from tinyevo.app.tasks import SCORE_NAMES
from tinyevo.evolution.objectives import (
    LatencyObjective,
    MetricObjective,
    Objective,
    Objectives,
    ObjectivesFitness,
    ParamsObjective,
)
from tinyevo.evolution.pareto import ParetoFront

__all__ = ["objectives_fitness", "named_objective", "front_rows", "export_front",
           "format_front", "LATENCY_BATCH", "FRONT_DIR", "FRONT_TABLE"]

LATENCY_BATCH = 64        # validation samples the latency is timed on
FRONT_DIR = "front"       # where the command writes the front's models, in the run directory
FRONT_TABLE = "front.json"


def objectives_fitness(objectives: Iterable[str | Objective], fitness: Any,
                       sample: Any) -> ObjectivesFitness:
    """``fit``'s fitness with objectives: ``fitness`` (the classifier's, which records its
    validation accuracy and loss in ``candidate.metrics``), then each of ``objectives``, a name
    (:func:`named_objective`, latency timed on the first :data:`LATENCY_BATCH` samples of
    ``sample``) or an :class:`~tinyevo.evolution.Objective`."""
    return ObjectivesFitness(fitness, [named_objective(o, sample) if isinstance(o, str) else o
                                       for o in objectives])


def named_objective(name: str, sample: Any = None) -> Objective:
    """The objective ``fit`` means by ``name``: "accuracy" (validation accuracy, maximised),
    "r2" (validation R² of a regression, maximised), "loss" (validation cross entropy, or
    standardised MSE for regression, minimised), "params" (parameters, minimised) or
    "latency" (seconds per sample of inference on ``sample``, minimised)."""
    if name in ("accuracy", "r2", "loss"):
        return MetricObjective(name, "min" if name == "loss" else "max")
    if name == "params":
        return ParamsObjective()
    if name == "latency":
        return LatencyObjective(sample[:LATENCY_BATCH])
    raise ValueError(f"no objective named {name!r}: use accuracy, r2, loss, params or latency, "
                     "or an Objective")


def front_rows(front: ParetoFront | Sequence[Any]) -> list[dict[str, Any]]:
    """A row per member of ``front`` (in its order): ``index``, each objective's value,
    ``fitness``, ``generation``, ``nparams`` and ``nvertices``."""
    rows = []
    for i, c in enumerate(front):
        model = c.graph()
        objectives = c.fitness.as_dict() if isinstance(c.fitness, Objectives) else {}
        rows.append({"index": i, **objectives, "fitness": float(c.fitness),
                     "generation": c.generation, "nparams": model.nparams(),
                     "nvertices": len(model.vertices)})
    return rows


def export_front(front: ParetoFront, folder: str | os.PathLike,
                 input_shape: Sequence[int] | None = None,
                 test: tuple[Any, Any] | None = None) -> list[dict[str, Any]]:
    """Save each member of ``front`` as ``folder/NN`` (:func:`~tinyevo.app.save_model`) and
    ``folder/NN.onnx`` (where onnx is installed; ``input_shape`` is one sample's), with
    :func:`front_rows` (and, given ``test`` data ``(x, y)``, each member's ``evaluate``: its
    ``test_accuracy``, or ``test_r2`` for a regression's members) in ``folder/front.json``.
    The folder is replaced as a whole, atomically: a smaller front leaves no stale files.
    Returns the rows."""
    from tinyevo.app.onnx_export import export_onnx

    rows = front_rows(front)
    onnx = True
    with atomic_dir(folder) as tmp:
        for row, c in zip(rows, front):
            name = f"{row['index']:02d}"
            save_model(c.graph(), tmp / name)
            row["model"] = name
            if test is not None:
                row[SCORE_NAMES[getattr(c, "task", None) or "classification"]] = \
                    c.evaluate(*test)
            if onnx:
                try:
                    export_onnx(c.graph(), tmp / f"{name}.onnx", input_shape=input_shape)
                    row["onnx"] = f"{name}.onnx"
                except ImportError:
                    onnx = False
        names = list(front[0].fitness.names) if len(front) and isinstance(
            front[0].fitness, Objectives) else []
        write_json(tmp / FRONT_TABLE, {"objectives": names, "members": rows})
    return rows


def format_front(rows: Sequence[dict[str, Any]]) -> str:
    """The front as a text table, a line per member: its objectives, test accuracy where
    known, generation and size."""
    if not rows:
        return "(empty)"
    scores = [k for k in SCORE_NAMES.values() if k in rows[0]]
    fixed = {"index", "fitness", "generation", "nparams", "nvertices", "model", "onnx", *scores}
    names = [k for k in rows[0] if k not in fixed]
    shown = [*names, *scores, "generation", *(["nparams"] if "params" not in names else []),
             "nvertices"]
    header = {"test_accuracy": "test accuracy", "test_r2": "test R²", "nparams": "parameters",
              "nvertices": "vertices"}
    lines = ["#   " + "  ".join(f"{header.get(c, c):>13}" for c in shown)]
    for r in rows:
        lines.append(f"{r['index']:<3d} " + "  ".join(f"{_cell(c, r[c]):>13}" for c in shown))
    return "\n".join(lines)


def _cell(name: str, value: Any) -> str:
    if name in ("accuracy", "test_accuracy"):
        return f"{100 * value:.2f} %"
    if name in ("params", "nparams"):
        return f"{value:,.0f}"
    if name in ("generation", "nvertices"):
        return str(value)
    if name == "latency":
        return f"{1e6 * value:.1f} us"
    return f"{value:.4g}"

