"""The command's data and ``tinyevo predict``: a run's best model on new data, as a table.

``tinyevo fit`` reads its ``--data`` with :func:`load_run_data` and, at the start of a new run,
stores what the model reads in ``RUN_DIR/data.json`` (:func:`record_data`): the sample shape,
and for a table its feature columns, its target column and its class labels::

    {"format": "csv", "features": ["rooms", "area"], "target": "price", "classes": null,
     "sample_shape": [2]}

:func:`predict` reads that, checks the new data against it, runs ``RUN_DIR/best`` in batches and
returns the columns of the answer: ``prediction`` and one probability ``p_<label>`` per class
(classification), or ``prediction`` / ``prediction_0`` ... (regression). It writes nothing.

    >>> header, columns = predict("runs/houses", "new_houses.csv")       # doctest: +SKIP
    >>> write_table("predictions.csv", header, columns)                  # doctest: +SKIP
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from tinyevo.app.checkpoint import stored_settings
from tinyevo.app.data import checked_float32
from tinyevo.app.datasets import load_dataset
from tinyevo.app.io import complete_dir, read_json, read_npz, write_json
from tinyevo.app.model_io import load_model
from tinyevo.app.tables import Table, is_table_path, read_columns, read_features, read_table
from tinyevo.app.tasks import TASKS, infer_task
from tinyevo.metrics import outputs, softmax

__all__ = ["load_run_data", "record_data", "predict", "run_task", "DATA_FILE", "BEST_DIR",
           "RESULT_FILE"]

#: The file in a run directory that says what the run's model reads.
DATA_FILE = "data.json"
#: The run's best model, saved by ``tinyevo fit`` at the end of a run.
BEST_DIR = "best"
#: What the command found at the end of a run (its task, test score, ...).
RESULT_FILE = "result.json"
BATCH = 1024

Arrays = tuple[np.ndarray, np.ndarray]


def load_run_data(spec: str, target: str | None, task: str | None = None
                  ) -> tuple[Arrays, Arrays, dict]:
    """``(train, test, info)`` for the command's ``--data``, ``--target`` and ``--task``: a
    table file is split with a quarter held out for the test
    (:meth:`~tinyevo.app.tables.Table.split`), any other ``--data`` goes to
    :func:`~tinyevo.app.datasets.load_dataset`. ``info`` is what :func:`record_data` stores.
    A table's class labels, text or numbers (a numeric target that ``task`` or
    :func:`~tinyevo.app.tasks.infer_task` calls classification), become classes 0..K-1, their
    labels kept in ``info["classes"]`` for ``predict`` to give back.

        >>> (x, y), test, info = load_run_data("houses.csv", "price")    # doctest: +SKIP
    """
    if not is_table_path(spec):
        if target is not None:
            raise ValueError(f"--target {target!r} picks a column of a table: it needs --data "
                             f"FILE.csv or FILE.tsv, not {spec!r}; drop --target")
        train, test = load_dataset(spec)
        return train, test, {"sample_shape": list(train[0].shape[1:])}
    path = Path(spec.strip()).expanduser()
    if target is None:
        raise ValueError(f"{path}: a table needs --target COLUMN, the column to predict (the "
                         f"others are the features); its columns are "
                         f"{', '.join(read_columns(path))}")
    table = _labelled(read_table(path, target), task)
    train, test = table.split()
    info = {"format": "csv", "features": list(table.feature_names), "target": table.target,
            "classes": None if table.classes is None else list(table.classes),
            "sample_shape": list(table.x.shape[1:])}
    return train, test, info


def _labelled(table: Table, task: str | None) -> Table:
    """``table`` with numeric class labels mapped to 0..K-1 (gaps and negative labels
    included); a text target refused for regression."""
    if table.classes is not None:
        if task == "regression":
            raise ValueError(f"--task regression needs numbers to predict, but the target "
                             f"{table.target!r} holds text ({table.classes[0]!r}, ...); drop "
                             "--task for a classifier, or pick a numeric target")
        return table
    if (task or infer_task(table.y)) == "regression":
        return table
    values, index = np.unique(table.y, return_inverse=True)
    labels = tuple(int(v) if float(v).is_integer() else float(v) for v in values)
    return replace(table, y=index.astype(np.int64),
                   classes=None if labels == tuple(range(len(labels))) else labels)


def record_data(mdir: str | os.PathLike, info: dict, resuming: bool) -> None:
    """Store ``info`` in ``mdir/data.json`` for a new run. A resumed run keeps its file, and
    data that differs from it is refused (a run whose file is missing gets one).

        >>> record_data("runs/houses", info, resuming=False)             # doctest: +SKIP
    """
    path = Path(mdir) / DATA_FILE
    if resuming and path.exists():
        stored = read_json(path)
        if stored != info:
            raise ValueError(
                f"{mdir} is a run on other data: its {DATA_FILE} says {_describe(stored)}, "
                f"this data is {_describe(info)}. Resume it with the data it started with, or "
                "start a new run in another --dir")
        return
    write_json(path, info)


def predict(run_dir: str | os.PathLike, data: str | os.PathLike) -> tuple[list[str], list]:
    """``(header, columns)``: the predictions of the run's best model on ``data`` (a table
    with the run's feature columns, by name, or a ``.npz`` with an array ``x`` or ``x_test``).

        >>> header, columns = predict("runs/iris", "new_flowers.csv")    # doctest: +SKIP
        >>> header
        ['prediction', 'p_setosa', 'p_versicolor', 'p_virginica']
    """
    run = Path(run_dir).expanduser()
    if not run.is_dir():
        raise FileNotFoundError(f"{run}: no such run directory; pass the --dir of a tinyevo fit "
                                "run")
    info_path = run / DATA_FILE
    info = read_json(info_path) if info_path.is_file() else None
    if complete_dir(run / BEST_DIR) is None:
        raise FileNotFoundError(f"{run} holds no best model yet ({run / BEST_DIR}): tinyevo fit "
                                "saves it when a run ends; run tinyevo fit to the end first")
    x = _read_samples(Path(data).expanduser(), info, run)
    task = run_task(run)
    out = outputs(load_model(run / BEST_DIR), x, BATCH)
    if task == "regression":
        if out.shape[1] == 1:
            return ["prediction"], [out[:, 0]]
        return [f"prediction_{k}" for k in range(out.shape[1])], list(out.T)
    return _classes(out, (info or {}).get("classes"), run)


def run_task(run: Path) -> str:
    """Whether the run's model is a classifier or a regressor: its ``result.json`` says, else
    its checkpoint's settings (a run from before regression existed has none: a classifier);
    a ValueError where neither can be read (a copied ``best/`` alone does not tell)."""
    result = run / RESULT_FILE
    task = read_json(result).get("task") if result.is_file() else None
    if task is None:
        settings = stored_settings(run)
        task = None if settings is None else settings.get("task", "classification")
    if task not in TASKS:
        raise ValueError(f"{run}: cannot tell whether its model is a classifier or a regressor: "
                         f"neither {RESULT_FILE} nor a checkpoint says; predict from the whole "
                         "run directory that tinyevo fit wrote")
    return task


def _read_samples(path: Path, info: dict | None, run: Path) -> np.ndarray:
    """The samples in ``path``, checked against what the run's model reads."""
    shape = None if info is None else tuple(info.get("sample_shape", ()))
    if is_table_path(path):
        features = (info or {}).get("features")
        if not features:
            why = (f"it has no {DATA_FILE}" if info is None else
                   f"it was trained on arrays of shape {shape}, not on a table")
            raise ValueError(f"{run}: cannot read a table for this run: {why}; give a .npz with "
                             "an array x of the training samples' shape")
        return read_features(path, features)
    if path.suffix.lower() != ".npz":
        raise ValueError(f"{path}: expected a .csv or .tsv table, or a .npz with an array x")
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    arrays = read_npz(path)
    name = next((n for n in ("x", "x_test") if n in arrays), None)
    if name is None:
        raise ValueError(f"{path}: expected an array named x (or x_test), found "
                         f"{sorted(arrays) or 'none'}; save with numpy.savez(path, x=x)")
    x = arrays[name]
    if x.dtype.kind not in "biuf" or x.ndim < 2 or len(x) == 0:
        raise ValueError(f"{path}: {name} must be a numeric array of samples, batch first, got "
                         f"{x.dtype} of shape {x.shape}")
    if shape is not None and tuple(x.shape[1:]) != shape:
        raise ValueError(f"{path}: the run's model reads samples of shape {shape}, {name} holds "
                         f"samples of shape {tuple(x.shape[1:])}; give data shaped as the "
                         "training data")
    if not np.isfinite(x).all():
        i = int(np.argmin(np.isfinite(x.reshape(len(x), -1)).all(axis=1)))
        raise ValueError(f"{path}: {name}[{i}] holds NaN or infinite values; fix or drop it")
    return checked_float32(x, f"{path}: {name}")


def _classes(logits: np.ndarray, classes: list | None, run: Path) -> tuple[list[str], list]:
    """``prediction`` (a label, or the class index) and a softmax probability per class."""
    if classes is not None and len(classes) != logits.shape[1]:
        raise ValueError(f"{run}: the best model scores {logits.shape[1]} classes but "
                         f"{DATA_FILE} names {len(classes)}; the run directory is damaged")
    p = softmax(logits).astype(np.float32)
    labels = list(range(logits.shape[1])) if classes is None else classes
    index = logits.argmax(axis=1)
    prediction = index if classes is None else np.array(classes, dtype=object)[index]
    return ["prediction"] + [f"p_{c}" for c in labels], [prediction] + list(p.T)


def _describe(info: Any) -> str:
    if not isinstance(info, dict):
        return repr(info)
    if info.get("format") == "csv":
        return (f"a table with target {info.get('target')!r}, features {info.get('features')} "
                f"and classes {info.get('classes')}")
    return f"arrays of samples of shape {tuple(info.get('sample_shape') or ())}"
