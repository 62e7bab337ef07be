"""Crash-safe files for checkpoints: JSON for structure, ``.npz`` for arrays, never pickle.

Every write goes to a temporary file in the destination's folder, is flushed and fsynced, then
renamed over the destination with :func:`os.replace`, which is atomic. A process killed at any
moment leaves either the old file or the new one, never a mix; at worst a stray
``.NAME.*.tmp`` file remains, which nothing reads.

    >>> write_json("run/state.json", {"generation": np.int64(3), "best": np.float32(0.5)})
    >>> read_json("run/state.json")["generation"]
    3

A whole checkpoint folder is written with :func:`atomic_dir`; the previous complete one stays in
place until the new one is complete, and :func:`recover_dir` finishes the swap after a crash;
readers use :func:`read_complete_dir`, which changes nothing.

JSON and NaN: :func:`write_json` follows Python's :mod:`json` and writes ``NaN`` and
``Infinity`` (a diverged candidate's fitness must not stop a checkpoint), and :func:`read_json`
reads them back. Such files are not strict JSON; tools other than Python's may refuse them.
"""

from __future__ import annotations

import json
import logging
import math
import os
import secrets
import shutil
import time
import zipfile
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, TypeVar

import numpy as np

from tinyevo import backend

__all__ = [
    "atomic_open", "write_text", "write_json", "read_json", "write_npz", "read_npz",
    "atomic_dir", "recover_dir", "complete_dir", "read_complete_dir",
]

PathLike = str | os.PathLike
T = TypeVar("T")
log = logging.getLogger("tinyevo")


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
    except UnicodeDecodeError as err:
        raise ValueError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start}), so not "
                         "a JSON file tinyevo wrote; the file is damaged — restore it or remove "
                         "it") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err}); the file is damaged — restore it "
                         "or remove it") from err
    except RecursionError:
        # Python's parser recurses once per nesting level; tinyevo writes a few levels only.
        raise ValueError(f"{path}: JSON nested too deeply to read (thousands of levels; tinyevo "
                         "writes a dozen at most); the file is damaged or hostile — restore it "
                         "or remove it") from None


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
        archive = np.load(path, allow_pickle=False)     # an .npz is opened, not yet read
        if not isinstance(archive, np.lib.npyio.NpzFile):
            raise ValueError("a single .npy array, not an .npz archive")
        with archive:
            _check_members(archive.zip)
            return {name: archive[name] for name in archive.files}
    except MemoryError:   # a header that _check_members could not bound (a forged zip entry)
        raise ValueError(f"{path}: an array in it declares more data than fits in memory; the "
                         "file is damaged or was not written by tinyevo") from None
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, NotImplementedError,
            RuntimeError) as err:   # the last two: an unknown compression, an encrypted member
        raise ValueError(f"{path}: not a readable .npz of plain arrays ({err}); the file is "
                         "damaged or was not written by tinyevo") from err


def _check_members(zf: zipfile.ZipFile) -> None:
    """Every member of the archive is a plain ``.npy`` array holding as many bytes as its header
    declares: NumPy allocates the declared size before reading, so a forged shape is refused
    here rather than tried."""
    for info in zf.infolist():
        with zf.open(info) as f:
            try:
                version = np.lib.format.read_magic(f)
            except ValueError:
                raise ValueError(f"member {info.filename!r} is not a .npy array") from None
            if version == (1, 0):
                shape, _, dtype = np.lib.format.read_array_header_1_0(f)
            elif version == (2, 0):
                shape, _, dtype = np.lib.format.read_array_header_2_0(f)
            else:       # 3.0 is only for structured dtypes with non-Latin-1 field names
                raise ValueError(f"member {info.filename!r} uses .npy format {version}; "
                                 "plain arrays use 1.0 or 2.0")
            if dtype.hasobject:
                raise ValueError(f"member {info.filename!r} holds Python objects, which "
                                 "would need pickle")
            declared = math.prod(shape) * dtype.itemsize
            held = info.file_size - f.tell()
            if info.compress_type == zipfile.ZIP_STORED:
                held = min(held, info.compress_size - f.tell())
            if declared > held:
                raise ValueError(f"member {info.filename!r} declares shape {shape} of "
                                 f"{dtype} ({declared:,} bytes) but holds {max(held, 0):,}")


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


def recover_dir(path: PathLike, check: Callable[[Path], Any] | None = None) -> Path | None:
    """Finish a swap that :func:`atomic_dir` began and a crash interrupted; ``path`` or None.

    Returns ``path`` when it now holds a complete directory, None when there is none (a fresh
    run). Only the process that owns ``path`` should call it (it renames); readers of a live run
    use :func:`complete_dir`. With ``check`` (a reader that raises ``FileNotFoundError`` or
    ``ValueError`` for a folder it cannot read), a ``.NAME.new`` that fails it (a stray copy,
    or damaged on disk) is renamed aside to ``.NAME.new.damaged-*``, kept for inspection,
    instead of replacing ``path``.

        >>> recover_dir("run/checkpoint")  # before loading a checkpoint to resume
        PosixPath('run/checkpoint')
    """
    path = Path(path)
    new, old = _new(path), _old(path)
    if new.is_dir() and check is not None:
        try:
            check(new)
        except (FileNotFoundError, ValueError) as err:
            aside = new.with_name(f"{new.name}.damaged-{secrets.token_hex(4)}")
            os.rename(new, aside)
            log.warning("%s does not read (%s); moved it to %s and kept %s", new, err,
                        aside.name, path)
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


def read_complete_dir(path: PathLike, read: Callable[[Path], T]) -> T | None:
    """``read(folder)`` for the newest complete directory at ``path`` that reads; changes nothing.

    Tries the folders :func:`complete_dir` would pick, newest first, and goes on past a
    ``.NAME.new`` that ``read`` refuses (``FileNotFoundError`` or ``ValueError``): a stray one,
    empty or half written, does not hide a good ``path``. A damaged ``path`` is an error (the
    previous ``.NAME.old`` is read only where ``path`` is missing, as after a crash). Reads again
    when a folder was swapped away mid-read (a live writer). Returns None when there is no
    folder; when none reads, raises the error of ``path`` itself, else of the newest.

        >>> read_complete_dir("runs/x/checkpoint", lambda d: read_json(d / "state.json"))
        {'format': 'tinyevo.checkpoint', ...}
    """
    path = Path(path)
    for attempt in range(20):
        listing = _listing(path)
        failures: list[tuple[Path, Exception]] = []
        for folder, _ in listing:
            try:
                value = read(folder)
            except (FileNotFoundError, ValueError) as err:
                failures.append((folder, err))
                if folder == path:
                    break
                continue
            for bad, err in failures:
                log.warning("%s: skipped %s, which does not read (%s)", path, bad, err)
            return value
        if not failures:
            return None
        if attempt < 19 and _listing(path) != listing:
            time.sleep(0.05)       # a writer swapped folders while we read: look again
            continue
        raise next((err for folder, err in failures if folder == path), failures[0][1])
    return None     # pragma: no cover (the last attempt returns or raises)


def _listing(path: Path) -> list[tuple[Path, int]]:
    """The complete directories at ``path``, newest first, with their inodes (which a swap
    changes)."""
    out = []
    for candidate in (_new(path), path, _old(path)):
        try:
            if candidate.is_dir():
                out.append((candidate, candidate.stat().st_ino))
        except OSError:     # vanished between the two calls
            pass
    return out


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
