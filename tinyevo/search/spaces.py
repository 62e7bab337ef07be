"""Search spaces: layer spaces draw a layer for an input size, architecture spaces draw vertices.

    >>> te.seed(0)
    >>> layerspace = VertexSpace(DenseSpace(range(3, 11), ["identity", "relu"]))
    >>> space = ArchSpaceChain(RepeatArchSpace(layerspace, range(1, 4)),
    ...                        VertexSpace(DenseSpace(3, "identity"), shielded=True))
    >>> inp = input_vertex("input", 5, "dense")
    >>> graph = CompGraph(inp, space(inp)); graph.outputs[0].nout
    3

Call conventions (all keyword arguments optional):

- layer space: ``space(insize, rng=None, *, outsize=None, weightinit=None) -> Layer``;
- architecture space: ``space(vertex, rng=None, *, outsize=None, weightinit=None, name=None)
  -> Vertex``, the new output vertex, or ``vertex`` itself when nothing was added.

``outsize`` asks for that many output neurons: every layer that sets its own size (Dense, Conv)
gets it, a fork splits it over its paths; size-invariant spaces (BatchNorm, pooling, no-op) keep
their input's size. ``name`` prefixes the names of the new vertices ("block.1.path2"); without
it the graph numbers them. A space that cannot be applied to its input (a DenseSpace on conv
data, say) raises :class:`SpaceError` and leaves the input vertex as it was.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from tinyevo import backend as B
from tinyevo.graph import Vertex, add, concat, detach, vertex, zero_output
from tinyevo.layers import BatchNorm, Conv, Dense, GlobalPool, Layer, MaxPool, MeanPool
from tinyevo.layers import activations as _activations
from tinyevo.search.parspace import AbstractParSpace, ParSpace, as_parspace
from tinyevo.search.shield import MutationShield, set_shield
from tinyevo.search.weightinit import (
    DefaultWeightInit,
    PartialIdentityWeightInit,
    WeightInit,
    ZeroWeightInit,
)

__all__ = [
    "SpaceError", "AbstractLayerSpace", "DenseSpace", "ConvSpace", "BatchNormSpace", "PoolSpace",
    "AbstractArchSpace", "VertexSpace", "ArchSpace", "ArchSpaceChain", "RepeatArchSpace",
    "ForkArchSpace", "ResidualArchSpace", "ConditionalArchSpace", "FunctionSpace",
    "GlobalPoolSpace", "NoOpArchSpace",
]

Rng = np.random.Generator | None


class SpaceError(ValueError):
    """A search space cannot be applied to the given input (wrong kind of data, bad size)."""


# ====================================================================== layer spaces

class AbstractLayerSpace:
    """A space of layers: ``space(insize, rng=None, *, outsize=None, weightinit=None)``.

    ``kinds`` lists the kinds of input data ("dense", "conv1d", "conv2d") it can take.
    """

    kinds: tuple[str, ...] = ("dense", "conv1d", "conv2d")
    sets_size = False
    """True for spaces whose layers choose their own output size (Dense, Conv)."""

    def __call__(self, insize: int | Vertex, rng: Rng = None, *, outsize: int | None = None,
                 weightinit: WeightInit | None = None) -> Layer:
        """A layer for ``insize`` inputs; given a vertex instead, a new vertex reading it (as
        ``VertexSpace(space)(vertex, ...)``)."""
        if isinstance(insize, Vertex):
            return VertexSpace(self)(insize, rng, outsize=outsize, weightinit=weightinit)
        _check_insize(insize, self)
        if outsize is not None:
            outsize = _check_outsize(outsize, self)
        return self._layer(insize, B.rng(rng), outsize, weightinit or DefaultWeightInit())

    def _layer(self, insize: int, gen: np.random.Generator, outsize: int | None,
               wi: WeightInit) -> Layer:
        raise NotImplementedError

    def accepts(self, kind: str) -> bool:
        """True when the space's layers can read ``kind`` data."""
        return kind in self.kinds


class DenseSpace(AbstractLayerSpace):
    """DenseSpace(outsizes, activations): Dense layers of a drawn width and activation.

        >>> DenseSpace(range(3, 11), ["relu", "elu"])(5).nin
        5
    """

    kinds = ("dense",)
    sets_size = True

    def __init__(self, outsizes: Any, activations: Any = "identity") -> None:
        self.outsizes = _size_space(outsizes, "DenseSpace outsizes")
        self.activations = _activation_space(activations, "DenseSpace")

    def _layer(self, insize: int, gen: np.random.Generator, outsize: int | None,
               wi: WeightInit) -> Dense:
        nout = self.outsizes(gen) if outsize is None else outsize
        act = wi.layer_activation(self.activations(gen))
        layer = Dense(insize, nout, act, init=_layer_init(wi), rng=gen)
        _finish_init(layer, wi)
        return layer

    def __repr__(self) -> str:
        return f"DenseSpace({self.outsizes!r}, {self.activations!r})"


class ConvSpace(AbstractLayerSpace):
    """ConvSpace(ndim, outsizes, activations, kernelsizes, strides=1, dilations=1,
    padding="same"): 1-D or 2-D convolutions.

    ``kernelsizes`` values draw each dimension independently (a 2-D space may give (8, 3), as the
    seed); pass ``CoupledParSpace(values, ndim)`` for square kernels. ``strides`` and
    ``dilations`` draw one value for all dimensions unless given as an N-D ParSpace.

        >>> ConvSpace(2, range(4, 33), ["relu", "elu"], range(3, 10))(16).nin
        16
    """

    sets_size = True

    def __init__(self, ndim: int, outsizes: Any, activations: Any = "identity",
                 kernelsizes: Any = 3, strides: Any = 1, dilations: Any = 1,
                 padding: Any = "same") -> None:
        self.ndim = _check_ndim(ndim, "ConvSpace")
        self.kinds = (f"conv{self.ndim}d",)
        self.outsizes = _size_space(outsizes, "ConvSpace outsizes")
        self.activations = _activation_space(activations, "ConvSpace")
        self.kernelsizes = _size_space(kernelsizes, "ConvSpace kernelsizes", self.ndim)
        self.strides = _size_space(strides, "ConvSpace strides", self.ndim, coupled=True)
        self.dilations = _size_space(dilations, "ConvSpace dilations", self.ndim, coupled=True)
        self.padding = padding

    def _layer(self, insize: int, gen: np.random.Generator, outsize: int | None,
               wi: WeightInit) -> Conv:
        nout = self.outsizes(gen) if outsize is None else outsize
        kernel = _tuple(self.kernelsizes(gen), self.ndim)
        stride = _tuple(self.strides(gen), self.ndim)
        dilation = _tuple(self.dilations(gen), self.ndim)
        act = wi.layer_activation(self.activations(gen))
        layer = Conv(insize, nout, kernel, stride=stride, padding=self.padding,
                     dilation=dilation, activation=act, init=_layer_init(wi), ndim=self.ndim,
                     rng=gen)
        _finish_init(layer, wi)
        return layer

    def __repr__(self) -> str:
        return (f"ConvSpace({self.ndim}, {self.outsizes!r}, {self.activations!r}, "
                f"{self.kernelsizes!r}, strides={self.strides!r}, "
                f"dilations={self.dilations!r})")


class BatchNormSpace(AbstractLayerSpace):
    """BatchNormSpace(activations): BatchNorm over the input's channels with a drawn activation.

        >>> BatchNormSpace(["identity", "relu"])(8).nin
        8
    """

    def __init__(self, activations: Any = "identity") -> None:
        self.activations = _activation_space(activations, "BatchNormSpace")

    def _layer(self, insize: int, gen: np.random.Generator, outsize: int | None,
               wi: WeightInit) -> BatchNorm:
        layer = BatchNorm(insize, wi.layer_activation(self.activations(gen)))
        if wi.identity:                      # exact identity in inference: x / sqrt(1 + eps)
            layer.params["weight"][...] = math.sqrt(1.0 + layer.eps)
        elif isinstance(wi, ZeroWeightInit):
            layer.params["weight"][...] = 0.0
        return layer

    def __repr__(self) -> str:
        return f"BatchNormSpace({self.activations!r})"


class PoolSpace(AbstractLayerSpace):
    """PoolSpace(ndim, windowsizes, strides=None, poolfuns=("max", "mean"), padding="same").

    ``strides=None`` strides by the window. ``padding="same"`` pads each dimension by
    window - 1 (less at the start, as "same" convolution), so the output has ceil(n / stride)
    positions for *any* input size n (no window is ever too large; on sizes that the stride
    divides, non-overlapping windows see no padding at all). ``padding=0`` pools without
    padding: the graph does not know spatial sizes, so a window larger than the input is then
    only reported by the layer when data flows.

        >>> PoolSpace(2, 2, poolfuns="max")(8)
        MaxPool(...)
    """

    sets_size = False

    def __init__(self, ndim: int, windowsizes: Any, strides: Any = None,
                 poolfuns: Any = ("max", "mean"), padding: Any = "same") -> None:
        self.ndim = _check_ndim(ndim, "PoolSpace")
        self.kinds = (f"conv{self.ndim}d",)
        self.windowsizes = _size_space(windowsizes, "PoolSpace windowsizes", self.ndim)
        self.strides = (None if strides is None else
                        _size_space(strides, "PoolSpace strides", self.ndim, coupled=True))
        funs = ParSpace(poolfuns).values()[0]
        names = []
        for f in funs:
            name = {MaxPool: "max", MeanPool: "mean"}.get(f, f)
            if name not in ("max", "mean"):
                raise ValueError(f"PoolSpace poolfuns: expected 'max', 'mean', MaxPool or "
                                 f"MeanPool, got {f!r}")
            names.append(name)
        self.poolfuns = ParSpace(names)
        if padding not in ("same", 0):
            raise ValueError(f"PoolSpace padding must be 'same' or 0, got {padding!r}")
        self.padding = padding

    def _layer(self, insize: int, gen: np.random.Generator, outsize: int | None,
               wi: WeightInit) -> MaxPool | MeanPool:
        window = _tuple(self.windowsizes(gen), self.ndim)
        stride = window if self.strides is None else _tuple(self.strides(gen), self.ndim)
        cls = MaxPool if self.poolfuns(gen) == "max" else MeanPool
        pad = (tuple(((k - 1) // 2, k - 1 - (k - 1) // 2) for k in window)
               if self.padding == "same" else 0)
        return cls(window, stride, padding=pad, ndim=self.ndim)

    def __repr__(self) -> str:
        return (f"PoolSpace({self.ndim}, {self.windowsizes!r}, strides={self.strides!r}, "
                f"poolfuns={self.poolfuns!r})")


# ====================================================================== architecture spaces

class AbstractArchSpace:
    """A space of graph pieces: ``space(vertex, rng=None, *, outsize=None, weightinit=None,
    name=None)`` builds vertices on ``vertex`` and returns the new output vertex (``vertex``
    itself when it added nothing).

    On an error nothing stays attached to ``vertex``: every vertex made by the failed call is
    detached again, so the graph around it is as it was.
    """

    def __call__(self, inp: Vertex, rng: Rng = None, *, outsize: int | None = None,
                 weightinit: WeightInit | None = None, name: str | None = None) -> Vertex:
        if not isinstance(inp, Vertex):
            raise TypeError(f"{type(self).__name__}: expected an input Vertex, got "
                            f"{type(inp).__name__}; make graph inputs with input_vertex()")
        if inp.pending:
            raise SpaceError(f"{type(self).__name__}: {inp.name!r} has a pending size change; "
                             "apply it with select_neurons(graph) first")
        if outsize is not None:
            _check_outsize(outsize, self)
        if weightinit is not None and not isinstance(weightinit, WeightInit):
            raise TypeError(f"weightinit must be a WeightInit (DefaultWeightInit(), "
                            f"IdentityWeightInit(), ...), got {weightinit!r}")
        if name is not None and (not isinstance(name, str) or not name):
            raise ValueError(f"name must be a non-empty string prefix, got {name!r}")
        ctx = _Build(B.rng(rng))
        _BUILDS.append(ctx)
        try:
            out, _ = self._build(inp, ctx, outsize, weightinit or DefaultWeightInit(), name)
        except BaseException:
            detach(ctx.made)
            raise
        finally:
            _BUILDS.pop()
        if _BUILDS:                          # a space called from inside another space
            _BUILDS[-1].made.extend(ctx.made)
        return out

    def _build(self, inp: Vertex, ctx: _Build, outsize: int | None, wi: WeightInit,
               name: str | None) -> tuple[Vertex, WeightInit]:
        """Build on ``inp``; return the output vertex and the weight init for what follows."""
        raise NotImplementedError


class VertexSpace(AbstractArchSpace):
    """VertexSpace(layerspace, shielded=False, name=None): one vertex with a drawn layer.

    ``shielded`` is False, True (never mutated: the seed's ``VertexSpace(Shielded(), ...)``) or a
    :class:`MutationShield` that still allows chosen mutation types. ``name`` is appended to the
    call's name prefix (or is the vertex's name when the call has none).

        >>> out = VertexSpace(DenseSpace(10, "identity"), shielded=True, name="out")
    """

    def __init__(self, layerspace: AbstractLayerSpace, shielded: bool | MutationShield = False,
                 name: str | None = None) -> None:
        if not isinstance(layerspace, AbstractLayerSpace):
            raise TypeError(f"VertexSpace takes a layer space (DenseSpace, ConvSpace, ...), got "
                            f"{type(layerspace).__name__}")
        if not isinstance(shielded, (bool, MutationShield)):
            raise TypeError(f"shielded must be True, False or a MutationShield, got {shielded!r}")
        self.layerspace = layerspace
        self.shielded = shielded
        self.name = name

    def _build(self, inp, ctx, outsize, wi, name):
        ls = self.layerspace
        if not ls.accepts(inp.kind):
            raise SpaceError(f"{ls!r} takes {' or '.join(map(repr, ls.kinds))} data but "
                             f"{inp.name!r} outputs {inp.kind!r}"
                             + ("; put GlobalPoolSpace() before dense layers"
                                if ls.kinds == ("dense",) else ""))
        layer = ls(inp.nout, ctx.rng, outsize=outsize if ls.sets_size else None, weightinit=wi)
        v = ctx.vertex(layer, inp, _name(name, self.name), self.shielded)
        return v, (wi.after_absorb() if ls.sets_size else wi)

    def __repr__(self) -> str:
        return f"VertexSpace({self.layerspace!r}, shielded={self.shielded!r})"


class ArchSpace(AbstractArchSpace):
    """ArchSpace(*spaces) or ArchSpace(parspace): build with one space drawn uniformly.

    Layer spaces are wrapped in :class:`VertexSpace`.

        >>> cblock = ArchSpace(ParSpace1D(cs, csbs, bscs))      # the seed's form
        >>> cblock = ArchSpace(cs, csbs, bscs)                    # the same
    """

    def __init__(self, *spaces: Any) -> None:
        if len(spaces) == 1 and isinstance(spaces[0], AbstractParSpace):
            ps = spaces[0]
            if ps.ndim != 1:
                raise ValueError(f"ArchSpace takes a 1-D space of spaces, got {ps.ndim}-D")
            choices = ps.values()[0]
        else:
            choices = spaces
        if not choices:
            raise ValueError("ArchSpace needs at least one space to choose from")
        self.spaces = ParSpace([_as_arch(s, "ArchSpace") for s in choices])

    def _build(self, inp, ctx, outsize, wi, name):
        return self.spaces(ctx.rng)._build(inp, ctx, outsize, wi, name)

    def __repr__(self) -> str:
        return f"ArchSpace({', '.join(map(repr, self.spaces.values()[0]))})"


class ArchSpaceChain(AbstractArchSpace):
    """ArchSpaceChain(*spaces): each space builds on the output of the one before.

    The ``outsize`` of the call goes to every space of the chain (the seed's rule), so that any
    layer that sets its size ends at the requested size.
    """

    def __init__(self, *spaces: Any) -> None:
        if not spaces:
            raise ValueError("ArchSpaceChain needs at least one space")
        self.spaces = tuple(_as_arch(s, "ArchSpaceChain") for s in spaces)

    def _build(self, inp, ctx, outsize, wi, name):
        v = inp
        for i, s in enumerate(self.spaces, 1):
            v, wi = s._build(v, ctx, outsize, wi, _join(name, str(i)))
        return v, wi

    def __repr__(self) -> str:
        return f"ArchSpaceChain({', '.join(map(repr, self.spaces))})"


class RepeatArchSpace(AbstractArchSpace):
    """RepeatArchSpace(space, counts): ``space`` repeated a drawn number of times (0 allowed).

        >>> hidden = RepeatArchSpace(VertexSpace(DenseSpace(range(3, 11), "relu")), range(1, 4))
    """

    def __init__(self, space: Any, counts: Any) -> None:
        self.space = _as_arch(space, "RepeatArchSpace")
        self.counts = _size_space(counts, "RepeatArchSpace counts", minimum=0)

    def _build(self, inp, ctx, outsize, wi, name):
        v = inp
        for i in range(1, self.counts(ctx.rng) + 1):
            v, wi = self.space._build(v, ctx, outsize, wi, _join(name, str(i)))
        return v, wi

    def __repr__(self) -> str:
        return f"RepeatArchSpace({self.space!r}, {self.counts!r})"


class ForkArchSpace(AbstractArchSpace):
    """ForkArchSpace(space, paths): a drawn number of parallel paths joined by concatenation.

    With ``outsize`` the size is split evenly over the paths (never more paths than neurons); with
    an identity init each path gets a :class:`PartialIdentityWeightInit` at the offset of the
    channels before it, so the fork as a whole is the identity. One path needs no concat; zero
    paths add nothing. Paths must shrink the feature map alike to be concatenated: a path whose
    strides differ from the first path's is dropped (a fork always concatenates valid paths).
    """

    def __init__(self, space: Any, paths: Any) -> None:
        self.space = _as_arch(space, "ForkArchSpace")
        self.paths = _size_space(paths, "ForkArchSpace paths", minimum=0)

    def _build(self, inp, ctx, outsize, wi, name):
        n = self.paths(ctx.rng)
        if outsize is not None:
            n = min(n, outsize)
        if n == 0:
            return inp, wi
        sizes = _split(outsize, n) if outsize is not None else [None] * n
        outs: list[Vertex] = []
        offset = 0
        after = wi
        for i, size in enumerate(sizes, 1):
            pwi = wi.at_offset(offset) if wi.identity else wi
            mark = len(ctx.made)
            out, after = self.space._build(inp, ctx, size, pwi,
                                           _join(name, f"path{i}") if n > 1 else name)
            if outs and (out.kind != outs[0].kind
                         or _stride(out, inp) != _stride(outs[0], inp)):
                detach(ctx.made[mark:])        # cannot be concatenated with the first path
                del ctx.made[mark:]
                continue
            outs.append(out)
            offset += out.nout
        if len(outs) == 1:
            return outs[0], after
        v = ctx.merge(concat, outs, _join(name, "cat"))
        return v, after.after_absorb()

    def __repr__(self) -> str:
        return f"ForkArchSpace({self.space!r}, {self.paths!r})"


class ResidualArchSpace(AbstractArchSpace):
    """ResidualArchSpace(space): ``vertex + space(vertex)``, an elementwise add around it.

    The inner space is asked for ``outsize = vertex.nout`` so the sizes match. With an identity
    init the last layer of the branch is zeroed (instead of the seed's 0.5 scaling, which needs a
    scaling vertex), so the block starts as the identity: ``x + 0``. If the branch cannot be
    added to its input (it changed the spatial size with a stride, or its size or kind) the
    block falls back to the plain branch, without the skip connection; so it does with an
    identity init when no layer with parameters ends the branch (a pooling-only branch, or one
    ending in another residual), since the branch is then already the identity.
    """

    def __init__(self, space: Any) -> None:
        self.space = _as_arch(space, "ResidualArchSpace")

    def _build(self, inp, ctx, outsize, wi, name):
        branch, _ = self.space._build(inp, ctx, inp.nout, wi.full(), _join(name, "res"))
        if branch is inp:
            return inp, wi
        if (branch.kind != inp.kind or branch.nout != inp.nout
                or any(s != 1 for s in _stride(branch, inp))):
            return branch, wi
        if wi.identity and not zero_output(branch, inp):
            return branch, wi                # x + branch(x) would be 2x: keep the plain branch
        return ctx.merge(add, [inp, branch], _join(name, "add")), wi

    def __repr__(self) -> str:
        return f"ResidualArchSpace({self.space!r})"


class ConditionalArchSpace(AbstractArchSpace):
    """ConditionalArchSpace(predicate, iftrue, iffalse=NoOpArchSpace()): ``iftrue`` where
    ``predicate(vertex)`` holds, else ``iffalse``.

        >>> ConditionalArchSpace(lambda v: v.kind == "conv2d", GlobalPoolSpace())
    """

    def __init__(self, predicate: Callable[[Vertex], bool], iftrue: Any,
                 iffalse: Any = None) -> None:
        if not callable(predicate):
            raise TypeError(f"ConditionalArchSpace predicate must be callable, got {predicate!r}")
        self.predicate = predicate
        self.iftrue = _as_arch(iftrue, "ConditionalArchSpace")
        self.iffalse = _as_arch(iffalse if iffalse is not None else NoOpArchSpace(),
                                "ConditionalArchSpace")

    def _build(self, inp, ctx, outsize, wi, name):
        s = self.iftrue if self.predicate(inp) else self.iffalse
        return s._build(inp, ctx, outsize, wi, name)


class FunctionSpace(AbstractArchSpace):
    """FunctionSpace(*functions): apply one drawn graph-building function to the vertex.

    Each function takes the input vertex (and, if it accepts it, ``name=``) and returns a vertex
    built on it, e.g. ``lambda v, name=None: te.vertex(te.layers.Dropout(0.2), v, name=name)``.
    The seed wraps plain array functions in a vertex; here the graph holds only layers, so that
    it can be copied and saved.
    """

    def __init__(self, *functions: Callable[..., Vertex]) -> None:
        if not functions or not all(callable(f) for f in functions):
            raise TypeError("FunctionSpace takes one or more callables (vertex -> vertex)")
        self.functions = ParSpace(list(functions))

    def _build(self, inp, ctx, outsize, wi, name):
        f = self.functions(ctx.rng)
        before = list(inp.outputs)
        try:
            out = f(inp, name=name) if name is not None else f(inp)
        except TypeError:
            if name is None:
                raise
            out = f(inp)
        if not isinstance(out, Vertex):
            raise SpaceError(f"FunctionSpace: {f!r} must return a Vertex, got "
                             f"{type(out).__name__}")
        ctx.made.extend(o for o in inp.outputs if o not in before)
        if out is not inp and out not in ctx.made:
            ctx.made.append(out)
        return out, wi


class GlobalPoolSpace(AbstractArchSpace):
    """GlobalPoolSpace(poolfuns="mean"): global pooling, (N, C, *spatial) -> (N, C).

    Switches the graph from conv to dense data (the pooled output is already flat, so no Flatten
    vertex is needed) and is shielded, as in the seed. On dense data it raises SpaceError.
    """

    def __init__(self, poolfuns: Any = "mean", shielded: bool | MutationShield = True) -> None:
        funs = ParSpace(poolfuns).values()[0]
        names = [{MaxPool: "max", MeanPool: "mean"}.get(f, f) for f in funs]
        if not all(n in ("max", "mean") for n in names):
            raise ValueError(f"GlobalPoolSpace poolfuns: expected 'mean' and/or 'max', got "
                             f"{poolfuns!r}")
        self.poolfuns = ParSpace(names)
        self.shielded = shielded

    def _build(self, inp, ctx, outsize, wi, name):
        if inp.kind == "dense":
            raise SpaceError(f"GlobalPoolSpace needs conv1d or conv2d data, but {inp.name!r} "
                             "outputs dense data (already pooled or flat)")
        layer = GlobalPool(self.poolfuns(ctx.rng))
        return ctx.vertex(layer, inp, _join(name, "globpool"),
                          self.shielded), wi

    def __repr__(self) -> str:
        return f"GlobalPoolSpace({self.poolfuns!r})"


class NoOpArchSpace(AbstractArchSpace):
    """NoOpArchSpace(): adds nothing; returns its input vertex."""

    def _build(self, inp, ctx, outsize, wi, name):
        return inp, wi

    def __repr__(self) -> str:
        return "NoOpArchSpace()"


# ====================================================================== helpers

class _Build:
    """One top-level draw: its generator and every vertex it made (to undo on failure)."""

    __slots__ = ("rng", "made")

    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng
        self.made: list[Vertex] = []

    def vertex(self, layer: Layer, inp: Vertex, name: str | None,
               shielded: bool | MutationShield) -> Vertex:
        v = vertex(layer, inp, name=name)
        self.made.append(v)
        if shielded:
            set_shield(v, shielded)
        return v

    def merge(self, fn: Callable[..., Vertex], ins: list[Vertex], name: str | None) -> Vertex:
        v = fn(*ins, name=name)
        self.made.append(v)
        return v


_BUILDS: list[_Build] = []


def _stride(out: Vertex, inp: Vertex) -> tuple[int, ...]:
    """Product of the strides from ``inp`` to ``out`` per spatial dimension (first inputs).

    With "same" padding everywhere a feature map of n positions becomes ceil(n / stride), so two
    paths with equal strides give equal shapes for every input size.
    """
    total: tuple[int, ...] = ()
    v = out
    while v is not inp and v.inputs:
        layer = v.layer
        st = getattr(layer, "stride", None) if layer is not None else None
        if st is not None:
            st = _tuple(st, getattr(layer, "ndim", None) or 1)
            total = tuple(a * b for a, b in zip(total or (1,) * len(st), st))
        v = v.inputs[0]
    return total or (1,)


def _layer_init(wi: WeightInit) -> str:
    return "zeros" if isinstance(wi, PartialIdentityWeightInit) else wi.init


def _finish_init(layer: Dense | Conv, wi: WeightInit) -> None:
    """Set the identity slice of a partial identity (the layer was made with zeros)."""
    if not isinstance(wi, PartialIdentityWeightInit):
        return
    w = np.zeros(tuple(layer.params["weight"].shape), dtype=np.float32)
    centre = tuple((k - 1) // 2 for k in w.shape[2:])
    for j in range(w.shape[0]):
        if wi.offset + j < w.shape[1]:
            w[(j, wi.offset + j, *centre)] = 1.0
    layer.params["weight"][...] = B.to_device(w, dtype=layer.params["weight"].dtype)


def _as_arch(s: Any, who: str) -> AbstractArchSpace:
    if isinstance(s, AbstractArchSpace):
        return s
    if isinstance(s, AbstractLayerSpace):
        return VertexSpace(s)
    raise TypeError(f"{who}: expected architecture or layer spaces, got {type(s).__name__} "
                    f"({s!r})")


def _size_space(x: Any, what: str, ndim: int = 1, coupled: bool = False,
                minimum: int = 1) -> AbstractParSpace:
    ps = as_parspace(x, ndim, what, coupled)
    for dim in ps.values():
        for v in dim:
            if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < minimum:
                raise ValueError(f"{what}: expected integers >= {minimum}, got {v!r}")
    return ps


def _activation_space(x: Any, who: str) -> AbstractParSpace:
    ps = as_parspace(x, 1, f"{who} activations")
    for a in ps.values()[0]:
        if not isinstance(a, str) or a not in _activations.NAMES:
            raise ValueError(f"{who}: unknown activation {a!r}; expected names from "
                             f"{_activations.NAMES}")
    return ps


def _check_ndim(ndim: Any, who: str) -> int:
    if ndim not in (1, 2) or isinstance(ndim, bool):
        raise ValueError(f"{who}: ndim must be 1 or 2 (1-D or 2-D data), got {ndim!r}")
    return int(ndim)


def _check_insize(insize: Any, space: Any) -> None:
    if not isinstance(insize, (int, np.integer)) or isinstance(insize, bool) or insize < 1:
        raise SpaceError(f"{space!r}: input size must be a positive int, got {insize!r}")


def _check_outsize(outsize: Any, space: Any) -> int:
    if not isinstance(outsize, (int, np.integer)) or isinstance(outsize, bool) or outsize < 1:
        raise SpaceError(f"{type(space).__name__}: outsize must be a positive int, got "
                         f"{outsize!r}")
    return int(outsize)


def _tuple(v: Any, nd: int) -> tuple[int, ...]:
    if isinstance(v, (tuple, list)):
        return tuple(int(i) for i in v)
    return (int(v),) * nd


def _split(total: int, n: int) -> list[int]:
    """``total`` split into ``n`` near-equal parts, smaller ones first (the seed's eq_split)."""
    out, rest = [], total
    for i in range(n):
        out.append(rest // (n - i))
        rest -= out[-1]
    return out


def _join(prefix: str | None, part: str) -> str | None:
    """The name prefix of a child space; None (the graph numbers vertices) without a prefix."""
    return None if prefix is None else f"{prefix}.{part}"


def _name(prefix: str | None, own: str | None) -> str | None:
    """A VertexSpace's vertex name: its own name appended to the prefix, or either alone."""
    if prefix is None or own is None:
        return own if prefix is None else prefix
    return f"{prefix}.{own}"
