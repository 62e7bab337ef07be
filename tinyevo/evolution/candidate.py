"""Candidates: what the genetic algorithm evolves and what fitness functions measure.

A candidate carries a model and, optionally, the hyperparameters being searched for (its own
optimiser, its own loss, its own map of the training data: :class:`CandidateDataIterMap`).
Fitness functions ask for them through accessors with a default, so a candidate returns
something other than the default only for what is actually being searched:

    >>> c = CandidateModel(lambda x: x)
    >>> opt(c, default="the default optimiser")
    'the default optimiser'

Defining a new candidate type takes a dataclass and, where a fitness needs a new property, an
accessor. ``new_candidate`` then works out of the box (it maps every dataclass field):

    >>> from dataclasses import dataclass
    >>> @dataclass
    ... class ExampleCandidate(AbstractCandidate):
    ...     a: int
    ...     b: int
    >>> def aval(c, default=None):
    ...     return getattr(c, "a", default)
    >>> aval(new_candidate(ExampleCandidate(4, 3), lambda v: v * 2))
    8

A fitness for it is any callable of the candidate, or an :class:`AbstractFitness` subclass (see
``tinyevo.evolution.fitness``). :class:`FittedCandidate` forwards unknown attributes to the
candidate it wraps, so accessors such as ``aval`` keep working after evaluation.

A child made by ``new_candidate`` starts without a fitness but remembers its parent's as
:func:`prior_fitness` (the seed's ``fitness(c)`` of a child), which ``EwmaFitness`` blends with:

    >>> prior_fitness(new_candidate(FittedCandidate(CandidateModel(2), 0.8), lambda v: v))
    0.8
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable
from typing import Any

from tinyevo.evolution import _births as births
from tinyevo.metrics import outputs, r2_score

__all__ = [
    "AbstractCandidate", "CandidateModel", "CandidateOptModel", "FittedCandidate",
    "new_candidate", "graph", "opt", "lossfun", "prior_fitness", "copy_model", "nparams",
    "is_model", "inherit_optimizer_state",
]
__all__ += ["CandidateDataIterMap", "itermap"]


class AbstractCandidate:
    """Base class of candidates.

    Accessors ``graph``, ``opt`` and ``lossfun`` return ``default`` unless the candidate carries
    that property. ``fitness`` and ``generation`` are None until the candidate is evaluated
    (:class:`FittedCandidate`); ``prior_fitness`` is the fitness it had before (its parent's,
    or its own last one), None for a fresh candidate. Subclasses that are dataclasses get
    :meth:`new_candidate` for free.
    """

    fitness: Any = None
    generation: int | None = None
    prior_fitness: Any = None  # set on the instance (it pickles along to worker processes)

    def graph(self, default: Any = None) -> Any:
        """The candidate's model, else ``default``."""
        return default

    def opt(self, default: Any = None) -> Any:
        """The candidate's own optimiser, else ``default``."""
        return default

    def __call__(self, x: Any) -> Any:
        """The model's inference output on ``x`` (logits, for a classifier)."""
        model = self.graph()
        if model is None:
            raise TypeError(f"{type(self).__name__} has no model to run")
        return model(x)

    def predict(self, x: Any, batch_size: int = 256) -> Any:
        """Class labels (argmax of the output) for the samples of ``x``, in batches; for a
        regressor (``task == "regression"``, which ``tinyevo.fit`` sets on the candidates it
        returns) the outputs themselves, (N, K) in the targets' units.

            >>> labels = population.best().predict(x_test)  # doctest: +SKIP
        """
        _check_finite(x, "predict")
        out = outputs(self, x, batch_size)
        if self._regressor():
            return out
        return out.argmax(axis=1) if out.size else out.reshape(-1).astype("int64")

    def evaluate(self, x: Any, y: Any, batch_size: int = 256) -> float:
        """Accuracy of :meth:`predict` against ``y``: integer labels (N,) or (N, 1) in [0, K),
        or one-hot rows (N, K), for a model with K outputs; for a regressor, the R² of its
        predictions against targets ``y`` (N,) or (N, K) (averaged over outputs)."""
        import numpy as np

        y = np.asarray(getattr(y, "get", lambda: y)())
        _check_finite(x, "evaluate")
        if self._regressor():
            out = outputs(self, x, batch_size)
            if not len(out) and not len(y):
                return float("nan")
            if y.size != out.size or len(y) != len(out):
                raise ValueError(f"evaluate: the model gives {out.shape[1]} outputs for each of "
                                 f"{len(out)} samples, the targets have shape {y.shape}")
            return r2_score(y, out)
        width = y.shape[1] if y.ndim == 2 and y.shape[1] != 1 else None    # one-hot rows
        if y.ndim == 2:
            y = y[:, 0] if width is None else y.argmax(axis=1)
        if y.ndim != 1:
            raise ValueError(f"evaluate: expected labels of shape (N,), (N, 1) or one-hot "
                             f"(N, K), got shape {y.shape}")
        if width is None:
            _check_labels(y)
        out = outputs(self, x, batch_size)
        if not out.size:
            if len(y):
                raise ValueError(f"evaluate: 0 samples in x but {len(y)} labels in y")
            return float("nan")
        labels = out.argmax(axis=1)
        if len(labels) != len(y):
            raise ValueError(f"evaluate: {len(labels)} samples in x but {len(y)} labels in y")
        nout = out.shape[1]
        if width is not None and width != nout:
            raise ValueError(f"evaluate: one-hot labels need one column per model output: "
                             f"expected (N, {nout}), got {width} columns; pass integer "
                             f"labels or one-hot rows over the model's {nout} classes")
        if len(y) and y.max() >= nout:
            raise ValueError(f"evaluate: labels must lie in [0, {nout}) for a model with "
                             f"{nout} outputs, got labels up to {y.max()}; map the classes "
                             f"to 0..{nout - 1} as in training")
        return float((labels == y).mean()) if len(y) else float("nan")

    def _regressor(self) -> bool:
        return getattr(self, "task", None) == "regression"

    def lossfun(self, default: Any = None) -> Any:
        """The candidate's own loss function, else ``default``."""
        return default

    def itermap(self, default: Any = None) -> Any:
        """The candidate's own map of its training iterator, else ``default``."""
        return default

    def new_candidate(self, mapfield: Callable[[Any], Any]) -> AbstractCandidate:
        """A new candidate of the same type with every field passed through ``mapfield``."""
        if not dataclasses.is_dataclass(self):
            raise NotImplementedError(
                f"{type(self).__name__}.new_candidate: make the candidate a @dataclass (every "
                "field is then mapped) or override new_candidate(self, mapfield)")
        kwargs = {f.name: mapfield(getattr(self, f.name))
                  for f in dataclasses.fields(self) if f.init}
        return _with_prior(type(self)(**kwargs), self)


@dataclasses.dataclass(eq=False)
class CandidateModel(AbstractCandidate):
    """A candidate that is just a model; optimiser and loss come from the fitness defaults.

        >>> CandidateModel(model).graph() is model  # doctest: +SKIP
    """

    model: Any

    def graph(self, default: Any = None) -> Any:
        return self.model

    def __repr__(self) -> str:
        return f"CandidateModel({_short(self.model)})"


@dataclasses.dataclass(eq=False)
class CandidateOptModel(AbstractCandidate):
    """A candidate with its own optimiser, which mutation and crossover may change.

        >>> c = CandidateOptModel(Adam(1e-3), model)  # doctest: +SKIP
    """

    optimizer: Any
    model: Any

    def graph(self, default: Any = None) -> Any:
        return self.model

    def opt(self, default: Any = None) -> Any:
        return self.optimizer

    def __repr__(self) -> str:
        return f"CandidateOptModel({self.optimizer!r}, {_short(self.model)})"


class _Wrapper(AbstractCandidate):
    """A candidate around another (``self.candidate``), whose accessors it forwards."""

    candidate: Any

    def graph(self, default: Any = None) -> Any:
        return graph(self.candidate, default)

    def opt(self, default: Any = None) -> Any:
        return opt(self.candidate, default)

    def lossfun(self, default: Any = None) -> Any:
        return lossfun(self.candidate, default)

    def itermap(self, default: Any = None) -> Any:
        return itermap(self.candidate, default)


@dataclasses.dataclass(eq=False)
class CandidateDataIterMap(_Wrapper):
    """CandidateDataIterMap(map, candidate): ``candidate`` training on ``map(it)`` in place of
    the training iterator ``it`` (the seed's CandidateDataIterMap), e.g. in batches of its own
    size, which mutation and crossover then search.

    ``map`` is any callable of an iterator; mutations and crossovers of iterator maps change an
    :class:`~tinyevo.evolution.iterators.AbstractIteratorMap` such as ``BatchSizeIteratorMap``.
    Every other accessor is the wrapped candidate's, and :meth:`new_candidate` maps the wrapped
    candidate's fields, then ``map``.

        >>> c = CandidateDataIterMap(lambda it: list(it)[:1], CandidateModel(None))
        >>> itermap(c)([(1, 2), (3, 4)]), c.graph() is None
        ([(1, 2)], True)

    ``CandidateDataIterMap(BatchSizeIteratorMap(16), candidate)`` trains in batches of 16.
    """

    map: Any
    candidate: Any

    def itermap(self, default: Any = None) -> Any:
        return self.map

    def new_candidate(self, mapfield: Callable[[Any], Any]) -> CandidateDataIterMap:
        inner = new_candidate(self.candidate, mapfield)
        return _with_prior(type(self)(mapfield(self.map), inner), self)

    def __repr__(self) -> str:
        return f"CandidateDataIterMap({self.map!r}, {self.candidate!r})"


class FittedCandidate(_Wrapper):
    """A candidate with its fitness, computed in ``generation``.

    Accessors and any other attribute are forwarded to the wrapped candidate; ``new_candidate``
    maps the wrapped candidate, so a child starts without a fitness, its ``prior_fitness`` this
    candidate's fitness. ``prior_fitness`` here is ``fitness`` too: what a new evaluation of this
    candidate (an elite kept for the next generation) starts from.

        >>> f = FittedCandidate(CandidateModel(None), 0.5, 3); (f.fitness, f.generation)
        (0.5, 3)
    """

    def __init__(self, candidate: Any, fitness: Any, generation: int | None = None) -> None:
        if isinstance(candidate, FittedCandidate):
            candidate = candidate.candidate
        self.candidate = candidate
        self.fitness = fitness
        self.generation = generation

    def new_candidate(self, mapfield: Callable[[Any], Any]) -> Any:
        return _with_prior(new_candidate(self.candidate, mapfield), self)

    @property
    def prior_fitness(self) -> Any:
        if self.fitness is not None:
            return self.fitness
        return getattr(self.candidate, "prior_fitness", None)

    @property
    def _lineage(self) -> Any:
        """The lineage tag (:mod:`tinyevo.evolution.lineage`): the wrapped candidate's."""
        return births.tag_of(self.__dict__.get("candidate"))

    @_lineage.setter
    def _lineage(self, tag: Any) -> None:
        births.set_tag(self.candidate, tag)

    def __getattr__(self, name: str) -> Any:
        # Only called for attributes not found normally; guard against recursion while
        # copy/pickle rebuild the object before ``candidate`` exists.
        if name.startswith("__") or "candidate" not in self.__dict__:
            raise AttributeError(name)
        return getattr(self.__dict__["candidate"], name)

    def __repr__(self) -> str:
        return (f"FittedCandidate({self.candidate!r}, fitness={self.fitness!r}, "
                f"generation={self.generation})")


# --------------------------------------------------------------------- accessors
def graph(c: Any, default: Any = None) -> Any:
    """The model of candidate ``c``, else ``default``."""
    return c.graph(default) if isinstance(c, AbstractCandidate) else default


def opt(c: Any, default: Any = None) -> Any:
    """The optimiser of candidate ``c``, else ``default``."""
    return c.opt(default) if isinstance(c, AbstractCandidate) else default


def lossfun(c: Any, default: Any = None) -> Any:
    """The loss function of candidate ``c``, else ``default``."""
    return c.lossfun(default) if isinstance(c, AbstractCandidate) else default


def itermap(c: Any, default: Any = None) -> Any:
    """The map candidate ``c`` applies to its training iterator (a
    :class:`CandidateDataIterMap`'s), else ``default``.

        >>> itermap(CandidateDataIterMap(sorted, CandidateModel(None))) is sorted
        True
    """
    return c.itermap(default) if isinstance(c, AbstractCandidate) else default


def prior_fitness(c: Any, default: Any = None) -> Any:
    """The fitness ``c`` had before its current evaluation, else ``default``: for a child, the
    fitness of the candidate it was made from by :func:`new_candidate`; for an evaluated member
    (a FittedCandidate, or the candidate it wraps while it is evaluated again), its own last
    fitness; ``default`` for a fresh candidate.

        >>> prior_fitness(FittedCandidate(CandidateModel(None), 0.8)), prior_fitness(3, -1)
        (0.8, -1)
    """
    value = getattr(c, "prior_fitness", None)
    return default if value is None else value


def inherit_optimizer_state(child: Any, *parents: Any) -> Any:
    """Give ``child``'s optimiser the state its parents' optimisers hold for the parameters its
    model inherited unchanged (:meth:`tinyevo.optimizers.Optimizer.inherit`); returns ``child``.
    A no-op where the child has no optimiser or model, or the parents' hold no state."""
    o, model = opt(child), graph(child)
    inherit = getattr(o, "inherit", None)
    if callable(inherit) and model is not None and is_model(model):
        inherit(model, *(opt(p) for p in parents))
    return child


def new_candidate(c: Any, mapfield: Callable[[Any], Any]) -> Any:
    """The seed's ``newcand``: a new candidate whose fields are ``mapfield`` of ``c``'s fields.

        >>> new_candidate(CandidateModel(2), lambda v: v + 1).model
        3
    """
    if not isinstance(c, AbstractCandidate):
        raise TypeError(f"new_candidate: expected an AbstractCandidate, got {type(c).__name__}")
    with births.making(c) as birth:     # a lineage that records learns the child's parent
        child = c.new_candidate(mapfield)
    return births.born(_with_prior(child, c), birth, c)  # also for an overridden new_candidate


# --------------------------------------------------------------------- model helpers
def is_model(x: Any) -> bool:
    """True for a layer or anything with ``layers()`` (Sequential, CompGraph)."""
    from tinyevo.layers.base import Layer

    return isinstance(x, Layer) or callable(getattr(x, "layers", None))


def copy_model(model: Any) -> Any:
    """A deep copy of ``model``: ``model.copy()`` where it has one, else ``copy.deepcopy``."""
    cp = getattr(model, "copy", None)
    return cp() if callable(cp) else copy.deepcopy(model)


def nparams(model: Any) -> int:
    """Number of parameters: ``model.nparams()``, ``model.parameter_count()`` or the sum over
    ``model.layers()``; 0 for anything else (a plain function has no parameters)."""
    for name in ("nparams", "parameter_count"):
        fn = getattr(model, name, None)
        if callable(fn):
            return int(fn())
    layers = getattr(model, "layers", None)
    if callable(layers):
        return int(sum(layer.parameter_count() for layer in layers()))
    return 0


def _with_prior(child: Any, parent: Any) -> Any:
    """``child``, remembering ``parent``'s fitness (or prior) as its ``prior_fitness``."""
    value = prior_fitness(parent)
    if value is not None and child is not parent:
        _set_prior(child, value)
    return child


def _set_prior(c: Any, value: Any) -> None:
    """Set ``c.prior_fitness``; a candidate that takes no attributes (slots) keeps none."""
    try:
        object.__setattr__(c, "prior_fitness", value)  # also on a frozen dataclass
    except (AttributeError, TypeError):
        pass


def _short(model: Any) -> str:
    text = repr(model)
    return text if len(text) <= 80 else text[:77] + "..."


def _check_finite(x: Any, who: str) -> None:
    """Refuse NaN/Inf in floating-point samples ``x``: a model maps them to an arbitrary
    class (NaN logits argmax to 0). One pass, one read from the device."""
    from tinyevo import backend as B
    kind = getattr(getattr(x, "dtype", None), "kind", None)
    if kind in ("f", "c") and not bool(B.get_array_module(x).isfinite(x).all()):
        bad = int((~B.get_array_module(x).isfinite(x)).sum())
        raise ValueError(f"{who}: expected finite input values, got {bad} NaN/Inf value(s) in x "
                         f"of shape {tuple(x.shape)}; drop or impute those samples first")


def _check_labels(y: Any) -> None:
    """Refuse class labels (host array (N,)) that are not whole numbers >= 0."""
    import numpy as np

    if y.dtype.kind not in "iub" and (y.dtype.kind != "f" or not np.all(np.mod(y, 1) == 0)):
        raise ValueError(f"evaluate: expected integer class labels, got dtype {y.dtype} with "
                         f"non-integer values; pass labels 0..K-1 or one-hot rows (N, K)")
    if y.size and y.min() < 0:
        raise ValueError(f"evaluate: labels must be >= 0 (class indices), got {y.min()}; map "
                         "the classes to 0..K-1 as in training")
