"""Optimisers: ``opt.update(model)`` applies one step to every parameter of a layer, a
``Sequential`` or a graph from its accumulated ``grads``, then zeroes the gradients.

Each keeps per-parameter state (moments, step counts) keyed by the layer itself; a parameter that
was replaced since the last step (neuron surgery, ``load_arrays``, an architecture mutation: these
all swap in a new array, whether or not its shape changed) gets fresh state. ``learning_rate``
is readable and writable, ``reset()`` drops all state. ``inherit(model, *parent_opts)`` gives a
model copy the state of the parameters it shares with its parents (copy-on-write arrays, see
:mod:`tinyevo.layers.base`), and ``state_arrays``/``load_state_arrays`` save and restore it.

    >>> from tinyevo.layers import Dense
    >>> opt = Adam(learning_rate=1e-3); opt.learning_rate
    0.001
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Iterable
from typing import Any

import numpy as np

from tinyevo import _kernels
from tinyevo import backend as B
from tinyevo.backend import get_array_module
from tinyevo.layers.base import Layer, is_shared, own, share

__all__ = ["Optimizer", "SGD", "Descent", "Momentum", "Nesterov", "Adam", "NAdam", "AdamW",
           "RMSProp", "AdaGrad", "OPTIMIZERS", "optimizer_from_spec"]


def model_layers(model: Any) -> list[Layer]:
    """The layers of a layer, a Sequential/graph (anything with ``layers()``) or an iterable."""
    if isinstance(model, Layer):
        return [model]
    if hasattr(model, "layers"):
        return list(model.layers())
    if isinstance(model, Iterable):
        return [layer for m in model for layer in model_layers(m)]
    raise TypeError(f"cannot optimise a {type(model).__name__}: expected a Layer, a model with "
                    "layers(), or an iterable of those")


class Optimizer:
    """Base class; subclasses implement ``_step(param, grad, state)`` in place and name the
    arrays it keeps per parameter in ``SLOTS``."""

    HYPER: tuple[str, ...] = ()
    SLOTS: tuple[str, ...] = ()     # per-parameter state arrays (moments), besides the step count

    def __init__(self, learning_rate: float) -> None:
        self.learning_rate = learning_rate
        self._state: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

    def __getstate__(self) -> dict:
        """Pickling and ``copy.deepcopy`` carry the state as (layer, states) items, so that
        beside its model the optimiser finds the copied layers; moments shared copy-on-write
        with another optimiser come back read-only (see :meth:`inherit`)."""
        d = self.__dict__.copy()
        items = list(self._state.items())
        d["_state"] = items
        d["_shared_slots"] = [(i, name, k) for i, (_, states) in enumerate(items)
                              for name, st in states.items() for k in self.SLOTS
                              if is_shared(st.get(k))]
        return d

    def __setstate__(self, d: dict) -> None:
        shared = d.pop("_shared_slots", ())
        items = d.pop("_state", ())
        self.__dict__.update(d)
        for i, name, k in shared:
            a = items[i][1][name][k]
            if type(a) is np.ndarray:
                a.flags.writeable = False
        self._state = weakref.WeakKeyDictionary(items)

    @property
    def learning_rate(self) -> float:
        return self._lr

    @learning_rate.setter
    def learning_rate(self, value: float) -> None:
        value = float(value)
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"learning_rate must be a finite number >= 0, got {value}")
        self._lr = value

    def update(self, model: Any) -> None:
        for layer in model_layers(model):
            states = self._state.setdefault(layer, {})
            grads = layer.grads
            for name in layer.params:
                before = layer.params[name]
                p = own(layer.params, name)     # shared with a copy: step into our own copy
                g = grads[name]
                st = states.get(name)
                if st is not None and p is not before and st["param"] is before:
                    st["param"] = p             # ... keeping the moments
                # Optimisers update in place, so another array object means the layer was resized
                # or reloaded: its old moments no longer line up with its neurons.
                if st is None or st["param"] is not p or st["shape"] != p.shape:
                    st = states[name] = {"param": p, "shape": p.shape, "t": 0}
                st["t"] += 1
                for k in self.SLOTS:            # moments inherited copy-on-write
                    if k in st:
                        own(st, k)
                self._step(p, g, st)
                g[...] = 0

    def reset(self) -> None:
        """Forget all per-parameter state (moments, step counts)."""
        self._state = weakref.WeakKeyDictionary()

    # ----------------------------------------------------------------- state across models
    def inherit(self, model: Any, *sources: Any) -> int:
        """Take over what ``sources`` (the parents' optimisers) know of ``model``'s parameters.

        A model copy holds its parent's arrays copy-on-write, so a parameter a child inherited
        unchanged is the very array its parent's optimiser has moments for; that state is
        taken over (moments shared copy-on-write too: whichever optimiser steps first copies
        them; step count as is). A parameter that mutation resized or added is a new array and
        starts fresh. Sources of another optimiser type are ignored. Only NumPy arrays are
        shared by copies, so on CuPy a child's optimiser starts fresh. Returns the number of
        parameters that got state.

            >>> child_opt.inherit(child_model, parent_opt)        # doctest: +SKIP
        """
        index: dict[int, dict] = {}
        for src in sources:
            if src is None or src is self or type(src) is not type(self):
                continue
            for states in src._state.values():
                for st in states.values():
                    index[id(st["param"])] = st
        taken = 0
        if not index:
            return taken
        for layer in model_layers(model):
            for name, p in layer.params.items():
                st = index.get(id(p))
                if st is None or st["param"] is not p:
                    continue
                self._state.setdefault(layer, {})[name] = {
                    **st, **{k: share(st[k]) for k in self.SLOTS if k in st}}
                taken += 1
        return taken

    def state_arrays(self, model: Any) -> dict[str, Any]:
        """The state this optimiser holds for ``model``, as host arrays keyed
        ``"<layer index>/<parameter>/<slot>"`` (layer index: position in ``model.layers()``;
        slot: ``t`` for the step count, else a moment), for ``numpy.savez``. State of
        parameters replaced since their last step is left out (it would not be used)."""
        out = {}
        for i, layer in enumerate(model_layers(model)):
            for name, st in self._state.get(layer, {}).items():
                if st["param"] is not layer.params.get(name):
                    continue
                out[f"{i}/{name}/t"] = np.asarray(st["t"], dtype=np.int64)
                for k in self.SLOTS:
                    if k in st:
                        out[f"{i}/{name}/{k}"] = np.array(B.to_numpy(st[k]))   # a copy
        return out

    def load_state_arrays(self, model: Any, arrays: dict[str, Any]) -> None:
        """Restore :meth:`state_arrays` of ``model`` (replacing any state held for it)."""
        layers = model_layers(model)
        loaded: dict[tuple[int, str], dict] = {}
        for key, a in arrays.items():
            parts = key.split("/")
            if len(parts) != 3 or not (parts[0].isascii() and parts[0].isdigit()):
                raise ValueError(f"optimiser state key {key!r} is not "
                                 "'<layer index>/<parameter>/<slot>'")
            i, name, slot = int(parts[0]), parts[1], parts[2]
            if i >= len(layers) or name not in layers[i].params:
                raise ValueError(f"optimiser state {key!r} names no parameter of the model "
                                 f"({len(layers)} layers); it belongs to another model")
            p = layers[i].params[name]
            st = loaded.setdefault((i, name), {"param": p, "shape": p.shape})
            if slot == "t":
                t = np.asarray(a)
                if t.shape != () or t.dtype.kind not in "iu" or int(t) < 0:
                    raise ValueError(f"optimiser state {key!r}: expected a step count >= 0, got "
                                     f"an array of shape {t.shape} and dtype {t.dtype}")
                st["t"] = int(t)
            elif slot not in self.SLOTS:
                raise ValueError(f"optimiser state {key!r}: {type(self).__name__} keeps "
                                 f"{list(self.SLOTS) or 'no arrays'} besides 't', not {slot!r}; "
                                 "it belongs to another optimiser")
            else:
                if tuple(np.shape(a)) != tuple(p.shape):
                    raise ValueError(f"optimiser state {key!r} has shape {np.shape(a)}, its "
                                     f"parameter {p.shape}; it belongs to another model")
                host = np.asarray(a)
                if host.dtype.kind != "f" or not np.isfinite(host).all():
                    raise ValueError(f"optimiser state {key!r}: expected finite floating-point "
                                     f"values, got dtype {host.dtype}")
                st[slot] = get_array_module(p).asarray(host, dtype=p.dtype).copy()
        for (i, name), st in loaded.items():
            if "t" not in st:
                raise ValueError(f"optimiser state of layer {i} parameter {name!r} lacks its "
                                 "step count 't'")
            missing = [k for k in self.SLOTS if k not in st]
            if st["t"] > 0 and missing:
                raise ValueError(f"optimiser state of layer {i} parameter {name!r} lacks "
                                 f"{missing} after {st['t']} steps")
        for layer in layers:
            self._state.pop(layer, None)
        for (i, name), st in loaded.items():
            self._state.setdefault(layers[i], {})[name] = st

    def _step(self, p: Any, g: Any, st: dict) -> None:
        raise NotImplementedError

    def hyperparameters(self) -> dict:
        return {"learning_rate": self.learning_rate,
                **{h: getattr(self, h) for h in self.HYPER}}

    def to_spec(self) -> dict:
        return {"type": type(self).__name__, **self.hyperparameters()}

    def copy(self) -> Optimizer:
        """A fresh optimiser with the same type and hyperparameters (no state)."""
        return type(self)(**self.hyperparameters())

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.hyperparameters().items())
        return f"{type(self).__name__}({args})"

    @staticmethod
    def _zeros(p: Any) -> Any:
        return get_array_module(p).zeros_like(p)

    def _slot(self, st: dict, name: str, p: Any) -> Any:
        """The per-parameter state array ``name`` (a moment), zeros made on first use only."""
        a = st.get(name)
        if a is None:
            a = st[name] = self._zeros(p)
        return a


class SGD(Optimizer):
    """Plain gradient descent, the seed's ``Descent``: p -= lr * g."""

    def __init__(self, learning_rate: float = 0.01) -> None:
        super().__init__(learning_rate)

    def _step(self, p, g, st):
        p -= self.learning_rate * g


Descent = SGD


class Momentum(SGD):
    """Heavy-ball momentum: v = rho * v + lr * g; p -= v."""

    HYPER = ("rho",)
    SLOTS = ("v",)

    def __init__(self, learning_rate: float = 0.01, rho: float = 0.9) -> None:
        super().__init__(learning_rate)
        self.rho = float(rho)

    def _step(self, p, g, st):
        v = self._slot(st, "v", p)
        v *= self.rho
        v += self.learning_rate * g
        p -= v


class Nesterov(Momentum):
    """Nesterov momentum (PyTorch's form): b = rho * b + g; p -= lr * (g + rho * b)."""

    def __init__(self, learning_rate: float = 0.001, rho: float = 0.9) -> None:
        super().__init__(learning_rate, rho)

    def _step(self, p, g, st):
        b = self._slot(st, "v", p)
        b *= self.rho
        b += g
        p -= self.learning_rate * (g + self.rho * b)


class Adam(Optimizer):
    """Adam with bias correction (Kingma & Ba)."""

    HYPER = ("beta1", "beta2", "eps")
    SLOTS = ("m", "v")

    def __init__(self, learning_rate: float = 0.001, beta1: float = 0.9, beta2: float = 0.999,
                 eps: float = 1e-8) -> None:
        super().__init__(learning_rate)
        self.beta1, self.beta2, self.eps = float(beta1), float(beta2), float(eps)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # The fused GPU step is Adam's own arithmetic: a subclass that changes the moments or
        # the denominator takes the array-operation path instead.
        cls._fused = cls._moments is Adam._moments and cls._denominator is Adam._denominator

    _fused = True

    def _moments(self, p, g, st):
        m = self._slot(st, "m", p)
        v = self._slot(st, "v", p)
        b1, b2 = self.beta1, self.beta2
        m *= b1
        m += (1.0 - b1) * g
        v *= b2
        v += (1.0 - b2) * (g * g)
        return m, v

    def _denominator(self, v, t):
        d = get_array_module(v).sqrt(v)
        d *= 1.0 / math.sqrt(1.0 - self.beta2 ** t)
        d += self.eps
        return d

    def _step(self, p, g, st):
        t = st["t"]
        if B.is_gpu(p) and self._fused:         # one fused kernel instead of a dozen launches
            m = self._slot(st, "m", p)
            v = self._slot(st, "v", p)
            _kernels.adam(p, g, m, v, self.beta1, self.beta2,
                          self.learning_rate / (1.0 - self.beta1 ** t),
                          1.0 / math.sqrt(1.0 - self.beta2 ** t), self.eps)
            return
        m, v = self._moments(p, g, st)
        step = m / self._denominator(v, t)
        step *= self.learning_rate / (1.0 - self.beta1 ** t)
        p -= step


class NAdam(Adam):
    """Adam with Nesterov momentum (Dozat): the update looks one step ahead in m."""

    def _step(self, p, g, st):
        m, v = self._moments(p, g, st)
        t, b1 = st["t"], self.beta1
        ahead = m * (b1 / (1.0 - b1 ** (t + 1)))
        ahead += g * ((1.0 - b1) / (1.0 - b1 ** t))
        ahead /= self._denominator(v, t)
        ahead *= self.learning_rate
        p -= ahead


class AdamW(Adam):
    """Adam with decoupled weight decay: p -= lr * wd * p before the Adam step."""

    HYPER = ("beta1", "beta2", "eps", "weight_decay")

    def __init__(self, learning_rate: float = 0.001, beta1: float = 0.9, beta2: float = 0.999,
                 eps: float = 1e-8, weight_decay: float = 0.01) -> None:
        super().__init__(learning_rate, beta1, beta2, eps)
        self.weight_decay = float(weight_decay)

    def _step(self, p, g, st):
        p *= 1.0 - self.learning_rate * self.weight_decay
        super()._step(p, g, st)


class RMSProp(Optimizer):
    """RMSProp: v = rho * v + (1 - rho) * g^2; p -= lr * g / (sqrt(v) + eps)."""

    HYPER = ("rho", "eps")
    SLOTS = ("v",)

    def __init__(self, learning_rate: float = 0.001, rho: float = 0.9, eps: float = 1e-8) -> None:
        super().__init__(learning_rate)
        self.rho, self.eps = float(rho), float(eps)

    def _step(self, p, g, st):
        v = self._slot(st, "v", p)
        v *= self.rho
        v += (1.0 - self.rho) * (g * g)
        d = get_array_module(v).sqrt(v)
        d += self.eps
        p -= self.learning_rate * g / d


class AdaGrad(Optimizer):
    """AdaGrad: v += g^2; p -= lr * g / (sqrt(v) + eps)."""

    HYPER = ("eps",)
    SLOTS = ("v",)

    def __init__(self, learning_rate: float = 0.1, eps: float = 1e-8) -> None:
        super().__init__(learning_rate)
        self.eps = float(eps)

    def _step(self, p, g, st):
        v = self._slot(st, "v", p)
        v += g * g
        d = get_array_module(v).sqrt(v)
        d += self.eps
        p -= self.learning_rate * g / d


OPTIMIZERS = {cls.__name__: cls for cls in
              (SGD, Momentum, Nesterov, Adam, NAdam, AdamW, RMSProp, AdaGrad)}


def optimizer_from_spec(spec: dict) -> Optimizer:
    """Rebuild an optimiser (without state) from ``opt.to_spec()``."""
    kind = spec.get("type") if isinstance(spec, dict) else None
    if kind not in OPTIMIZERS:
        raise ValueError(f"unknown optimiser spec {spec!r}: type must be one of "
                         f"{sorted(OPTIMIZERS)}")
    return OPTIMIZERS[kind](**{k: v for k, v in spec.items() if k != "type"})
