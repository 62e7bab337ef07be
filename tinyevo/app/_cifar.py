"""Reading CIFAR-10 "python version" batches, which are pickles, without trusting them.

A batch is read with a restricted unpickler that builds only plain containers and numeric NumPy
arrays, so a tampered file cannot run code, and that keeps the work bounded by the file's size,
so a small tampered file cannot hang the loader either: dict keys and set elements are checked
before they are hashed, arrays stay proxies until the batch's structure is checked, and the
containers are walked once each, to a bounded depth and count (:func:`_resolve`).

    >>> images, labels = read_batch(Path("cifar-10-batches-py/test_batch"))  # doctest: +SKIP
"""

from __future__ import annotations

import io
import pickle
import reprlib
import struct
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["read_batch"]


def read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """The images (N, 3072) uint8 and labels (N,) int64 of one CIFAR-10 "python version" batch
    file, read with :class:`_RestrictedUnpickler` and checked before anything is walked."""
    batch = _safe_unpickle(path)
    if not isinstance(batch, dict):
        raise ValueError(f"{path}: expected a CIFAR-10 batch (a dict with 'data' and 'labels'), "
                         f"got {type(batch).__name__}")
    batch = {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in batch.items()}
    if "data" not in batch or "labels" not in batch:
        found = sorted(k if isinstance(k, str) else _brief(k) for k in batch)
        raise ValueError(f"{path}: a CIFAR-10 batch needs keys 'data' and 'labels', found "
                         f"{found[:10]}; is this CIFAR-100 or another file?")
    # Check the kinds before walking anything: a few hundred bytes of shared references can
    # stand for a tree of 2**40 lists. Only these two entries are resolved; the rest is unused.
    data, labels = batch["data"], batch["labels"]
    if not isinstance(data, _ArrayProxy | np.ndarray):
        raise ValueError(f"{path}: 'data' must be a uint8 array of shape (N, 3072), "
                         f"got {type(data).__name__}")
    if not isinstance(labels, list | _ArrayProxy | np.ndarray):
        raise ValueError(f"{path}: 'labels' must be a list of ints, got {type(labels).__name__}")
    data, labels = _resolved(path, data), _resolved(path, labels)
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise ValueError(f"{path}: 'data' must be a uint8 array of shape (N, 3072), "
                         f"got {data.dtype} array of shape {data.shape}")
    odd = next((type(v).__name__ for v in labels if not isinstance(v, int | np.integer)), None)
    if odd is not None:
        raise ValueError(f"{path}: 'labels' must be a list of ints, got a "
                         f"{type(labels).__name__} holding {odd}")
    y = np.asarray(labels, dtype=np.int64).reshape(-1)
    if len(y) != len(data):
        raise ValueError(f"{path}: {len(data)} images but {len(y)} labels")
    if len(y) and (y.min() < 0 or y.max() > 9):
        raise ValueError(f"{path}: CIFAR-10 labels must lie in 0..9, found {y.min()}..{y.max()}")
    return data, y


def _safe_unpickle(path: Path) -> Any:
    """The object in a pickle file, built by :class:`_RestrictedUnpickler`: arrays are still
    proxies, for :func:`_resolved` to swap once the structure has been checked."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError as err:
        raise FileNotFoundError(f"{path}: no such file") from err
    try:
        # encoding="bytes" reads the original Python 2 files: their str keys arrive as bytes.
        return _RestrictedUnpickler(io.BytesIO(raw), encoding="bytes").load()
    except pickle.UnpicklingError as err:
        raise ValueError(f"{path}: refused or malformed pickle: {err}") from err
    except (EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError,
            OverflowError, struct.error) as err:
        raise ValueError(f"{path}: not a readable CIFAR-10 batch ({type(err).__name__}: {err}); "
                         "the file is truncated or damaged — unpack it again") from err


def _resolved(path: Path, obj: Any) -> Any:
    try:
        return _resolve(obj)
    except pickle.UnpicklingError as err:
        raise ValueError(f"{path}: refused or malformed pickle: {err}; this file is not a "
                         "genuine CIFAR-10 batch — unpack cifar-10-python.tar.gz again") from err


class _Global:
    """What :class:`_RestrictedUnpickler` hands out for an allowed global: a checked stand-in.

    It has no ``__dict__`` and refuses pickle's BUILD, so a file cannot alter it either.
    """

    __slots__ = ("name", "_fn")

    def __init__(self, name: str, fn: Callable[..., Any] | None) -> None:
        self.name, self._fn = name, fn

    def __call__(self, *args: Any) -> Any:
        if self._fn is None:
            raise pickle.UnpicklingError(f"refused call of {self.name}")
        return self._fn(*args)

    def __setstate__(self, state: Any) -> None:
        raise pickle.UnpicklingError(f"refused state for {self.name}")


class _DtypeProxy:
    """A dtype being unpickled: plain numeric types and a byte order, nothing else."""

    __slots__ = ("dtype", "_built")

    def __init__(self, spec: Any, align: Any = False, copy: Any = False) -> None:
        if isinstance(spec, bytes):
            spec = spec.decode("latin1")
        if not isinstance(spec, str) or len(spec) > 3:
            raise pickle.UnpicklingError(f"refused dtype specification {_brief(spec)}")
        self.dtype = np.dtype(spec)
        if self.dtype.kind not in "biuf":
            raise pickle.UnpicklingError(f"refused dtype {self.dtype} (numeric dtypes only)")
        self._built = False

    def __setstate__(self, state: Any) -> None:
        # numpy writes (version, byteorder, subarray, names, fields, elsize, alignment, flags);
        # a plain numeric dtype has no subarray, names or fields.
        if (self._built or not isinstance(state, tuple) or len(state) < 5
                or any(part is not None for part in state[2:5])):
            raise pickle.UnpicklingError(f"refused dtype state {_brief(state)}")
        order = state[1].decode("latin1") if isinstance(state[1], bytes) else state[1]
        if order not in ("<", ">", "|", "="):
            raise pickle.UnpicklingError(f"refused byte order {order!r}")
        if order in "<>":
            self.dtype = self.dtype.newbyteorder(order)
        self._built = True


class _ArrayProxy:
    """An ndarray being unpickled; its state is checked and copied with ``numpy.frombuffer``."""

    __slots__ = ("array",)

    def __init__(self, subtype: Any, shape: Any = None, dtype: Any = None) -> None:
        if subtype is not _NDARRAY:
            raise pickle.UnpicklingError("only plain numpy.ndarray objects may be rebuilt")
        self.array: np.ndarray | None = None

    def __setstate__(self, state: Any) -> None:
        if self.array is not None or not isinstance(state, tuple) or len(state) != 5:
            raise pickle.UnpicklingError(f"refused ndarray state {_brief(state)}")
        _, shape, dtype, fortran, raw = state
        self.array = _checked_array(raw, dtype, shape, "F" if fortran else "C")


def _checked_array(raw: Any, dtype: Any, shape: Any, order: Any) -> np.ndarray:
    if not isinstance(dtype, _DtypeProxy):
        raise pickle.UnpicklingError(f"refused ndarray dtype {_brief(dtype)}")
    if (not isinstance(shape, tuple) or len(shape) > 8
            or not all(isinstance(d, int) and d >= 0 for d in shape)):
        raise pickle.UnpicklingError(f"refused ndarray shape {_brief(shape)}")
    if not isinstance(raw, bytes | bytearray) or order not in ("C", "F"):
        raise pickle.UnpicklingError("refused ndarray data: expected raw bytes")
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.dtype.itemsize
    if len(raw) != expected:
        raise pickle.UnpicklingError(f"ndarray data of {len(raw)} bytes, shape {shape} of "
                                     f"{dtype.dtype} needs {expected}: truncated or damaged")
    return np.frombuffer(raw, dtype=dtype.dtype).reshape(shape, order=order).copy()


def _frombuffer(buf: Any, dtype: Any, shape: Any, order: Any) -> np.ndarray:
    return _checked_array(bytes(buf) if isinstance(buf, memoryview) else buf, dtype, shape, order)


def _latin1_encode(text: Any, encoding: Any = "utf-8") -> bytes:
    # protocol 2 written by Python 3 spells a bytes object as _codecs.encode(str, "latin1")
    if not isinstance(text, str) or encoding != "latin1":
        raise pickle.UnpicklingError("refused _codecs.encode call other than (str, 'latin1')")
    return text.encode("latin1")


def _empty_bytes(*args: Any) -> bytes:
    # ... and an empty bytes object as __builtin__.bytes()
    if args:
        raise pickle.UnpicklingError("refused bytes() call with arguments")
    return b""


_NDARRAY = _Global("numpy.ndarray", None)  # only a marker passed to _reconstruct, never called


class _RestrictedUnpickler(pickle._Unpickler):
    """An unpickler that knows no globals but checked stand-ins for NumPy's array rebuilding.

    ``numpy.core.multiarray._reconstruct`` (``numpy._core`` on NumPy 2), ``numpy.ndarray`` and
    ``numpy.dtype`` (what the real files use), ``numpy._core.numeric._frombuffer`` (protocol 5),
    ``_codecs.encode`` with latin1 and an empty ``bytes()`` (protocol 2 from Python 3) map to
    local stand-ins that accept only numeric arrays given as raw bytes; NumPy's own unpickling
    code never sees the file. Every other global (``os.system``, ``builtins.eval`` ...) raises
    :class:`pickle.UnpicklingError` before anything runs.

    It is the pure-Python unpickler (the C one cannot be overridden opcode by opcode), because
    building a dict or a set hashes what the file holds: a tuple key made of shared tuples
    (``t = (t, t)`` 40 times, about 200 bytes) takes 2**40 steps to hash. Dict keys and set
    elements must be str, bytes, numbers or None, and only dicts and sets take items (an array's
    ``__setitem__`` walks a list index as a tree too). A genuine batch is some 30,000 opcodes
    and one large string: this costs about 15 ms more per batch than the C unpickler.
    """

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"): _Global("_reconstruct", _ArrayProxy),
        ("numpy._core.multiarray", "_reconstruct"): _Global("_reconstruct", _ArrayProxy),
        ("numpy", "ndarray"): _NDARRAY,
        ("numpy", "dtype"): _Global("numpy.dtype", _DtypeProxy),
        ("numpy.core.numeric", "_frombuffer"): _Global("_frombuffer", _frombuffer),
        ("numpy._core.numeric", "_frombuffer"): _Global("_frombuffer", _frombuffer),
        ("_codecs", "encode"): _Global("_codecs.encode", _latin1_encode),
        ("__builtin__", "bytes"): _Global("bytes", _empty_bytes),
        ("builtins", "bytes"): _Global("bytes", _empty_bytes),
    }

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self._ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(
                f"refused global {module}.{name}: a CIFAR-10 batch holds only a dict of bytes, "
                "lists and uint8 NumPy arrays; this file is not a genuine batch and may be "
                "malicious") from None

    def persistent_load(self, pid: Any) -> Any:
        raise pickle.UnpicklingError("refused persistent id")

    def load_setitem(self) -> None:
        value, key = self.stack.pop(), self.stack.pop()
        _taking_items(self.stack[-1], dict)[_hashable(key)] = value

    def load_setitems(self) -> None:
        items = self.pop_mark()
        _taking_items(self.stack[-1], dict).update(_pairs(items))

    def load_dict(self) -> None:
        items = self.pop_mark()  # before self.append is looked up: pop_mark rebinds it
        self.append(dict(_pairs(items)))

    def load_additems(self) -> None:
        items = self.pop_mark()
        _taking_items(self.stack[-1], set).update(map(_hashable, items))

    def load_frozenset(self) -> None:
        items = self.pop_mark()
        self.append(frozenset(map(_hashable, items)))

    def load_bytearray8(self) -> None:
        # The base class allocates and zero-fills the size the file claims before reading it:
        # a 20-byte file could ask for any amount of memory. Reading first bounds it by the file.
        (size,) = struct.unpack("<Q", self.read(8))
        data = self.read(size)
        if len(data) != size:
            raise pickle.UnpicklingError(f"BYTEARRAY8 of {size} bytes truncated to {len(data)}")
        self.append(bytearray(data))

    # The base class's table names its own methods, so the overrides above go in a copy.
    dispatch = dict(pickle._Unpickler.dispatch)
    dispatch[pickle.SETITEM[0]] = load_setitem
    dispatch[pickle.SETITEMS[0]] = load_setitems
    dispatch[pickle.DICT[0]] = load_dict
    dispatch[pickle.ADDITEMS[0]] = load_additems
    dispatch[pickle.FROZENSET[0]] = load_frozenset
    dispatch[pickle.BYTEARRAY8[0]] = load_bytearray8


#: What a dict key or set element may be: types whose hash costs at most one pass over the
#: bytes the file spends on them. A genuine batch's keys are bytes (Python 2 files) or str.
_HASHABLE_TYPES = frozenset({str, bytes, int, float, bool, type(None)})


def _hashable(item: Any) -> Any:
    if type(item) not in _HASHABLE_TYPES:
        raise pickle.UnpicklingError(
            f"refused a dict key or set element of type {type(item).__name__} (only str, bytes, "
            "numbers and None); this file is not a genuine CIFAR-10 batch")
    return item


def _pairs(items: list[Any]) -> Iterator[tuple[Any, Any]]:
    """``(key, value)`` pairs of a SETITEMS or DICT opcode's flat list, each key checked."""
    if len(items) % 2:
        raise pickle.UnpicklingError("odd number of items for a dict")
    return zip(map(_hashable, items[::2]), items[1::2], strict=True)


def _taking_items(target: Any, kind: type) -> Any:
    if type(target) is not kind:
        raise pickle.UnpicklingError(
            f"refused items for a {type(target).__name__}: only dicts and sets take items; "
            "this file is not a genuine CIFAR-10 batch")
    return target


#: How deep :func:`_resolve` follows containers; a genuine batch's labels are one level deep.
_MAX_DEPTH = 8
#: How many values :func:`_resolve` walks in all: a hundred times the 10,000 labels of a genuine
#: batch, still well under a second.
_MAX_VALUES = 1_000_000


def _resolve(obj: Any) -> Any:
    """Swap the unpickled proxies for the arrays they built (in dicts, lists and tuples).

    Each container is walked once and a shared one stays shared, so the work is one step per
    distinct value, never the size of the tree the references stand for (``a = [a, a]`` nested
    40 times). Nesting deeper than :data:`_MAX_DEPTH`, more than :data:`_MAX_VALUES` values or
    a container inside itself raise UnpicklingError.
    """
    done: dict[int, Any] = {}
    budget = _MAX_VALUES

    def walk(item: Any, depth: int) -> Any:
        nonlocal budget
        if isinstance(item, _ArrayProxy):
            if item.array is None:
                raise pickle.UnpicklingError("ndarray without data")
            return item.array
        if isinstance(item, _DtypeProxy | _Global):
            raise pickle.UnpicklingError(f"unexpected {type(item).__name__} outside an array")
        if not isinstance(item, dict | list | tuple):
            return item
        if id(item) in done:
            if done[id(item)] is _IN_PROGRESS:
                raise pickle.UnpicklingError(f"a {type(item).__name__} that contains itself")
            return done[id(item)]
        if depth >= _MAX_DEPTH:
            raise pickle.UnpicklingError(f"containers nested more than {_MAX_DEPTH} deep")
        budget -= len(item)
        if budget < 0:
            raise pickle.UnpicklingError(f"more than {_MAX_VALUES:,} values in all")
        done[id(item)] = _IN_PROGRESS
        if isinstance(item, dict):
            built: Any = {k: walk(v, depth + 1) for k, v in item.items()}
        else:
            built = type(item)(walk(v, depth + 1) for v in item)
        done[id(item)] = built
        return built

    return walk(obj, 0)


_IN_PROGRESS = object()  # marks a container that _resolve has entered but not yet built


def _brief(value: Any) -> str:
    """A repr of at most 80 characters for error messages, cheap for any value in a file."""
    return _SHORT_REPR.repr(value)[:80]


class _ShortRepr(reprlib.Repr):
    # The plain repr of a small pickle of shared references can be astronomically long, and
    # reprlib would still build the whole repr of a (many megabyte) bytes object.
    def repr_bytes(self, value: bytes, level: int) -> str:
        return repr(value[:self.maxstring]) + ("..." if len(value) > self.maxstring else "")


_SHORT_REPR = _ShortRepr()
_SHORT_REPR.maxlevel, _SHORT_REPR.maxstring, _SHORT_REPR.maxother = 3, 40, 60
