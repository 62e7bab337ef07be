"""Save and load one model: a directory with ``model.json`` (structure) and ``weights.npz``.

A saved model is a folder::

    path/
        model.json    {"format": "tinyevo.model", "version": 1, "tinyevo": "0.1.0",
                       "type": "CompGraph" | "Sequential", "spec": {...}, "dtypes": [...]}
        weights.npz   every array of the model, keyed "<vertex or layer index>/<array name>"

The folder is written with :func:`tinyevo.app.io.atomic_dir`: a crash leaves the previous save
or the new one, complete, never a mix. Loading executes nothing from the files: the structure is
plain JSON read by the layers' ``from_spec``, the arrays are read with ``allow_pickle=False``.
Loading checks every field of ``model.json``, and every size it declares against the stored
arrays, before it builds anything (:mod:`tinyevo.app._validate`), and changes nothing on disk.

    >>> save_model(graph, "runs/best")
    >>> graph2 = load_model("runs/best"); np.array_equal(graph(x), graph2(x))
    True
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from tinyevo._version import __version__
from tinyevo.app._validate import Field, Stored, check_depth, check_graph, check_sequential
from tinyevo.app.io import (
    atomic_dir,
    read_complete_dir,
    read_json,
    read_npz,
    write_json,
    write_npz,
)
from tinyevo.evolution.candidate import AbstractCandidate
from tinyevo.graph import CompGraph
from tinyevo.layers import Sequential, layer_from_spec

__all__ = ["save_model", "load_model", "MODEL_FORMAT", "MODEL_VERSION"]

MODEL_FORMAT = "tinyevo.model"
MODEL_VERSION = 1
STRUCTURE_FILE = "model.json"
WEIGHTS_FILE = "weights.npz"

Model = CompGraph | Sequential
_FIX = ("the folder was damaged or edited; save the model again with save_model, or restore "
        "the folder from a copy")


def save_model(model: Any, path: str | os.PathLike) -> Path:
    """Write ``model`` (a CompGraph, a Sequential or a candidate holding one) to the folder
    ``path``, atomically; returns the folder's path.

    ``path`` must be a new or empty folder, or one that a previous ``save_model`` wrote (it is
    replaced as a whole). Optimiser state is not part of a single-model save.

        >>> save_model(population.best(), "runs/best")
        PosixPath('runs/best')
    """
    model = as_model(model, "save_model")
    path = Path(path)
    _check_destination(path)
    if isinstance(model, CompGraph):
        if model.pending():
            raise ValueError("save_model: the graph has pending size changes "
                             "(change_nout(..., select=False)); apply them with "
                             "select_neurons(graph) before saving")
        spec, arrays, dtypes = model.to_spec(), model.arrays(), None
    else:
        spec = model.to_spec()
        arrays, dtypes = {}, []
        for i, layer in enumerate(model.layers()):
            dtypes.append(np.dtype(layer.dtype).name)
            for name, a in layer.arrays().items():
                arrays[f"{i}/{name}"] = a
    header = {"format": MODEL_FORMAT, "version": MODEL_VERSION, "tinyevo": __version__,
              "type": type(model).__name__, "spec": spec}
    if dtypes is not None:
        header["dtypes"] = dtypes
    with atomic_dir(path) as tmp:
        write_json(tmp / STRUCTURE_FILE, header)
        write_npz(tmp / WEIGHTS_FILE, arrays)
    return path


def load_model(path: str | os.PathLike) -> Model:
    """The model saved by :func:`save_model` in the folder ``path`` (or its ``model.json``).

    Raises ``FileNotFoundError`` when the folder or one of its two files is missing and
    ``ValueError`` when a file is malformed, was written by a newer tinyevo, or the weights do
    not match the structure; the message names the file and the field. Arrays land on the
    current backend. A stray ``.NAME.new`` beside the folder (an interrupted save) is read when
    it is complete and skipped otherwise; nothing on disk is changed.

        >>> graph = load_model("runs/best"); graph(x).shape
        (100, 10)
    """
    path = Path(path)
    if path.is_file() and path.name == STRUCTURE_FILE:
        path = path.parent
    model = read_complete_dir(path, _load)   # also finds a save that a crash left mid-swap
    if model is None:
        if path.exists():
            raise FileNotFoundError(f"load_model: {path} is not a folder; pass the folder that "
                                    "save_model(model, folder) wrote")
        raise FileNotFoundError(f"load_model: no saved model at {path} (no such folder)")
    return model


def as_model(model: Any, who: str) -> Model:
    """``model`` itself, or the model a candidate holds; a TypeError for anything else."""
    if isinstance(model, AbstractCandidate):
        model = model.graph()
    if not isinstance(model, (CompGraph, Sequential)):
        raise TypeError(f"{who} takes a CompGraph, a Sequential or a candidate holding one, got "
                        f"{type(model).__name__}")
    return model


# ---------------------------------------------------------------------- helpers

def _load(folder: Path) -> Model:
    """The model saved in ``folder``, checked in full before it is built."""
    structure, weights = folder / STRUCTURE_FILE, folder / WEIGHTS_FILE
    for f in (structure, weights):
        if not f.is_file():
            raise FileNotFoundError(f"load_model: {f} is missing; a saved model is a folder "
                                    f"holding {STRUCTURE_FILE} and {WEIGHTS_FILE} as "
                                    "save_model writes it")
    header = read_json(structure)
    headline = f"load_model: {structure} does not describe a valid model"
    check_depth(header, headline, _FIX)
    _check_header(header, structure)
    arrays = read_npz(weights)
    for name, a in arrays.items():
        if a.dtype.kind != "f":
            raise ValueError(f"load_model: {weights}: array {name!r} has dtype {a.dtype}, "
                             "expected floating point; the file is damaged")
    _check_structure(Field(header, headline, _FIX, structure),
                     Stored(arrays, f"load_model: {weights} does not match {STRUCTURE_FILE}",
                            _FIX))
    try:
        if header["type"] == "CompGraph":
            model = CompGraph.from_spec(header["spec"], arrays)
            model.validate()        # kinds of data between vertices, which the spec names
        else:
            model = _sequential_from(header, arrays)
    except (KeyError, IndexError, TypeError, AttributeError, ValueError) as err:
        raise ValueError(f"load_model: {folder} does not describe a valid model ({err}); "
                         f"{STRUCTURE_FILE} and {WEIGHTS_FILE} are damaged, come from different "
                         "saves, or were not written by save_model") from err
    _check_arrays(model, arrays, weights)
    return model


def _check_structure(doc: Field, stored: Stored) -> None:
    """Every field of ``model.json`` (its header is checked already), and every size it declares
    against the stored arrays, before anything is built."""
    header = doc.obj(("format", "version", "type", "spec"), ("tinyevo", "dtypes"))
    if doc.get("tinyevo") is not None:
        doc["tinyevo"].string()
    if header["type"] == "CompGraph":
        if "dtypes" in header:
            raise doc["dtypes"].fail("no such field in a CompGraph's model.json (each vertex "
                                     "names its dtype)")
        check_graph(doc["spec"], stored)
    else:
        check_sequential(doc["spec"], doc.get("dtypes"), stored)
    stored.finish()

def _check_destination(path: Path) -> None:
    """Refuse to replace a file or a folder of someone else's files with a saved model."""
    if path.exists() and not path.is_dir():
        raise FileExistsError(f"save_model: {path} is a file; pass a folder path (it will hold "
                              f"{STRUCTURE_FILE} and {WEIGHTS_FILE})")
    if path.is_dir() and any(path.iterdir()) and not (path / STRUCTURE_FILE).is_file():
        raise FileExistsError(f"save_model: {path} is a folder holding other files; save into a "
                              "new or empty folder, or one that save_model wrote before")


def _check_header(header: Any, where: Path) -> None:
    if not isinstance(header, dict) or header.get("format") != MODEL_FORMAT:
        raise ValueError(f"load_model: {where} is not a tinyevo model description (expected "
                         f"format {MODEL_FORMAT!r}); pass a folder written by save_model")
    version = header.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise ValueError(f"load_model: {where} has no valid format version (got {version!r}); "
                         "the file is damaged")
    if version > MODEL_VERSION:
        raise ValueError(f"load_model: {where} has format version {version}, written by tinyevo "
                         f"{header.get('tinyevo', '?')}; this tinyevo reads up to version "
                         f"{MODEL_VERSION}: upgrade tinyevo to load it")
    if header.get("type") not in ("CompGraph", "Sequential"):
        raise ValueError(f"load_model: {where}: model type must be 'CompGraph' or 'Sequential', "
                         f"got {header.get('type')!r}")
    if not isinstance(header.get("spec"), dict):
        raise ValueError(f"load_model: {where} has no model spec; the file is damaged")


def _sequential_from(header: dict, arrays: dict) -> Sequential:
    specs = header["spec"]["layers"]
    dtypes = header.get("dtypes") or [None] * len(specs)
    if not isinstance(specs, list) or len(dtypes) != len(specs):
        raise ValueError("layer list and dtype list differ in length")
    layers = []
    for i, (spec, dtype) in enumerate(zip(specs, dtypes)):
        layer = layer_from_spec(spec)
        if dtype is not None and np.dtype(layer.dtype) != np.dtype(dtype):
            layer.to(dtype=np.dtype(dtype).type)
        prefix = f"{i}/"
        own = {k[len(prefix):]: a for k, a in arrays.items() if k.startswith(prefix)}
        if own:
            layer.load_arrays(own)
        layers.append(layer)
    return Sequential(*layers)


def _check_arrays(model: Model, arrays: dict, where: Path) -> None:
    """Every array the structure needs is in the file, and nothing else (a layer without its
    arrays would otherwise keep fresh random weights)."""
    if isinstance(model, CompGraph):
        expected = set(model.arrays())
    else:
        expected = {f"{i}/{k}" for i, layer in enumerate(model.layers()) for k in layer.arrays()}
    missing, extra = sorted(expected - set(arrays)), sorted(set(arrays) - expected)
    if missing or extra:
        raise ValueError(f"load_model: {where} does not match {STRUCTURE_FILE}: "
                         + (f"missing arrays {missing[:5]}" if missing else "")
                         + ("; " if missing and extra else "")
                         + (f"unexpected arrays {extra[:5]}" if extra else "")
                         + "; the two files come from different saves or are damaged")
