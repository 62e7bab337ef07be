"""How ``fit`` scores a candidate and trains the winner: train on the generation's batches,
then validate (:class:`ClassifierFitness`, :class:`RegressorFitness`); at the end, a copy of
the best model trained alone with its learning rate annealed (:func:`train_final`), kept where
it does not validate clearly worse (:func:`accept_final`).

    >>> scorer = ClassifierFitness(GenerationBatches(x, y, config), (xv, yv))  # doctest: +SKIP
    >>> scorer(candidate, 1)                                                    # doctest: +SKIP
    0.9731
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from tinyevo import backend as B
from tinyevo.app.config import TIEBREAKS
from tinyevo.app.data import GenerationBatches
from tinyevo.app.tasks import R2_FLOOR, ScaledMSE, r2_standard_error
from tinyevo.evolution.candidate import FittedCandidate, nparams
from tinyevo.evolution.fitness import (
    AbstractFitness,
    TrainThenFitness,
    check_deadline,
    cosine_schedule,
)
from tinyevo.evolution.halloffame import snapshot
from tinyevo.losses import logit_cross_entropy
from tinyevo.metrics import r2_from_sums
from tinyevo.optimizers import Adam

__all__ = ["ValidationFitness", "ClassifierFitness", "RegressorFitness", "train_final",
           "accept_final"]

log = logging.getLogger("tinyevo")


class ValidationFitness(AbstractFitness):
    """Train a candidate on the generation's batches with ``loss``, then score it on the
    validation set (``_score``, the task's). ``keep_optimizer_state``: see
    :class:`~tinyevo.evolution.TrainThenFitness`. ``keep_metrics``: each validation also leaves
    ``candidate.metrics`` (what objectives read). Invalid candidates get ``invalidfitness``."""

    invalidfitness: float = 0.0

    def __init__(self, train: GenerationBatches, valid: tuple[np.ndarray, np.ndarray],
                 loss: Callable, batch_size: int = 256, time_limit: float | None = None,
                 lr_schedule: Callable | None = None, keep_optimizer_state: bool = False,
                 keep_metrics: bool = False) -> None:
        xv, yv = valid
        self.valid = [(xv[i:i + batch_size], yv[i:i + batch_size])
                      for i in range(0, len(yv), batch_size)]
        self.nvalid = len(yv)
        self._device: tuple | None = None
        self.loss, self.keep_metrics = loss, keep_metrics
        self.train = TrainThenFitness(train, loss, Adam(), self._score,
                                      invalidfitness=self.invalidfitness, time_limit=time_limit,
                                      lr_schedule=lr_schedule,
                                      keep_optimizer_state=keep_optimizer_state)

    def _score(self, candidate: Any) -> float:
        raise NotImplementedError

    def _valid_batches(self) -> list[tuple[Any, Any]]:
        """The validation batches on the current backend: moved to a GPU once."""
        if B.name() == "numpy":
            return self.valid
        if self._device is None or self._device[0] != B.name():
            self._device = (B.name(), [(B.to_device(x), B.to_device(y)) for x, y in self.valid])
        return self._device[1]

    @property
    def deadline(self) -> float | None:
        """The run's deadline (``time.time()``): training or validation that reaches it raises
        :class:`~tinyevo.evolution.fitness.DeadlineExceeded`."""
        return self.train.deadline

    @deadline.setter
    def deadline(self, value: float | None) -> None:
        self.train.deadline = value

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_device": None}    # workers move the data themselves

    def __call__(self, candidate: Any, generation: int | None = None) -> float:
        t0 = time.perf_counter()
        value = self.train(candidate, generation)
        value = self.invalidfitness if value is None else float(value)
        candidate.eval_time = time.perf_counter() - t0      # for ScatterPop; travels back
        return value


class ClassifierFitness(ValidationFitness):
    """Cross entropy training, then the seed's ``accuracy + min(1e-3, 1 / nparams)``
    (``tiebreak="size"``, default), or ``accuracy + 1e-3 / (1 + cross entropy)``
    (``tiebreak="loss"``: among equally accurate models, the one that is right with more
    confidence). Accuracy always comes first: the extra term is below one validation sample's
    worth. Invalid: 0.0. Metrics: accuracy and loss."""

    def __init__(self, train: GenerationBatches, valid: tuple[np.ndarray, np.ndarray],
                 batch_size: int = 256, time_limit: float | None = None,
                 tiebreak: str = "size", lr_schedule: Callable | None = None,
                 keep_optimizer_state: bool = False, keep_metrics: bool = False) -> None:
        if tiebreak not in TIEBREAKS:
            raise ValueError(f"tiebreak must be one of {TIEBREAKS}, got {tiebreak!r}")
        self.tiebreak = tiebreak
        super().__init__(train, valid, logit_cross_entropy, batch_size, time_limit,
                         lr_schedule, keep_optimizer_state, keep_metrics)

    def _score(self, candidate: Any) -> float:
        model = candidate.graph()
        correct, loss, total = 0, 0.0, 0
        for x, y in self._valid_batches():
            check_deadline(self.deadline, "a candidate was validated")
            out = model(x)
            correct = correct + (out.argmax(axis=1) == y).sum()
            loss = loss + logit_cross_entropy(out, y)[0] * len(y)
            total += len(y)
        accuracy, loss = float(correct) / total, float(loss) / total
        if self.keep_metrics:       # for the objectives (tinyevo.app.pareto)
            candidate.metrics = {"accuracy": accuracy, "loss": loss}
        if not math.isfinite(loss):
            return 0.0
        if self.tiebreak == "size":
            return accuracy + min(1e-3, 1.0 / max(1, nparams(model)))
        return accuracy + 1e-3 / (1.0 + loss)


class RegressorFitness(ValidationFitness):
    """MSE training on standardised targets (:class:`~tinyevo.app.tasks.ScaledMSE`, each
    output divided by ``scale``, its training standard deviation), then the validation R²
    (averaged over outputs) floored at :data:`~tinyevo.app.tasks.R2_FLOOR`, which invalid and
    diverged candidates get. Metrics: r2 and loss (the scaled MSE)."""

    invalidfitness = R2_FLOOR

    def __init__(self, train: GenerationBatches, valid: tuple[np.ndarray, np.ndarray],
                 scale: Any, batch_size: int = 256, time_limit: float | None = None,
                 lr_schedule: Callable | None = None, keep_optimizer_state: bool = False,
                 keep_metrics: bool = False) -> None:
        yv = np.asarray(valid[1], dtype=np.float64)
        self.sst = ((yv - yv.mean(axis=0)) ** 2).sum(axis=0)
        super().__init__(train, valid, ScaledMSE(scale), batch_size, time_limit, lr_schedule,
                         keep_optimizer_state, keep_metrics)

    def _score(self, candidate: Any) -> float:
        model = candidate.graph()
        sse, loss = 0.0, 0.0
        for x, y in self._valid_batches():
            check_deadline(self.deadline, "a candidate was validated")
            out = model(x)
            diff = out - y
            sse = sse + (diff * diff).sum(axis=0)
            loss = loss + self.loss(out, y)[0] * len(y)
        sse, loss = B.to_numpy(sse).astype(np.float64), float(loss) / self.nvalid
        r2 = r2_from_sums(sse, self.sst)
        if self.keep_metrics:
            candidate.metrics = {"r2": r2, "loss": loss}
        if not (math.isfinite(loss) and math.isfinite(r2)):
            return R2_FLOOR
        return max(R2_FLOOR, r2)


def train_final(best: Any, scorer: ValidationFitness, generation: int, seconds: float,
                progress: Callable[[dict], None] | None = None) -> FittedCandidate | None:
    """A copy of ``best`` trained for about ``seconds`` (validation included) on the stream's
    batches after those of ``generation``, in this process with its threads, the learning
    rate annealed from the model's own to 0 over the time (cosine); then scored by
    ``scorer``. None where there is no time for it, or training diverged."""
    candidate = snapshot(best)
    if candidate.opt() is None or seconds <= 0:
        return None
    # The library generator (dropout masks) is left as the search left it, so that a run
    # resumed after this goes on as the checkpoint says.
    saved = B.rng().bit_generator.state
    try:
        return _train_final(candidate, best, scorer, generation, seconds, progress)
    finally:
        B.rng().bit_generator.state = saved


def accept_final(final: Any, best: Any, nvalid: int, task: str = "classification") -> bool:
    """Whether the final training's model replaces the best-ever one as the run's result: unless
    it validates lower by more than two standard errors of the validation accuracy (of the
    validation R², for regression) on ``nvalid`` samples.

    The best-ever fitness is the maximum over every candidate evaluated, so it is biased
    upwards (the winner's curse); the trained copy's is a fresh measurement. On 1,000
    samples at 99 % the standard error is 0.3 %, more than the final training's gain, so a
    plain comparison would keep the less trained model about half the time."""
    if task == "regression":
        error = r2_standard_error(float(best.fitness), nvalid)
    else:
        p = min(1.0, max(0.0, float(best.fitness)))
        error = math.sqrt(p * (1 - p) / nvalid)
    return float(final.fitness) >= float(best.fitness) - 2.0 * error


def _train_final(candidate: Any, best: Any, scorer: ValidationFitness, generation: int,
                 seconds: float, progress: Callable[[dict], None] | None) -> Any:
    model, optimizer = candidate.graph(), candidate.opt()
    t0 = time.monotonic()
    scorer._score(candidate)                  # the time of one validation pass, kept back
    train_seconds = seconds - 1.5 * (time.monotonic() - t0) - 0.02 * seconds
    if train_seconds <= 0:
        return None
    stream = scorer.train.dataiter
    peak, start = optimizer.learning_rate, time.monotonic()
    steps = [0]

    def batches():
        # Batches twice the search's: one model in all threads uses them better.
        xp, first = B.current(), stream.span(generation + 1)[0]
        while time.monotonic() - start < train_seconds:
            pairs = iter(stream.batches(first, 64))
            for (x1, y1), (x2, y2) in zip(pairs, pairs):
                if time.monotonic() - start >= train_seconds:
                    return
                steps[0] += 1
                if progress is not None and steps[0] % 100 == 0:
                    progress({"event": "final", "steps": steps[0],
                              "seconds": time.monotonic() - start, "of": train_seconds})
                yield xp.concatenate([x1, x2]), xp.concatenate([y1, y2])
            first += 64

    diverged = False
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        for x, y in batches():
            optimizer.learning_rate = peak * cosine_schedule(
                min(time.monotonic() - start, train_seconds), train_seconds)
            out, backprop = model.forward(x, train=True)
            loss, dout = scorer.loss(out, y)
            backprop(dout, need_dx=False)
            optimizer.update(model)
            if steps[0] % 50 == 0 and not math.isfinite(float(loss)):
                diverged = True
                break
    optimizer.learning_rate = peak
    if diverged:
        log.warning("final training of the best model diverged; it is not kept")
        return None
    value = scorer._score(candidate)
    log.info("final training: %d steps in %.0f s, validation fitness %.4f (was %.4f)",
             steps[0], time.monotonic() - start, value, best.fitness)
    if progress is not None:
        progress({"event": "final", "steps": steps[0], "seconds": time.monotonic() - start,
                  "of": train_seconds, "fitness": value, "before": best.fitness})
    return FittedCandidate(candidate, value, generation)


