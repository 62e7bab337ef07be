"""Checks for the JSON that tinyevo reads back (checkpoints, saved models), written by hand.

Every field is checked before anything is built from it, and every size a spec declares is
compared with the arrays stored beside it, so a damaged or hostile file gets one clear
``ValueError`` naming the file, the field, what was expected, what was found and the fix, never
a ``TypeError`` deep inside a layer or an allocation of terabytes:

    >>> doc = Field(read_json(path), f"{path} is damaged", "restore it", path)
    >>> doc["generation"].integer(1)
    3
    >>> doc["members"][0]["fitness"].number(null=True)
    ValueError: run/checkpoint/state.json is damaged: field members[0].fitness: expected null
    or a finite number, found 'high'; restore it

Why not ``jsonschema``: tinyevo's core depends on NumPy and SciPy only, and the check that
matters most here (a declared ``nout`` against the shape of the stored weight) is not a schema
rule anyway. The checker is a small :class:`Field` plus one function per kind of spec.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from tinyevo.evolution.halloffame import finite_number
from tinyevo.graph import KINDS
from tinyevo.graph.compgraph import SPEC_FORMAT, SPEC_VERSION
from tinyevo.layers import LAYER_TYPES, activations
from tinyevo.optimizers import OPTIMIZERS

__all__ = ["Field", "Stored", "check_depth", "check_graph", "check_sequential",
           "check_optimizer", "check_rng_state", "MAX_DEPTH", "MAX_SIZE", "MAX_WINDOW",
           "MAX_VERTICES", "FLOAT_DTYPES", "finite_number"]

# Sane bounds. Sizes of layers with arrays must also equal the stored arrays' shapes, so these
# only bound what no array pins (an input's size, a pooling window) and keep messages readable.
MAX_DEPTH = 64              # JSON nesting; tinyevo writes a dozen levels at most
MAX_SIZE = 1 << 24          # neurons, channels or features of one vertex
MAX_WINDOW = 4096           # a kernel, window, stride, dilation or padding along one axis
MAX_VERTICES = 100_000      # vertices of one graph, layers of one Sequential
FLOAT_DTYPES = ("float16", "float32", "float64")

_MISSING = object()


class Field:
    """A value of a JSON document and the path to it; each check returns the value, converted
    where that helps, or raises a ValueError naming the file, the field and the fix.

        >>> Field({"n": "abc"}, "m.json is damaged", "save it again", "m.json")["n"].integer(1)
        ValueError: m.json is damaged: field n: expected an integer >= 1, found 'abc'; ...
    """

    def __init__(self, value: Any, headline: str, fix: str, file: str | Path,
                 path: str = "") -> None:
        self.value, self.headline, self.fix, self.file, self.path = (value, headline, fix,
                                                                     file, path)

    def __repr__(self) -> str:
        return f"Field({self.path or '(top level)'} of {self.file})"

    # ------------------------------------------------------------------ navigation
    def __getitem__(self, key: str | int) -> Field:
        """The field ``key`` of this object (or item ``key`` of this list); a missing one fails
        its first check with "found nothing"."""
        value = self.value
        if isinstance(key, int):
            child = value[key] if isinstance(value, list) and 0 <= key < len(value) else _MISSING
            path = f"{self.path}[{key}]"
        else:
            child = value.get(key, _MISSING) if isinstance(value, dict) else _MISSING
            path = f"{self.path}.{key}" if self.path else key
        return Field(child, self.headline, self.fix, self.file, path)

    def get(self, key: str) -> Field | None:
        """The field ``key``, or None when it is absent or null."""
        child = self[key]
        return None if child.value is _MISSING or child.value is None else child

    def fail(self, expected: str) -> ValueError:
        """The error for this field: expected ``expected``, found its value."""
        where = self.path or "(top level)"
        return ValueError(f"{self.headline}: field {where}: expected {expected}, found "
                          f"{_describe(self.value)}; {self.fix}")

    # ------------------------------------------------------------------ checks
    def obj(self, required: tuple[str, ...] = (), optional: tuple[str, ...] | None = ()
            ) -> dict:
        """An object with the ``required`` fields and no others than ``optional`` (None: any)."""
        if not isinstance(self.value, dict):
            raise self.fail("an object {...}")
        for key in required:
            if key not in self.value:
                raise self[key].fail("a value (the field is required)")
        if optional is not None:
            allowed = set(required) | set(optional)
            extra = sorted(k for k in self.value if k not in allowed)
            if extra:
                raise self[extra[0]].fail(f"no such field (allowed here: {sorted(allowed)})")
        return self.value

    def items(self, lo: int = 0, hi: int | None = None) -> list[Field]:
        """A list of ``lo`` to ``hi`` items, as fields."""
        value = self.value
        if not isinstance(value, list) or len(value) < lo or (hi is not None and len(value) > hi):
            raise self.fail(f"a list of {_range(lo, hi)} items")
        return [self[i] for i in range(len(value))]

    def integer(self, lo: int | None = None, hi: int | None = None, null: bool = False
                ) -> int | None:
        """An integer (not a bool) in [lo, hi]; None for null when ``null``."""
        if null and self.value is None:
            return None
        value = self.value
        if (not isinstance(value, int) or isinstance(value, bool)
                or (lo is not None and value < lo) or (hi is not None and value > hi)):
            raise self.fail(("null or " if null else "") + f"an integer {_range(lo, hi)}")
        return value

    def number(self, lo: float | None = None, hi: float | None = None, null: bool = False,
               finite: bool = True, below: bool = False) -> float | None:
        """A finite number (int or float, not a bool) in [lo, hi] (or [lo, hi) with ``below``);
        any float, NaN and infinities too, with ``finite=False``; None for null when ``null``.
        A JSON integer counts only where a float holds it (``10**400`` does not)."""
        if null and self.value is None:
            return None
        value = _as_float(self.value)
        ok = value is not None
        if ok and finite:
            ok = (math.isfinite(value) and (lo is None or value >= lo)
                  and (hi is None or (value < hi if below else value <= hi)))
        if not ok:
            what = ("a number within a float's range" if not finite else
                    f"a finite number {_range(lo, hi, ')' if below else ']')}")
            raise self.fail(("null or " if null else "") + what)
        return value

    def string(self, choices: tuple | list | None = None, null: bool = False) -> str | None:
        """A non-empty string, one of ``choices`` when given; None for null when ``null``."""
        if null and self.value is None:
            return None
        value = self.value
        if not isinstance(value, str) or not value or (choices is not None
                                                       and value not in choices):
            raise self.fail(("null or " if null else "") + (
                f"one of {list(choices)}" if choices is not None else "a non-empty string"))
        return value

    def boolean(self) -> bool:
        if not isinstance(self.value, bool):
            raise self.fail("true or false")
        return self.value


class Stored:
    """The arrays of one ``.npz`` file, checked against the shapes the JSON beside it declares.

    Each layer claims its arrays; :meth:`finish` then refuses arrays that nothing claimed.
    """

    def __init__(self, arrays: Mapping[str, Any], headline: str, fix: str) -> None:
        self.arrays, self.headline, self.fix = arrays, headline, fix
        self._claimed: set[str] = set()
        self._groups: dict[str, dict[str, Any]] = {}
        for key, a in arrays.items():
            group, _, name = key.rpartition("/")
            self._groups.setdefault(group + "/", {})[name] = a

    def fail(self, what: str) -> ValueError:
        return ValueError(f"{self.headline}: {what}; {self.fix}")

    def group(self, prefix: str) -> dict[str, Any]:
        """The arrays keyed ``prefix + name`` (``prefix`` ending in "/"), by name."""
        return self._groups.get(prefix, {})

    def claim_all(self, prefix: str) -> None:
        """Claim every array under ``prefix`` (a layer whose shapes only it knows)."""
        self._claimed.update(k for k in self.arrays if k.startswith(prefix))

    def check(self, prefix: str, shapes: dict[str, tuple], nout: int | None,
              spec: Field) -> None:
        """The arrays keyed ``prefix + name`` are exactly ``shapes`` (plus, for a layer with
        ``nout`` outputs, an optional ``neuron_value`` of shape (nout,)), floating point."""
        have = self.group(prefix)
        layer = f"the {spec.value.get('type')} of {spec.file} field {spec.path}"
        missing = sorted(set(shapes) - set(have))
        if missing:
            raise self.fail(f"missing arrays {[prefix + name for name in missing]} ({layer} "
                            f"has arrays missing for {missing})")
        wanted = dict(shapes)
        if nout is not None and "neuron_value" in have:
            wanted["neuron_value"] = (nout,)
        for name, a in have.items():
            key = prefix + name
            if name not in wanted:
                raise self.fail(f"unexpected arrays [{key!r}] ({layer} has no array {name!r})")
            if a.dtype.kind != "f":
                raise self.fail(f"array {key!r} has dtype {a.dtype}, expected floating point")
            if tuple(a.shape) != wanted[name]:
                raise self.fail(f"array {key!r} has shape {tuple(a.shape)}, expected "
                                f"{wanted[name]} as {layer} declares")
            self._claimed.add(key)

    def finish(self) -> None:
        """Refuse the arrays that no part of the structure claimed."""
        extra = sorted(set(self.arrays) - self._claimed)
        if extra:
            raise self.fail(f"unexpected arrays {extra[:5]}" + (" ..." if len(extra) > 5 else "")
                            + " (no vertex or layer of the structure has them)")


def check_depth(doc: Any, headline: str, fix: str, limit: int = MAX_DEPTH) -> None:
    """Refuse JSON nested deeper than ``limit`` (checked without recursion)."""
    stack = [(doc, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict | list):
            if depth > limit:
                raise ValueError(f"{headline}: JSON nested deeper than {limit} levels (tinyevo "
                                 f"writes a dozen at most); {fix}")
            stack.extend((v, depth + 1) for v in (value.values() if isinstance(value, dict)
                                                  else value))


# ---------------------------------------------------------------------- graph and layer specs

def check_graph(spec: Field, stored: Stored, prefix: str = "") -> None:
    """``spec`` is a :meth:`CompGraph.to_spec` whose arrays ``stored`` holds, keyed
    ``prefix + "<vertex>/<array>"``: every field, and every layer's sizes against its arrays."""
    spec.obj(("format", "vertices", "inputs", "outputs"), ("version",))
    if spec.value["format"] != SPEC_FORMAT:
        raise spec["format"].fail(repr(SPEC_FORMAT))
    if spec.get("version") is not None and spec["version"].integer(1) > SPEC_VERSION:
        raise spec["version"].fail(f"a CompGraph spec version up to {SPEC_VERSION} (a newer "
                                   "tinyevo wrote this one: upgrade tinyevo to read it)")
    vertices = spec["vertices"].items(1, MAX_VERTICES)
    ops = []
    for i, v in enumerate(vertices):
        d = v.obj(("name", "op", "kind", "inputs"),
                  ("size", "layer", "dtype", "shielded", "shield_allow", "track_value"))
        v["name"].string()
        op = v["op"].string(("input", "layer", "concat", "add", "mul"))
        v["kind"].string(KINDS)
        inputs = v["inputs"].items(*((0, 0) if op == "input" else (1, 1) if op == "layer"
                                     else (1, None)))
        for u in inputs:
            if i == 0:
                raise u.fail("no inputs here: the first vertex must be an input")
            u.integer(0, i - 1)     # to_spec lists vertices inputs first
        if d.get("shielded") is not None:
            v["shielded"].boolean()
        if op == "input":
            v["size"].integer(1, MAX_SIZE)
            _only(v, d, ("name", "op", "kind", "inputs", "size"))
        elif op == "layer":
            layer = v["layer"]
            shapes, nout = _check_layer(layer)
            if shapes is None:
                stored.claim_all(f"{prefix}{i}/")
            else:
                stored.check(f"{prefix}{i}/", shapes, nout, layer)
            if v.get("dtype") is not None:
                v["dtype"].string(FLOAT_DTYPES)
            if v.get("shield_allow") is not None:
                for name in v["shield_allow"].items():
                    name.string()
            if v.get("track_value") is not None:
                tv = v["track_value"]
                tv.obj(("every", "momentum"))
                tv["every"].integer(1)
                tv["momentum"].number(0.0, 1.0)
        else:
            _only(v, d, ("name", "op", "kind", "inputs", "shielded"))
        ops.append(op)
    for name, lo in (("inputs", 1), ("outputs", 1)):
        for f in spec[name].items(lo, len(vertices)):
            j = f.integer(0, len(vertices) - 1)
            if name == "inputs" and ops[j] != "input":
                raise f.fail("the index of an input vertex (op 'input')")


def check_sequential(spec: Field, dtypes: Field | None, stored: Stored) -> None:
    """``spec`` is a :meth:`Sequential.to_spec` (with ``dtypes``, one per layer) whose arrays
    ``stored`` holds, keyed ``"<layer>/<array>"``."""
    spec.obj(("type", "layers"))
    if spec.value["type"] != "Sequential":
        raise spec["type"].fail("'Sequential'")
    layers = spec["layers"].items(0, MAX_VERTICES)
    for i, layer in enumerate(layers):
        shapes, _ = _check_layer(layer)
        if shapes is None:
            stored.claim_all(f"{i}/")
        else:
            stored.check(f"{i}/", shapes, None, layer)
    if dtypes is not None:
        for d in dtypes.items(len(layers), len(layers)):
            d.string(FLOAT_DTYPES, null=True)


def _check_layer(f: Field) -> tuple[dict[str, tuple] | None, int | None]:
    """Check a layer spec; the shapes of the arrays it declares and its output size, or
    (None, None) for a registered layer type this module does not know (its arrays are then
    checked once it is built)."""
    f.obj(("type",), None)
    kind = f["type"].string(sorted(LAYER_TYPES))
    check = _LAYERS.get(kind)
    if check is None:           # a user's own registered layer: plain JSON values only
        for key in f.value:
            if key != "type" and not _plain(f.value[key]):
                raise f[key].fail("a number, string, boolean, null or a list of them")
        return None, None
    return check(f)


def _dense(f: Field) -> tuple[dict, int]:
    f.obj(("type", "nin", "nout"), ("activation", "bias"))
    nin, nout = f["nin"].integer(1, MAX_SIZE), f["nout"].integer(1, MAX_SIZE)
    _activation(f)
    return _with_bias(f, {"weight": (nout, nin)}, nout), nout


def _conv(f: Field) -> tuple[dict, int]:
    f.obj(("type", "nin", "nout"),
          ("kernel_size", "stride", "padding", "dilation", "activation", "bias", "ndim"))
    nin, nout = f["nin"].integer(1, MAX_SIZE), f["nout"].integer(1, MAX_SIZE)
    ndim = f["ndim"].integer(1, 2) if f.get("ndim") is not None else None
    kernel = _window(f["kernel_size"], 1) if f.get("kernel_size") is not None else 3
    if ndim is None:
        ndim = len(kernel) if isinstance(kernel, tuple) else 2
    kernel = kernel if isinstance(kernel, tuple) else (kernel,) * ndim
    if len(kernel) != ndim:
        raise f["kernel_size"].fail(f"{ndim} kernel sizes (ndim is {ndim})")
    for key in ("stride", "dilation"):
        if f.get(key) is not None:
            _window(f[key], 1)
    if f.get("padding") is not None:
        _padding(f["padding"])
    _activation(f)
    return _with_bias(f, {"weight": (nout, nin, *kernel)}, nout), nout


def _batchnorm(f: Field) -> tuple[dict, int]:
    f.obj(("type", "n"), ("activation", "momentum", "eps"))
    n = f["n"].integer(1, MAX_SIZE)
    _activation(f)
    if f.get("momentum") is not None:
        f["momentum"].number(0.0, 1.0)
    if f.get("eps") is not None and not f["eps"].number(0.0) > 0:
        raise f["eps"].fail("a finite number > 0")
    return {name: (n,) for name in ("weight", "bias", "running_mean", "running_var")}, n


def _rescale(f: Field) -> tuple[dict, int]:
    f.obj(("type", "n"))
    n = f["n"].integer(1, MAX_SIZE)
    return {"scale": (n,), "offset": (n,)}, n


def _pool(f: Field) -> tuple[dict, None]:
    f.obj(("type",), ("window", "stride", "padding", "ndim"))
    for key in ("window", "stride"):
        if f.get(key) is not None:
            _window(f[key], 1)
    if f.get("padding") is not None:
        _padding(f["padding"])
    if f.get("ndim") is not None:
        f["ndim"].integer(1, 2)
    return {}, None


def _global_pool(f: Field) -> tuple[dict, None]:
    f.obj(("type",), ("mode",))
    if "mode" in f.value:
        f["mode"].string(("mean", "max"))
    return {}, None


def _flatten(f: Field) -> tuple[dict, None]:
    f.obj(("type",))
    return {}, None


def _dropout(f: Field) -> tuple[dict, None]:
    f.obj(("type",), ("p",))
    if "p" in f.value:
        f["p"].number(0.0, 1.0, below=True)
    return {}, None


_LAYERS: dict[str, Callable[[Field], tuple[dict, int | None]]] = {
    "Dense": _dense, "Conv": _conv, "BatchNorm": _batchnorm, "MaxPool": _pool,
    "MeanPool": _pool, "GlobalPool": _global_pool, "Flatten": _flatten, "Dropout": _dropout,
    "Rescale": _rescale,
}


def _activation(f: Field) -> None:
    if f.get("activation") is not None:
        f["activation"].string(activations.NAMES)


def _with_bias(f: Field, shapes: dict, nout: int) -> dict:
    if "bias" not in f.value or f["bias"].boolean():
        shapes["bias"] = (nout,)
    return shapes


def _window(f: Field, lo: int) -> int | tuple[int, ...]:
    """An int in [lo, MAX_WINDOW] or a list of one or two of them."""
    if isinstance(f.value, list):
        return tuple(item.integer(lo, MAX_WINDOW) for item in f.items(1, 2))
    if not (isinstance(f.value, int) and not isinstance(f.value, bool)
            and lo <= f.value <= MAX_WINDOW):
        raise f.fail(f"an integer {_range(lo, MAX_WINDOW)} or a list of one or two")
    return f.value


def _padding(f: Field) -> None:
    """'same', an int, or a list of one or two ints or [lo, hi] pairs, each in [0, MAX_WINDOW]."""
    if f.value == "same":
        return
    if not isinstance(f.value, list):
        _window(f, 0)
        return
    for item in f.items(1, 2):
        if isinstance(item.value, list):
            for side in item.items(2, 2):
                side.integer(0, MAX_WINDOW)
        else:
            item.integer(0, MAX_WINDOW)


def _only(v: Field, d: dict, allowed: tuple[str, ...]) -> None:
    extra = sorted(set(d) - set(allowed))
    if extra:
        raise v[extra[0]].fail(f"no such field for a vertex with op {d['op']!r} (allowed: "
                               f"{sorted(allowed)})")


# ---------------------------------------------------------------------- optimisers and rng

def check_optimizer(f: Field) -> None:
    """``f`` is an optimiser's ``to_spec()``: a known type and its hyperparameters, finite."""
    f.obj(("type",), None)
    kind = f["type"].string(sorted(OPTIMIZERS))
    names = ("learning_rate", *OPTIMIZERS[kind].HYPER)
    f.obj(("type",), names)
    for name in names:
        if name in f.value:
            f[name].number(0.0)


def check_rng_state(f: Field, kind: str = "PCG64") -> None:
    """``f`` is the ``bit_generator.state`` of a NumPy generator of type ``kind`` (PCG64: what
    ``numpy.random.default_rng`` makes, and so the library generator)."""
    f.obj(("bit_generator", "state"), None)
    f["bit_generator"].string((kind,))
    f["state"].obj((), None)
    try:
        getattr(np.random, kind)().state = f.value
    except (TypeError, ValueError, KeyError, OverflowError) as err:
        raise f.fail(f"the state of a {kind} random generator ({err})") from None


# ---------------------------------------------------------------------- helpers

def _plain(value: Any) -> bool:
    if value is None or isinstance(value, bool | int | float | str):
        return True
    return isinstance(value, list) and all(_plain(v) for v in value)


def _as_float(value: Any) -> float | None:
    """``value`` as a float where it is a JSON number a float holds; None for anything else
    (a bool, a string, an integer too large for a float)."""
    if not isinstance(value, int | float) or isinstance(value, bool):
        return None
    try:
        return float(value)
    except OverflowError:
        return None


def _range(lo: Any, hi: Any, close: str = "]") -> str:
    if lo is not None and lo == hi:
        return f"exactly {lo:,}"
    if lo is not None and hi is not None:
        return f"from {lo:,} to {hi:,}" if close == "]" else f"in [{lo}, {hi})"
    if lo is not None:
        return f">= {lo:,}"
    return f"<= {hi:,}" if hi is not None else ""


def _describe(value: Any) -> str:
    if value is _MISSING:
        return "nothing (the field is missing)"
    if isinstance(value, dict):
        keys = sorted(map(str, value))
        return f"an object with fields {keys[:6]}" + (" ..." if len(keys) > 6 else "")
    if isinstance(value, list):
        return f"a list of {len(value)} items"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


