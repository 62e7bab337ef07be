"""Crash-safe files for checkpoints: JSON for structure, ``.npz`` for arrays, never pickle.

Every write goes to a temporary file in the destination's folder, is flushed and fsynced, then
renamed over the destination with :func:`os.replace`, which is atomic. A process killed at any
moment leaves either the old file or the new one, never a mix; at worst a stray
``.NAME.*.tmp`` file remains, which nothing reads.

    >>> write_json("run/state.json", {"generation": np.int64(3), "best": np.float32(0.5)})
    >>> read_json("run/state.json")["generation"]
    3

A whole checkpoint folder is written with :func:`atomic_dir`; the previous complete one stays in
place until the new one is complete, and :func:`recover_dir` finishes the swap after a crash.

JSON and NaN: :func:`write_json` follows Python's :mod:`json` and writes ``NaN`` and
``Infinity`` (a diverged candidate's fitness must not stop a checkpoint), and :func:`read_json`
reads them back. Such files are not strict JSON; tools other than Python's may refuse them.
"""

from __future__ import annotations

import json
import math
import os
import secrets
import shutil
import zipfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import numpy as np

from tinyevo import backend

__all__ = [
    "atomic_open", "write_text", "write_json", "read_json", "write_npz", "read_npz",
    "atomic_dir", "recover_dir", "complete_dir",
]

PathLike = str | os.PathLike


@contextmanager
def atomic_open(path: PathLike, mode: str = "wb", *,
                encoding: str | None = "utf-8") -> Iterator[IO[Any]]:
    """Open a temporary file that replaces ``path`` only when the ``with`` block succeeds.

    ``mode`` is ``"wb"`` or ``"w"``. On success the data is flushed, fsynced and renamed over
    ``path`` (and the folder fsynced); on an exception the temporary file is removed and ``path``
    is untouched. The folder must exist.

        >>> with atomic_open("run/fitness.csv", "w") as f:
        ...     _ = f.write("generation,best\\n")
    """
    if mode not in ("wb", "w"):
        raise ValueError(f"atomic_open writes whole files: mode must be 'wb' or 'w', got {mode!r}")
    path = Path(path)
    folder = path.parent
    if not folder.is_dir():
        raise FileNotFoundError(f"cannot write {path}: folder {folder} does not exist; create it "
                                "first (os.makedirs(folder, exist_ok=True))")
    tmp = folder / f".{path.name}.{secrets.token_hex(4)}.tmp"
    # os.open with 0o666 lets the umask decide the permissions, as open() would.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    try:
        with os.fdopen(fd, mode, encoding=None if mode == "wb" else encoding) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(folder)


def write_text(path: PathLike, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically.

        >>> write_text("run/fitness.csv", "generation,best\\n0,0.91\\n")
    """
    with atomic_open(path, "w") as f:
        f.write(text)


def write_json(path: PathLike, obj: Any, *, indent: int | None = 2) -> None:
    """Write ``obj`` as JSON to ``path`` atomically.

    NumPy scalars become Python numbers, NumPy (or CuPy) arrays nested lists, tuples lists; NaN
    and infinities are written as Python's ``json`` does (``NaN``, ``Infinity``). Anything else
    that JSON cannot hold raises :class:`TypeError` naming where it sits in ``obj``.

        >>> write_json("run/state.json", {"generation": 3, "fitness": [np.float32(0.9)]})
    """
    text = json.dumps(_jsonable(obj, "obj"), indent=indent, allow_nan=True)
    write_text(path, text + "\n")


def read_json(path: PathLike) -> Any:
    """The JSON value in ``path`` (``NaN`` and ``Infinity`` allowed, see :func:`write_json`).

        >>> read_json("run/state.json")["generation"]
        3
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such file") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err}); the file is damaged — restore it "
                         "or remove it") from err


def write_npz(path: PathLike, arrays: Mapping[str, Any], *, compress: bool = False) -> None:
    """Write named arrays to an ``.npz`` file at ``path`` atomically (no pickled objects).

    Names are non-empty strings; values anything :func:`numpy.asarray` accepts (CuPy arrays are
    copied to the host) except object arrays. ``compress=True`` deflates the members.
    :func:`numpy.load` and :func:`read_npz` read the file.

        >>> write_npz("run/weights.npz", {"dense1.weight": np.zeros((3, 5), np.float32)})
    """
    if not isinstance(arrays, Mapping):
        raise TypeError(f"write_npz needs a mapping of name -> array, got "
                        f"{type(arrays).__name__}")
    host = {}
    for name, value in arrays.items():
        if not isinstance(name, str) or not name:
            raise ValueError(f"write_npz: array names must be non-empty strings, got {name!r}")
        array = backend.to_numpy(value)
        if array.dtype.hasobject:
            raise TypeError(f"write_npz: array {name!r} has dtype {array.dtype}, which would "
                            "need pickle; store numbers only (JSON for structure)")
        host[name] = array
    method = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
    with atomic_open(path, "wb") as f, zipfile.ZipFile(f, "w", method, allowZip64=True) as zf:
        for name, array in host.items():
            with zf.open(name + ".npy", "w", force_zip64=True) as member:
                np.lib.format.write_array(member, array, allow_pickle=False)


def read_npz(path: PathLike) -> dict[str, np.ndarray]:
    """All arrays in the ``.npz`` file ``path`` as a dict; never unpickles (allow_pickle=False).

        >>> read_npz("run/weights.npz")["dense1.weight"].shape
        (3, 5)
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    try:
        archive = np.load(path, allow_pickle=False)
        if not isinstance(archive, np.lib.npyio.NpzFile):
            raise ValueError("a single .npy array, not an .npz archive")
        with archive:
            return {name: archive[name] for name in archive.files}
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as err:
        raise ValueError(f"{path}: not a readable .npz of plain arrays ({err}); the file is "
                         "damaged or was not written by tinyevo") from err


# --- whole directories --------------------------------------------------------------------------

@contextmanager
def atomic_dir(path: PathLike) -> Iterator[Path]:
    """Build a directory in a staging folder; it becomes ``path`` only when the block succeeds.

    The previous ``path``, if any, stays complete and in place until the new one is fully written
    and fsynced, then the two are swapped with renames. If the process dies at any moment,
    :func:`recover_dir` (or the next ``atomic_dir`` on the same path) leaves ``path`` holding
    either the previous or the new directory, complete; :func:`complete_dir` finds the newest
    complete one without changing anything. One writer per path at a time.

        >>> with atomic_dir("run/checkpoint") as tmp:
        ...     write_json(tmp / "population.json", {"generation": 3})
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    recover_dir(path)
    for stale in path.parent.glob(f".{path.name}.partial-*"):
        shutil.rmtree(stale, ignore_errors=True)
    staging = path.parent / f".{path.name}.partial-{secrets.token_hex(4)}"
    staging.mkdir()
    try:
        yield staging
        _fsync_tree(staging)
        # Renaming the finished staging folder to .NAME.new marks it complete.
        os.rename(staging, _new(path))
        _fsync_dir(path.parent)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    _swap_in(path)


def recover_dir(path: PathLike) -> Path | None:
    """Finish a swap that :func:`atomic_dir` began and a crash interrupted; ``path`` or None.

    Returns ``path`` when it now holds a complete directory, None when there is none (a fresh
    run). Only the process that owns ``path`` should call it (it renames); readers of a live run
    use :func:`complete_dir`.

        >>> recover_dir("run/checkpoint")  # before loading a checkpoint to resume
        PosixPath('run/checkpoint')
    """
    path = Path(path)
    new, old = _new(path), _old(path)
    if new.is_dir():
        _swap_in(path)  # the newer complete directory wins
    elif old.is_dir():
        if path.exists():
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(old, path)
            _fsync_dir(path.parent)
    return path if path.is_dir() else None


def complete_dir(path: PathLike) -> Path | None:
    """The newest complete directory written by :func:`atomic_dir` at ``path``; changes nothing.

    That is ``path`` itself, or after an interrupted swap its ``.NAME.new``/``.NAME.old`` sibling;
    None when there is none.

        >>> complete_dir("run/checkpoint")
        PosixPath('run/checkpoint')
    """
    path = Path(path)
    for candidate in (_new(path), path, _old(path)):
        if candidate.is_dir():
            return candidate
    return None


def _swap_in(path: Path) -> None:
    """Replace ``path`` with its complete ``.NAME.new`` sibling; keep the old one until then."""
    new, old = _new(path), _old(path)
    if path.exists():
        if old.exists():
            shutil.rmtree(old)
        os.rename(path, old)
        _fsync_dir(path.parent)
    os.rename(new, path)
    _fsync_dir(path.parent)
    shutil.rmtree(old, ignore_errors=True)


def _new(path: Path) -> Path:
    return path.parent / f".{path.name}.new"


def _old(path: Path) -> Path:
    return path.parent / f".{path.name}.old"


def _fsync_tree(root: Path) -> None:
    for folder, _, files in os.walk(root):
        for name in files:
            fd = os.open(os.path.join(folder, name), os.O_RDONLY | getattr(os, "O_BINARY", 0))
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        _fsync_dir(Path(folder))


def _fsync_dir(folder: Path) -> None:
    """Make a rename in ``folder`` durable; Windows cannot open folders and skips it."""
    if os.name == "nt":
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError:  # some file systems refuse fsync on folders; the rename itself stands
        pass
    finally:
        os.close(fd)


# --- JSON conversion ----------------------------------------------------------------------------

def _jsonable(obj: Any, where: str) -> Any:
    if obj is None or isinstance(obj, bool | int | str):
        return obj
    if isinstance(obj, float):
        return obj
    if isinstance(obj, np.generic):
        value = obj.item()
        if isinstance(value, bool | int | float | str) or value is None:
            return value
        if isinstance(value, complex):
            raise TypeError(f"{where}: complex {obj!r} cannot be stored in JSON")
        return _jsonable(value, where)
    if isinstance(obj, Mapping):
        out = {}
        for key, value in obj.items():
            if isinstance(key, np.generic):
                key = key.item()
            if not isinstance(key, str | int | float | bool) or key is None:
                raise TypeError(f"{where}: JSON object keys must be str, int, float or bool, "
                                f"got {type(key).__name__} {key!r}")
            if isinstance(key, float) and not math.isfinite(key):
                raise TypeError(f"{where}: non-finite key {key!r} cannot be stored in JSON")
            out[key] = _jsonable(value, f"{where}[{key!r}]")
        return out
    if isinstance(obj, list | tuple):
        return [_jsonable(v, f"{where}[{i}]") for i, v in enumerate(obj)]
    if isinstance(obj, np.ndarray) or backend.is_gpu(obj):
        array = backend.to_numpy(obj)
        if array.dtype.hasobject or array.dtype.kind not in "biufU":
            raise TypeError(f"{where}: array of dtype {array.dtype} cannot be stored in JSON")
        return array.tolist()
    raise TypeError(f"{where}: {type(obj).__name__} cannot be stored in JSON; convert it to "
                    "numbers, strings, lists and dicts first")
