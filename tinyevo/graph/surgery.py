"""Parameter surgery: apply a neuron selection to every array that produces or reads the neurons,
change a convolution's kernel size, zero a vertex's output, and snapshot/restore a graph so
failed edits change nothing.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from tinyevo import backend as B
from tinyevo.graph.selection import Selection
from tinyevo.graph.vertices import Vertex, touch
from tinyevo.layers import Conv

__all__ = ["apply_selection", "Snapshot", "connected", "resize_kernel", "zero_output"]


def apply_selection(sel: Selection, rng: np.random.Generator | None = None,
                    sizes_only: bool = False) -> None:
    """Cut/pad the parameters for ``sel`` (or, with ``sizes_only``, record pending sizes).

    Producers select along their output axis (new neurons: fresh outgoing weights, zero bias,
    neutral BatchNorm); absorbing consumers select along their input axis (new inputs: zero
    weights), so growing never changes what the network computes.
    """
    outputs = sel.outputs
    if sizes_only:
        for v, idx in outputs.items():
            if v.owns_size and v.op != "input":
                v._pending = None if len(idx) == v.nout_org else len(idx)
                if v._pending is None:
                    v._deferred = None
        touch()
        return
    for v, idx in outputs.items():
        v._pending = v._deferred = None
        if v.op == "layer" and v.layer.nout is not None and not _identity(idx, v.layer.nout):
            v.layer.select_out(idx, rng=rng)
    for w in sel.consumers:
        idx = outputs[w._inputs[0]]
        if not _identity(idx, w.layer.nin):
            w.layer.select_in(idx, rng=rng)
    touch()


def _identity(idx: np.ndarray, n: int) -> bool:
    return len(idx) == n and bool((idx == np.arange(n)).all())


def connected(v: Vertex) -> list[Vertex]:
    """Every vertex reachable from ``v`` through inputs and outputs (its whole graph)."""
    seen = {v: None}
    stack = [v]
    while stack:
        u = stack.pop()
        for w in (*u._inputs, *u._outputs):
            if w not in seen:
                seen[w] = None
                stack.append(w)
    return list(seen)


class Snapshot:
    """Everything an edit may change on ``vertices``: links, pending sizes, output marks and the
    layers' array dicts (resizing replaces arrays, never writes into them, so shallow copies of
    the dicts are a complete record)."""

    def __init__(self, vertices: Iterable[Vertex]) -> None:
        self.items = []
        for v in vertices:
            layer = v.layer
            ls = None
            if layer is not None:
                d = dict(layer.__dict__)
                for k in ("params", "state", "_grads"):
                    if k in d:
                        d[k] = dict(d[k])
                ls = d
            self.items.append((v, list(v._inputs), list(v._outputs), v._pending, v._deferred,
                               v._is_output, v._successor, ls))

    def restore(self) -> None:
        for v, ins, outs, pending, deferred, is_out, succ, ls in self.items:
            v._inputs, v._outputs = ins, outs
            v._pending, v._deferred = pending, deferred
            v._is_output, v._successor = is_out, succ
            if ls is not None:
                v.layer.__dict__.clear()
                v.layer.__dict__.update(ls)
        touch()


def resize_kernel(layer: Conv, kernel_size: Sequence[int],
                  probe: Sequence[int] | None = None) -> bool:
    """Give ``layer`` a new kernel size, keeping the centre taps.

    Growing pads the kernel with zero taps around the old one (and widens explicit padding to
    match), so the output does not change; shrinking crops to the centre, dropping the extra tap
    of an odd cut on the side whose edge weighs less. Returns False, changing nothing, when the
    output's spatial size would change (checked on ``probe``, default 16 per dimension) or the
    padding would go negative.
    """
    old_k = layer.kernel_size
    new_k = tuple(int(k) for k in kernel_size)
    if new_k == old_k:
        return True
    w = layer.params["weight"]
    xp = B.get_array_module(w)
    host = B.to_numpy(w)
    out = np.zeros(host.shape[:2] + new_k, dtype=host.dtype)
    src, dst = [slice(None)] * 2, [slice(None)] * 2
    pads = None if layer.padding == "same" else [list(p) for p in layer.padding]
    for d, (ko, kn) in enumerate(zip(old_k, new_k)):
        diff = kn - ko
        if diff >= 0:                                   # old taps land at [lo, lo + ko)
            lo = diff // 2
            src.append(slice(None))
            dst.append(slice(lo, lo + ko))
            shift = (lo, diff - lo)
        else:                                           # keep old taps [lo, lo + kn)
            cut = -diff
            lo = cut // 2
            if cut % 2:
                first = np.abs(np.take(host, 0, axis=2 + d)).sum()
                last = np.abs(np.take(host, ko - 1, axis=2 + d)).sum()
                lo += int(first < last)
            src.append(slice(lo, lo + kn))
            dst.append(slice(None))
            shift = (-lo, -(cut - lo))
        if pads is not None:
            dil = layer.dilation[d]
            pads[d] = [pads[d][0] + shift[0] * dil, pads[d][1] + shift[1] * dil]
            if min(pads[d]) < 0:
                return False
    out[tuple(dst)] = host[tuple(src)]
    probe = tuple(probe) if probe is not None else (16,) * layer.ndim
    before = layer.output_shape(probe)
    saved = (layer.kernel_size, layer.padding, layer.params["weight"])
    saved_grad = layer._grads.pop("weight", None)
    layer.kernel_size = new_k
    if pads is not None:
        layer.padding = tuple(tuple(p) for p in pads)
    layer.params["weight"] = xp.asarray(out, dtype=w.dtype)
    if layer.output_shape(probe) != before:
        layer.kernel_size, layer.padding, layer.params["weight"] = saved
        if saved_grad is not None:
            layer._grads["weight"] = saved_grad
        return False
    layer._after_resize()
    return True


def zero_output(v: Vertex, stop: Vertex) -> bool:
    """Make ``v`` output zeros by zeroing the last layers with parameters before it, searching
    back no further than ``stop`` (e.g. so that ``stop + v`` starts as ``stop``: a residual
    block that is the identity). A Dense or Conv gets zero weights and bias, a BatchNorm zero
    scale and shift; a product needs one zero factor, anything else all its inputs zero.
    Returns False, changing nothing, where that is impossible (a path reaches ``stop`` through
    parameter-free vertices).
    """
    return _zero(v, stop, apply=True)


def _zero(v: Vertex, stop: Vertex, apply: bool) -> bool:
    """:func:`zero_output`, or with ``apply=False`` only whether it is possible."""
    if v is stop or v.is_input:
        return False
    if v.op == "layer":
        layer = v.layer
        if layer.SIZE_TRAIT == "absorb":
            if apply:
                for a in layer.params.values():
                    a[...] = 0.0
            return True
        if _zero(v._inputs[0], stop, apply=False):
            return _zero(v._inputs[0], stop, apply)
        if "weight" in layer.params and "bias" in layer.params:   # BatchNorm: gamma = beta = 0
            if apply:
                layer.params["weight"][...] = 0.0
                layer.params["bias"][...] = 0.0
            return True
        return False
    if v.op == "mul":
        for u in v._inputs:
            if _zero(u, stop, apply=False):
                return _zero(u, stop, apply)
        return False
    if not all(_zero(u, stop, apply=False) for u in v._inputs):
        return False
    if apply:
        for u in v._inputs:
            _zero(u, stop, apply=True)
    return True
