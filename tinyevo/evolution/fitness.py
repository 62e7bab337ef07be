"""Fitness functions: how good a candidate is; higher is better.

``fitness_of(f, candidate, generation=None)`` computes it. ``f`` is an :class:`AbstractFitness` or
any callable of the candidate. Training is just another fitness strategy: TrainThenFitness trains
the candidate's model, then asks another fitness (typically AccuracyFitness on held-out data).

    >>> from tinyevo.evolution import CandidateModel
    >>> acc = AccuracyFitness([(np.ones((1, 3), np.float32), np.array([2]))])
    >>> fitness_of(acc, CandidateModel(lambda x: np.array([[3.0, 2.0, 1.0]])))
    0.0

A new fitness is a subclass with ``__call__(self, candidate, generation=None)`` (and, where its
data changes with the generation, ``start_generation(self, generation)``); accessors with
defaults let it work on any candidate type:

    >>> class ExampleFitness(AbstractFitness):
    ...     def __call__(self, c, generation=None):
    ...         return getattr(c, "a", 10) - getattr(c, "b", 5)

Metrics accumulate on the device and are read back once per evaluation (no per-batch sync).
A model is measured through the model contract: ``model(x)`` is its inference output (any
callable of the input will do), ``model.forward(x, train=True)`` its output and backprop.
"""

from __future__ import annotations

import logging
import math
import numbers
import time
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from tinyevo import backend as B
from tinyevo.evolution.candidate import graph, itermap, lossfun, nparams, opt, prior_fitness
from tinyevo.evolution.iterators import (
    RepeatPartitionIterator,
    StatefulGenerationIter,
    itergeneration,
)
from tinyevo.evolution.timing import count, phase
from tinyevo.losses import mse

__all__ = [
    "fitness_of", "AbstractFitness", "AccuracyFitness", "LossFitness", "TrainThenFitness",
    "TrainAccuracyFitness", "TimeFitness", "SizeFitness", "MapFitness", "AggFitness",
    "EwmaFitness", "GpuFitness", "cosine_schedule", "start_generation",
]
__all__ += ["LogFitness"]

log = logging.getLogger("tinyevo.evolution")

# Training whose mean loss exceeds this many times |first batch's loss| + 1 has diverged.
LOSS_BLOWUP = 1e3


def fitness_of(f: Any, candidate: Any, generation: int | None = None) -> Any:
    """The fitness of ``candidate`` by ``f``; ``generation`` is passed on to fitness objects
    (TrainThenFitness uses it to pick the generation's data), plain callables get the candidate.

        >>> fitness_of(lambda c: 1.0, None)
        1.0
    """
    if isinstance(f, AbstractFitness):
        return f(candidate, generation)
    if callable(f):
        return f(candidate)
    raise TypeError(f"fitness: expected an AbstractFitness or a callable of the candidate, got "
                    f"{type(f).__name__}")


def start_generation(f: Any, generation: int) -> None:
    """Move the generation-aware data of ``f`` to ``generation`` (see
    :meth:`AbstractFitness.start_generation`); a plain callable has none.

        >>> start_generation(lambda c: 1.0, 2)
    """
    if isinstance(f, AbstractFitness):
        f.start_generation(generation)


class DeadlineExceeded(Exception):
    """Raised by a fitness whose ``deadline`` (a ``time.time()`` value) passed while it trained
    or measured: the caller ends the round (``fit`` drops the generation it cut). Unlike other
    errors, the guard of :class:`TrainThenFitness` lets it through."""


def check_deadline(deadline: float | None, what: str) -> None:
    """Raise :class:`DeadlineExceeded` when ``deadline`` (``time.time()`` based) has passed."""
    if deadline is not None and time.time() > deadline:
        raise DeadlineExceeded(f"the run's deadline passed while {what}")


class AbstractFitness:
    """Base class: subclasses implement ``__call__(self, candidate, generation=None)``."""

    def __call__(self, candidate: Any, generation: int | None = None) -> Any:
        raise NotImplementedError(f"{type(self).__name__} must implement "
                                  "__call__(self, candidate, generation=None)")

    def start_generation(self, generation: int) -> None:
        """The hook for per-generation data: move it to ``generation`` before any candidate.

        A fitness whose data depends on the generation (a StatefulGenerationIter, or a fitness
        that holds one) implements it; the default has no such data. Evaluators that evaluate on
        copies of the fitness (worker processes) call it on every copy, once per generation and
        under the same seed, so that every copy hands out the same partition."""


def _model(c: Any, who: str) -> Any:
    model = graph(c)
    if model is None:
        raise TypeError(f"{who}: candidate {c!r} has no model; wrap models in CandidateModel "
                        "or implement graph(self, default=None)")
    return model


class AccuracyFitness(AbstractFitness):
    """Fraction of correct predictions on ``dataset`` (an iterable of ``(x, y)`` batches, ``y``
    integer labels (N,) or one-hot/scores (N, K); the prediction is the argmax of the output).

        >>> AccuracyFitness(valid)  # doctest: +SKIP
    """

    def __init__(self, dataset: Iterable) -> None:
        self.dataset = dataset

    def __call__(self, candidate: Any, generation: int | None = None) -> float:
        model = _model(candidate, "AccuracyFitness")
        correct, total = 0, 0
        for x, y in itergeneration(self.dataset, generation):
            correct = correct + _ncorrect(model(x), y)
            total += int(y.shape[0]) if hasattr(y, "shape") else len(y)
        if total == 0:
            raise ValueError("AccuracyFitness: the dataset yielded no samples")
        return float(correct) / total

    def start_generation(self, generation: int) -> None:
        itergeneration(self.dataset, generation)

    def __repr__(self) -> str:
        return f"AccuracyFitness({self.dataset!r})"


class LossFitness(AbstractFitness):
    """Regression fitness: ``1 / (1 + mean loss)`` on ``dataset``, in (0, 1], higher is better.

    The mapping keeps the fitness positive, as SusSelection needs; wrap with MapFitness for
    another one. ``lossfun(pred, target) -> (loss, grad)`` defaults to mean squared error; the
    mean is weighted by batch size.

        >>> LossFitness(valid)  # doctest: +SKIP
    """

    def __init__(self, dataset: Iterable, lossfun: Callable = mse) -> None:
        self.dataset, self.lossfun = dataset, lossfun

    def __call__(self, candidate: Any, generation: int | None = None) -> float:
        model = _model(candidate, "LossFitness")
        total_loss, total = 0.0, 0
        for x, y in itergeneration(self.dataset, generation):
            loss, _ = self.lossfun(model(x), y)
            n = int(x.shape[0])
            total_loss = total_loss + loss * n
            total += n
        if total == 0:
            raise ValueError("LossFitness: the dataset yielded no samples")
        mean = float(total_loss) / total
        return 1.0 / (1.0 + mean) if math.isfinite(mean) and mean >= 0 else 0.0

    def start_generation(self, generation: int) -> None:
        itergeneration(self.dataset, generation)

    def __repr__(self) -> str:
        return f"LossFitness({self.dataset!r}, {getattr(self.lossfun, '__name__', '?')})"


class TrainThenFitness(AbstractFitness):
    """Train the candidate's model on ``dataiter``, then measure it with ``fitstrat``.

    ``lr_schedule(step, nsteps)``, where given, scales the optimiser's learning rate at each
    step of a pass whose length is known (e.g. :func:`cosine_schedule`); the rate is restored
    after the pass. The loss is ``lossfun(c, defaultloss)``, the optimiser the candidate's own
    or a fresh copy of ``defaultopt``. Its state (moments, step counts) is wiped after training
    (``opt.reset()``, the seed's way) unless ``keep_optimizer_state`` is set: then a candidate's
    own optimiser carries on where it stopped in its next evaluation, and its children inherit
    the state of every parameter they inherit unchanged (:meth:`Optimizer.inherit`).
    The guard: training that diverges, raises, or runs past ``time_limit`` seconds stops, the
    candidate gets ``invalidfitness`` and the reason is logged (logger "tinyevo.evolution"); the
    run goes on. Diverged means a NaN/Inf loss, a mean loss over the pass more than
    ``LOSS_BLOWUP`` times ``|first batch's loss| + 1`` (a huge learning rate drives the weights,
    and the loss with them, far from anything training meant, yet often stays finite), or a
    NaN/Inf parameter after the last step (which no loss has seen). ``deadline`` (a
    ``time.time()`` value, or None) is the run's: training that reaches it stops and raises
    :class:`DeadlineExceeded` (checked after every batch), which the guard lets through.

    ``dataiter`` is an iterable of ``(x, y)`` batches, or generation aware (a
    StatefulGenerationIter; a RepeatPartitionIterator is wrapped in one), so that each generation
    trains on its own partition and all candidates of a generation on the same one. A candidate
    that carries an iterator map (``itermap(c)``, e.g. a CandidateDataIterMap of a
    BatchSizeIteratorMap) trains on what the map makes of those batches.

        >>> from tinyevo.losses import logit_cross_entropy
        >>> from tinyevo.optimizers import Adam
        >>> valid = [(np.ones((2, 3), np.float32), np.array([0, 1]))]
        >>> f = TrainThenFitness(valid, logit_cross_entropy, Adam(), AccuracyFitness(valid))
    """

    def __init__(self, dataiter: Iterable, defaultloss: Callable, defaultopt: Any,
                 fitstrat: Any, invalidfitness: Any = 0.0, time_limit: float | None = None,
                 nan_check_every: int | None = None,
                 lr_schedule: Callable[[int, int], float] | None = None,
                 keep_optimizer_state: bool = False) -> None:
        if isinstance(dataiter, RepeatPartitionIterator):
            dataiter = StatefulGenerationIter(dataiter)
        if time_limit is not None and not time_limit > 0:
            raise ValueError(f"time_limit must be None or > 0 seconds, got {time_limit}")
        self.dataiter, self.defaultloss, self.defaultopt = dataiter, defaultloss, defaultopt
        self.fitstrat, self.invalidfitness, self.time_limit = fitstrat, invalidfitness, time_limit
        self.nan_check_every = nan_check_every
        if lr_schedule is not None and not callable(lr_schedule):
            raise ValueError(f"lr_schedule must be None or a callable (step, nsteps) -> factor, "
                             f"got {lr_schedule!r}")
        self.lr_schedule = lr_schedule
        self.keep_optimizer_state = bool(keep_optimizer_state)
        self.deadline: float | None = None

    def __call__(self, candidate: Any, generation: int | None = None) -> Any:
        try:
            model = _model(candidate, type(self).__name__)
            own = opt(candidate)
            optimizer = own if own is not None else self.defaultopt.copy()
            lossf = lossfun(candidate, self.defaultloss)
            trained = None
            try:
                # Overflow in a diverging candidate is the guard's business, not a warning's.
                with np.errstate(over="ignore", invalid="ignore", divide="ignore"), \
                        phase("train"):
                    trained = self._train(model, optimizer, lossf,
                                          self._data(candidate, generation))
            finally:
                if (own is None or not self.keep_optimizer_state or trained is None
                        or isinstance(trained, _Invalid)):
                    optimizer.reset()       # a failed pass's moments are not worth keeping
            if isinstance(trained, _Invalid):
                return self._invalid(candidate, trained.reason)
            with phase("validate"):
                return self._measure(candidate, generation, trained)
        except DeadlineExceeded:
            raise
        except Exception as e:  # noqa: BLE001 - the guard: one broken candidate must not end a run
            return self._invalid(candidate, f"{type(e).__name__}: {e}")

    def start_generation(self, generation: int) -> None:
        itergeneration(self.dataiter, generation)
        start_generation(self.fitstrat, generation)

    def _data(self, candidate: Any, generation: int | None) -> Iterable:
        """The batches ``candidate`` trains on in ``generation``: the generation's, through the
        candidate's own iterator map where it carries one (:func:`itermap`)."""
        data = itergeneration(self.dataiter, generation)
        mapping = itermap(candidate)
        return data if mapping is None else mapping(data)

    def _measure(self, candidate: Any, generation: int | None, trained: Any) -> Any:
        return fitness_of(self.fitstrat, candidate, generation)

    _count_hits = False  # TrainAccuracyFitness counts correct predictions while training

    def _train(self, model: Any, optimizer: Any, lossf: Callable, data: Iterable) -> Any:
        """One pass over ``data``; returns ``_Invalid(reason)`` or ``(correct, seen)`` counts
        (kept as device scalars until read once)."""
        schedule = self.lr_schedule
        if schedule is not None and hasattr(data, "__len__"):
            base_lr, nsteps = optimizer.learning_rate, len(data)
            try:
                return self._train_loop(model, optimizer, lossf, data,
                                        lambda i: base_lr * schedule(i, nsteps))
            finally:
                optimizer.learning_rate = base_lr
        return self._train_loop(model, optimizer, lossf, data, None)

    def _train_loop(self, model: Any, optimizer: Any, lossf: Callable, data: Iterable,
                    lr_at: Callable[[int], float] | None) -> Any:
        t0 = time.perf_counter()
        check_every = self.nan_check_every
        loss_sum = first = None
        nbatches, correct, seen = 0, 0, 0
        for x, y in data:
            if lr_at is not None:
                optimizer.learning_rate = lr_at(nbatches)
            out, backprop = model.forward(x, train=True)
            loss, dout = lossf(out, y)
            backprop(dout, need_dx=False)
            optimizer.update(model)
            count("train_samples", len(y))
            if self._count_hits:
                correct = correct + _ncorrect(out, y)
                seen += int(y.shape[0])
            if loss_sum is None:
                loss_sum = first = loss
            else:
                loss_sum = loss_sum + loss
            nbatches += 1
            if check_every is None:  # checking is free on the host; on a GPU it is a sync
                check_every = 1 if B.get_array_module(loss) is np else 32
            if nbatches % check_every == 0:
                diverged = _divergence(loss_sum, first, nbatches)
                if diverged:
                    return _Invalid(diverged)
            check_deadline(self.deadline, f"a candidate trained (after {nbatches} batches)")
            if self.time_limit is not None and time.perf_counter() - t0 > self.time_limit:
                return _Invalid(f"training exceeded its time budget of {self.time_limit} s "
                                f"after {nbatches} batches")
        diverged = loss_sum is not None and _divergence(loss_sum, first, nbatches)
        if diverged:
            return _Invalid(diverged)
        if nbatches and not _finite_params(model):
            return _Invalid(f"a parameter is NaN/Inf after {nbatches} batches")
        return correct, seen

    def _invalid(self, candidate: Any, reason: str) -> Any:
        log.warning("candidate %r gets invalid fitness %r: %s", candidate, self.invalidfitness,
                    reason)
        return self.invalidfitness

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(dataiter={self.dataiter!r}, defaultopt="
                f"{self.defaultopt!r}, fitstrat={self.fitstrat!r})")


def cosine_schedule(step: int, nsteps: int) -> float:
    """Cosine decay from 1 to 0 over a pass: with a pass per generation, every generation is a
    warm restart (SGDR), and each candidate is measured at the end of a decay."""
    return 0.5 * (1.0 + math.cos(math.pi * step / max(1, nsteps)))


class TrainAccuracyFitness(TrainThenFitness):
    """Train, and take the accuracy on the training batches seen during training as the fitness
    (no separate validation pass: cheap, but it rewards fitting the training data).

        >>> TrainAccuracyFitness(train, logit_cross_entropy, Adam())  # doctest: +SKIP
    """

    def __init__(self, dataiter: Iterable, defaultloss: Callable, defaultopt: Any,
                 invalidfitness: Any = 0.0, time_limit: float | None = None,
                 keep_optimizer_state: bool = False) -> None:
        super().__init__(dataiter, defaultloss, defaultopt, None, invalidfitness, time_limit,
                         keep_optimizer_state=keep_optimizer_state)

    _count_hits = True

    def _measure(self, candidate, generation, trained):
        correct, total = trained
        if total == 0:
            raise ValueError("TrainAccuracyFitness: the data yielded no samples")
        return float(correct) / total


class TimeFitness(AbstractFitness):
    """``(seconds, value)``: the wall time to compute fitness ``f`` and its value.

        >>> seconds, value = fitness_of(TimeFitness(lambda c: 1), None)
    """

    def __init__(self, f: Any) -> None:
        self.f = f

    def __call__(self, candidate: Any, generation: int | None = None) -> tuple[float, Any]:
        t0 = time.perf_counter()
        value = fitness_of(self.f, candidate, generation)
        return time.perf_counter() - t0, value

    def start_generation(self, generation: int) -> None:
        start_generation(self.f, generation)

    def __repr__(self) -> str:
        return f"TimeFitness({self.f!r})"


class SizeFitness(AbstractFitness):
    """The number of parameters of the candidate's model (0 for a parameterless function).
    Usually mapped so that smaller is fitter: ``MapFitness(lambda n: min(1, 1 / n), ...)``."""

    def __call__(self, candidate: Any, generation: int | None = None) -> int:
        return nparams(_model(candidate, "SizeFitness"))

    def __repr__(self) -> str:
        return "SizeFitness()"


class MapFitness(AbstractFitness):
    """MapFitness(fun, f): ``fun`` of the fitness by ``f``.

        >>> small = MapFitness(lambda n: min(1, 1 / max(n, 1)), SizeFitness())
    """

    def __init__(self, fun: Callable[[Any], Any], f: Any) -> None:
        self.fun, self.f = fun, f

    def __call__(self, candidate: Any, generation: int | None = None) -> Any:
        return self.fun(fitness_of(self.f, candidate, generation))

    def start_generation(self, generation: int) -> None:
        start_generation(self.f, generation)

    def __repr__(self) -> str:
        return f"MapFitness({getattr(self.fun, '__name__', self.fun)!r}, {self.f!r})"


class AggFitness(AbstractFitness):
    """AggFitness(op, *fs): the fitnesses by ``fs`` reduced with the binary ``op``.

        >>> import operator; combined = AggFitness(operator.add, SizeFitness(), SizeFitness())
    """

    def __init__(self, op: Callable[[Any, Any], Any], *fs: Any) -> None:
        if not fs:
            raise ValueError("AggFitness needs at least one fitness to aggregate")
        self.op, self.fs = op, fs

    def __call__(self, candidate: Any, generation: int | None = None) -> Any:
        values = [fitness_of(f, candidate, generation) for f in self.fs]
        result = values[0]
        for v in values[1:]:
            result = self.op(result, v)
        return result

    def start_generation(self, generation: int) -> None:
        for f in self.fs:
            start_generation(f, generation)

    def __repr__(self) -> str:
        return f"AggFitness({getattr(self.op, '__name__', self.op)!r}, {len(self.fs)} fitnesses)"


class EwmaFitness(AbstractFitness):
    """EwmaFitness(base, alpha=0.5): the fitness by ``base`` blended with the candidate's prior
    fitness (its parent's for a child, its own last one for an elite), the seed's
    ``(1 - alpha) * current + alpha * prior``, so that one lucky or unlucky validation pass
    counts for less in selection.

    ``current`` alone where there is no prior (a fresh candidate), where either is not a finite
    number (tuples pass through), and where either is the base's ``invalidfitness`` (where it has
    one): an invalid candidate stays invalid, and a failed evaluation is no measurement to
    blend with.

        >>> child = new_candidate(FittedCandidate(CandidateModel(None), 0.8), lambda v: v)
        >>> fitness_of(EwmaFitness(lambda c: 0.6), child)  # the parent's 0.8 and the child's 0.6
        0.7
    """

    def __init__(self, base: Any, alpha: float = 0.5) -> None:
        if not (isinstance(alpha, numbers.Real) and not isinstance(alpha, bool)
                and 0 <= alpha < 1):
            raise ValueError(f"EwmaFitness: alpha must be a number in [0, 1) (the weight of the "
                             f"prior fitness; 0 turns blending off), got {alpha!r}")
        self.base, self.alpha = base, float(alpha)

    @property
    def invalidfitness(self) -> Any:
        """The base's invalid fitness (AttributeError where it has none), for evaluators."""
        return self.base.invalidfitness

    def __call__(self, candidate: Any, generation: int | None = None) -> Any:
        current = fitness_of(self.base, candidate, generation)
        prior = prior_fitness(candidate)
        if not (_blendable(current) and _blendable(prior)):
            return current
        invalid = getattr(self.base, "invalidfitness", None)
        if invalid is not None and (current == invalid or prior == invalid):
            return current
        return (1 - self.alpha) * current + self.alpha * prior

    def start_generation(self, generation: int) -> None:
        start_generation(self.base, generation)

    def __repr__(self) -> str:
        return f"EwmaFitness({self.base!r}, alpha={self.alpha})"


class LogFitness(AbstractFitness):
    """LogFitness(f, msgfun=None, level=logging.INFO, logger=None): the fitness by ``f``,
    logged for each candidate with its number in the generation (the seed's LogFitness).

    The message is ``msgfun(i, candidate, value)`` (default: the candidate's number, vertices,
    parameters and fitness), logged at ``level`` to ``logger`` (default "tinyevo.evolution").
    The count restarts when the generation changes; a copy of the fitness in a worker process
    counts the candidates that worker evaluates.

        >>> f = LogFitness(SizeFitness())     # logs "candidate   1: 3 vertices, ..."
    """

    def __init__(self, f: Any, msgfun: Callable[[int, Any, Any], str] | None = None,
                 level: int = logging.INFO, logger: logging.Logger | None = None) -> None:
        self.f, self.msgfun, self.level = f, msgfun or fitness_message, level
        self.logger = logger or log
        self._generation: Any = None
        self._count = 0

    @property
    def invalidfitness(self) -> Any:
        """The wrapped fitness's invalid fitness (AttributeError where it has none)."""
        return self.f.invalidfitness

    def __call__(self, candidate: Any, generation: int | None = None) -> Any:
        value = fitness_of(self.f, candidate, generation)
        if generation != self._generation:
            self._generation, self._count = generation, 0
        self._count += 1
        self.logger.log(self.level, "%s", self.msgfun(self._count, candidate, value))
        return value

    def start_generation(self, generation: int) -> None:
        start_generation(self.f, generation)

    def __repr__(self) -> str:
        return f"LogFitness({self.f!r})"


def fitness_message(i: int, candidate: Any, value: Any) -> str:
    """LogFitness's default message: ``i``, the model's vertices and parameters, ``value``.

        >>> fitness_message(2, None, 0.5)
        'candidate   2: 0 vertices, 0 parameters, fitness 0.5'
    """
    model = graph(candidate)
    nv = len(getattr(model, "vertices", ()))
    return f"candidate {i:3d}: {nv} vertices, {_count(nparams(model))} parameters, fitness {value}"


def _count(n: int) -> str:
    """``n`` shortened: 12.35k, 1.20M, 3.00G (the seed prints parameter counts so)."""
    for scale, unit in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if n >= scale:
            return f"{n / scale:.2f}{unit}"
    return str(n)


class GpuFitness(AbstractFitness):
    """Compute ``f`` with the candidate's model on the current backend's device.

    The model's layer arrays are moved there (``layer.to()``) and, when they were on the host,
    moved back after, to free device memory between candidates. Data in ``f`` must be on the
    device too (wrap iterators in GpuIterator). With the NumPy backend this is a pass-through.
    Moving replaces the arrays, so optimiser state kept by ``TrainThenFitness`` inside it is not
    used again (the optimiser starts fresh each evaluation).

        >>> GpuFitness(AccuracyFitness(GpuIterator(valid)))  # doctest: +SKIP
    """

    def __init__(self, f: Any, move_back: bool = True) -> None:
        self.f, self.move_back = f, move_back

    def __call__(self, candidate: Any, generation: int | None = None) -> Any:
        if B.name() == "numpy":
            return fitness_of(self.f, candidate, generation)
        layers = list(_layers(graph(candidate)))
        on_host = [not _on_device(layer) for layer in layers]
        for layer in layers:
            layer.to()
        try:
            return fitness_of(self.f, candidate, generation)
        finally:
            if self.move_back:
                for layer, host in zip(layers, on_host):
                    if host:
                        _to_host(layer)

    def start_generation(self, generation: int) -> None:
        start_generation(self.f, generation)

    def __repr__(self) -> str:
        return f"GpuFitness({self.f!r})"


# --------------------------------------------------------------------- helpers
class _Invalid:
    def __init__(self, reason: str) -> None:
        self.reason = reason


def _ncorrect(out: Any, y: Any) -> Any:
    """Number of correct predictions as a 0-d device array (no host sync)."""
    xp = B.get_array_module(out)
    out = xp.asarray(out)
    labels = xp.asarray(y)
    if out.ndim == 1:  # a single sample without batch axis
        out = out[None, :]
    pred = out.argmax(axis=1)
    if labels.ndim == 2:
        labels = labels.argmax(axis=1)
    return (pred == labels.reshape(pred.shape)).sum()


def _divergence(loss_sum: Any, first: Any, nbatches: int) -> str | None:
    """Why training whose losses sum to ``loss_sum`` over ``nbatches`` batches, the first
    ``first``, diverged; None where it did not. Reads one scalar from the device.

    The mean loss is measured against the first batch's, ``|first| + 1`` so that a loss that
    starts near 0 may still rise by a normal amount: training at a sane learning rate keeps
    the mean within a few times its start, a blown-up model is off by orders of magnitude."""
    # One ratio carries both signs of trouble: NaN/Inf in any loss make it NaN/Inf.
    ratio = float(loss_sum / nbatches / (abs(first) + 1.0))
    if not math.isfinite(ratio):
        return f"loss is NaN/Inf after {nbatches} batches"
    if ratio > LOSS_BLOWUP:
        return (f"loss exploded: mean {float(loss_sum) / nbatches:.3g} over {nbatches} batches "
                f"against {float(first):.3g} at the first, more than {LOSS_BLOWUP:g} x "
                "(|first| + 1); lower the learning rate")
    return None


def _finite_params(model: Any) -> bool:
    """Whether every parameter of ``model`` is finite: one pass, one read from the device."""
    ok = True
    for layer in _layers(model):
        for p in layer.params.values():
            ok = ok & B.get_array_module(p).isfinite(p).all()
    return bool(ok)


def _blendable(x: Any) -> bool:
    """A finite real number (not a bool, a tuple or None)."""
    return isinstance(x, numbers.Real) and not isinstance(x, bool) and math.isfinite(x)


def _layers(model: Any) -> Iterable:
    from tinyevo.layers.base import Layer

    if isinstance(model, Layer):
        return [model]
    fn = getattr(model, "layers", None)
    return fn() if callable(fn) else []


def _on_device(layer: Any) -> bool:
    return any(B.is_gpu(a) for a in layer.arrays().values())


def _to_host(layer: Any) -> None:
    for d in (layer.params, layer.state, layer._grads):
        for k, a in d.items():
            d[k] = B.to_numpy(a)
    if layer.neuron_value is not None:
        layer.neuron_value = B.to_numpy(layer.neuron_value)
    layer._after_resize()
