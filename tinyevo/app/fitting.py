"""``tinyevo.fit``: evolve a classifier end to end, with checkpoints to resume.

    >>> import tinyevo as te
    >>> (x, y), (x_test, y_test) = te.load_dataset("digits")
    >>> population = te.fit(x, y, generations=3, population_size=4, seed=0)  # doctest: +SKIP
    >>> population.best().evaluate(x_test, y_test)                             # doctest: +SKIP

The loop is DEAP's ``eaSimple``: set up, then for each generation evaluate the population,
update the hall of fame, call the callbacks, checkpoint, test whether to stop, and make the
next generation with the strategy. Each generation every candidate trains on the same batches
(drawn from the run seed and the generation number alone, so any process computes them
alike, :mod:`tinyevo.app.data`) and is scored on the validation set. The settings are one
:class:`~tinyevo.app.config.FitConfig`; with ``mdir`` the evaluated population is checkpointed
after every generation, and calling ``fit`` again on the same ``mdir`` continues from the last
complete generation (:mod:`tinyevo.app.resume`) and reaches the same result as a run that was
never interrupted.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import math
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from tinyevo import backend as B
from tinyevo.app import defaults, pareto, resume
from tinyevo.app._workers import one_blas_thread
from tinyevo.app.callbacks import callback_list, run_callback
from tinyevo.app.checkpoint import save_checkpoint
from tinyevo.app.config import (
    TIEBREAKS,
    FitConfig,
    check_combination,
    configure,
    data_defaults,
    integer,
    plain_defaults,
    real,
)
from tinyevo.app.data import (
    KIND_OF_RANK,
    GenerationBatches,
    as_arrays,
    classes,
    split_validation,
    validation_arrays,
)
from tinyevo.app.executors import SeededEvaluator, make_evaluator
from tinyevo.app.runlock import run_lock
from tinyevo.evolution.candidate import CandidateOptModel, FittedCandidate, nparams
from tinyevo.evolution.fitness import (
    AbstractFitness,
    DeadlineExceeded,
    EwmaFitness,
    TrainThenFitness,
    check_deadline,
    cosine_schedule,
)
from tinyevo.evolution.halloffame import HallOfFame, snapshot
from tinyevo.evolution.pareto import ParetoFront
from tinyevo.evolution.population import Population
from tinyevo.graph import CompGraph, input_vertex
from tinyevo.losses import logit_cross_entropy
from tinyevo.optimizers import Adam

__all__ = ["fit", "ClassifierFitness", "initial_population", "train_final", "accept_final"]

log = logging.getLogger("tinyevo")

MAX_FITNESS = 1.001     # what ClassifierFitness can give: accuracy 1 plus the tie-break
CANDIDATE_KILL_GRACE = 5.0  # seconds past 2x candidate_time_limit before a worker is killed


def fit(x: Any, y: Any = None, *, generations: int | None = None,
        time_limit: float | None = None, target_fitness: float | None = None,
        valid: tuple | None = None, mdir: str | Path | None = None,
        callbacks: Sequence[Callable] | Callable = (),
        progress: Callable[[dict], None] | None = None, executor: Any = None,
        search_space: Any = None, mutation: Any = None, crossover: Any = None,
        strategy: Any = None, hall_of_fame: int = 5, config: FitConfig | None = None,
        **settings: Any) -> Population:
    """Evolve a classifier for ``x`` (N, C, H, W), (N, C, L) or (N, F) with integer labels ``y``.

    ``x`` may also be an ``(x, y)`` tuple or an iterable of ``(x, y)`` batches (gathered into
    arrays); labels may be one-hot. Without ``valid`` (an ``(x, y)`` pair or batches), a
    stratified share of the data is held out for validation.

    The run's settings are the fields of :class:`~tinyevo.app.config.FitConfig`
    (``population_size``, ``batch_size``, ``seed``, ``lr_schedule`` ...: docs/fit.md lists
    them): pass them as keywords, as ``config=FitConfig(...)``, or both (a keyword replaces the
    config's field). A setting left None is chosen for the data on a new run (on *large data*,
    where a generation trains on less than one pass, a population of 8, a cost ceiling and a
    final training) and is the checkpoint's on a resumed one. A setting that the call would
    ignore is an error, before any work: ``mutation``/``crossover``/``elites`` with
    ``strategy``, ``widths`` with dense data or a ``search_space``, ``augment`` on data that
    are not images, ``valid_fraction``/``valid_max`` with ``valid``.

    Stops after ``generations`` generations, when the best fitness reaches ``target_fitness``,
    or at ``time_limit`` seconds (at least one must be given; all count over resumes). The
    time limit holds: a generation expected to end past it is not started, and one still
    training when it comes is cut and dropped (the run returns, and its checkpoint holds, the
    last complete generation, so resuming is exact). With ``final_training``, that share of
    the time limit (all the time left, where the search stopped for time) trains a copy of the
    best model ever evaluated, alone, its learning rate annealed to 0; validated again, it is
    ``population.final`` unless it validates lower than before by more than two standard
    errors (:func:`accept_final`).

    Returns the last evaluated population, best first: ``population.best()`` is the best of
    the last generation; ``population.hall_of_fame`` holds snapshots of the ``hall_of_fame``
    best candidates *ever evaluated* (``.best()``: the best-ever model, as it was when it
    earned its fitness); ``population.final`` is the final training's model or None. With
    ``objectives``, ``population.pareto_front`` holds every non-dominated candidate (else None).
    ``.predict(x)``, ``.evaluate(x, y)`` and ``.graph()`` work on each.

    ``mdir``: checkpoint every generation there and resume from it (one ``fit`` at a time
    owns it). ``callbacks``: called with the evaluated population after every generation,
    before its checkpoint (PlotFitness, ScatterPop, ... of ``tinyevo.app``). ``progress(event)``:
    a dict per finished candidate and generation, for displays. ``executor``: where candidates
    are evaluated: None (this process, one BLAS thread), a number of local worker processes, a
    Dask client or scheduler address, or any ``concurrent.futures.Executor`` (docs/parallel.md);
    results are the same on all. In worker processes, a candidate stuck inside a batch past
    twice its ``candidate_time_limit`` plus 5 s is terminated with its worker (an evaluator you
    pass keeps its own ``timeout``). ``search_space``, ``mutation``, ``crossover`` and
    ``strategy`` replace the defaults of :mod:`tinyevo.app.defaults` (``max_macs`` then bounds
    the initial models only).
    """
    stop = _stop_rule(generations, time_limit, target_fitness)
    config = configure(config, settings)
    hall_of_fame = integer("hall_of_fame", hall_of_fame, 1)
    callbacks = callback_list(callbacks)
    x, y = as_arrays(x, y, "training data")
    kind, nclasses = KIND_OF_RANK[x.ndim], classes(y)
    valid = None if valid is None else validation_arrays(valid, x, nclasses)
    check_combination(config, kind, valid=valid, search_space=search_space, mutation=mutation,
                      crossover=crossover, strategy=strategy)
    mdir = _run_directory(mdir)
    with run_lock(mdir) if mdir is not None else contextlib.nullcontext():
        resumed = resume.load(mdir)
        config = resume.fill(config, resumed, plain_defaults())
        if valid is None:
            (x, y), valid = split_validation(x, y, config.valid_fraction, config.seed,
                                             config.valid_max)
        config = resume.fill(config, resumed, data_defaults(config, len(y), x.shape[1:]))
        if resumed is not None:
            resume.check(resumed, config, kind, x.shape[1:], nclasses, mdir)
            log.info("resuming %s from generation %d", mdir, resumed.population.generation)
        scorer = ClassifierFitness(
            GenerationBatches(x, y, config), valid, batch_size=256,
            time_limit=config.candidate_time_limit, tiebreak=config.tiebreak,
            lr_schedule=cosine_schedule if config.lr_schedule == "cosine" else None,
            keep_optimizer_state=config.optimizer_state == "keep",
            keep_metrics=bool(config.objectives))
        batch_mutation, batch_crossover = defaults.batch_size_operators(
            config.batch_size if config.batch_size_search else None)
        strategy = strategy or defaults.default_strategy(
            config.population_size, mutation or defaults.default_mutation(
                kind, nclasses, max_macs=config.max_macs, sample_shape=x.shape[1:]),
            crossover or defaults.default_crossover(batch_crossover), config.elites,
            itermap_mutation=batch_mutation, pareto=bool(config.objectives))

        def draw() -> Population:
            space = search_space or defaults.default_search_space(kind, nclasses, config.widths,
                                                                  x.shape[1:])
            population = initial_population(space, x.shape[1], kind, config.population_size,
                                            max_macs=config.max_macs, spatial=x.shape[2:])
            if config.batch_size_search:      # each candidate with its own batch size
                population = defaults.with_batch_sizes(population, config.batch_size)
            return population

        search = _Search(config, stop, scorer, strategy, resumed, draw, executor,
                         facts=(kind, x.shape[1:], nclasses, len(y)), mdir=mdir,
                         callbacks=callbacks, progress=progress, hall_of_fame=hall_of_fame)
        try:
            while not search.done():
                fitted = search.evaluate(search.next_generation())
                if fitted is None:          # the time limit cut it short: dropped
                    break
                search.record(fitted)       # hall of fame, callbacks, checkpoint, progress
            search.final_training()
        except KeyboardInterrupt:
            if not search.interrupted():
                raise
        finally:
            search.close()
        return search.result()


class _Stop(NamedTuple):
    generations: int | None
    time_limit: float | None
    target_fitness: float | None


def _stop_rule(generations: Any, time_limit: Any, target_fitness: Any) -> _Stop:
    """When the run stops, checked: at least one of the three, each valid."""
    if generations is None and time_limit is None and target_fitness is None:
        raise ValueError("fit: give generations=, time_limit= or target_fitness= so the run "
                         "knows when to stop")
    return _Stop(
        integer("generations", generations, 1, optional=True, expected="None or an int >= 1"),
        real("time_limit", time_limit, 0.0, None, "None or a positive number of seconds (the "
             "command's --time-limit reads '5m'; fit takes 300)", optional=True, open_low=True),
        real("target_fitness", target_fitness, None, MAX_FITNESS, f"None or a fitness the run "
             f"can reach (at most {MAX_FITNESS}: accuracy plus the tie-break)", optional=True))


class _Search:
    """One run's loop state (``eaSimple``'s locals): the last evaluated generation, the hall of
    fame, the last checkpointed generation and the clock, with a method per step.

    On a new run it seeds the library generator and draws the initial population; on a resumed
    one it restores the random state and the last generation. ``facts`` are the data's kind,
    sample shape, number of classes and number of training samples."""

    def __init__(self, config: FitConfig, stop: _Stop, scorer: ClassifierFitness,
                 strategy: Callable, resumed: resume.Resumed | None,
                 draw: Callable[[], Population], executor: Any, *, facts: tuple,
                 mdir: Path | None, callbacks: list[Callable], progress: Callable | None,
                 hall_of_fame: int) -> None:
        self.config, self.stop, self.scorer, self.strategy = config, stop, scorer, strategy
        self.kind, self.sample_shape, self.nclasses, self.ntrain = facts
        self.mdir, self.callbacks, self.progress = mdir, callbacks, progress
        self.start = time.monotonic()
        self.hof = HallOfFame(hall_of_fame)
        self.front = ParetoFront() if config.objectives else None
        self.pending: Population | None = None       # the initial population, not yet evaluated
        if resumed is not None:
            resume.restore_random_state(resumed)
            self.elapsed0, self.last_seconds = resumed.elapsed, resumed.last_seconds
            self.fitted: Population | None = resumed.population
            self.hof.update(self.fitted.hall_of_fame)     # load_checkpoint always attaches one
            if self.front is not None:
                self.front.update(self.fitted.pareto_front or ())
        else:
            resume.start_random_state(config.seed)
            self.elapsed0 = self.last_seconds = 0.0
            self.fitted = None
            self.pending = draw()
        # The search's deadline (wall clock, so that worker processes can read it too): training
        # and validation that reach it stop, and the generation they were in is dropped. The
        # final training has the rest of the time limit.
        self.search_limit = (None if stop.time_limit is None
                             else stop.time_limit * (1.0 - config.final_training))
        if self.search_limit is not None:
            scorer.deadline = time.time() + max(0.0, self.search_limit - self.elapsed0)
        # the last checkpoint: what an interrupted run returns
        self.checkpointed = (self.fitted, self.hof.members, self.front_members()
                             ) if self.fitted is not None else None
        self.stopped: str | None = None
        # A candidate past its time limit stops at the next batch; in worker processes one
        # stuck inside a batch is also terminated, at twice its limit plus 5 s.
        limit = config.candidate_time_limit
        self.executor = executor
        self.evaluator = make_evaluator(executor, timeout=None if limit is None
                                     else 2.0 * limit + CANDIDATE_KILL_GRACE)
        fitness = EwmaFitness(scorer, config.fitness_ewma) if config.fitness_ewma > 0 else scorer
        if config.objectives:
            fitness = pareto.objectives_fitness(config.objectives, fitness, scorer.valid[0][0])
        self.fitness = fitness
        self.evaluate_all = _evaluate_with(self.evaluator, fitness, progress, self.elapsed)

    def elapsed(self) -> float:
        """Seconds the run has spent, over all its sessions."""
        return self.elapsed0 + time.monotonic() - self.start

    def done(self) -> bool:
        """Whether the search stops before another generation (never before the first). A time
        limit also stops before a generation expected to run past it, expecting the last one's
        time scaled by its training budget."""
        if self.fitted is None:
            return False
        expected = _expected_seconds(self.config, self.fitted.generation + 1, self.ntrain,
                                     self.last_seconds)
        self.stopped = _done(self.fitted, self.stop.generations, self.search_limit,
                             self.stop.target_fitness, self.elapsed() + expected)
        return self.stopped is not None

    def next_generation(self) -> Population:
        """The initial population, then the strategy's children of the last generation."""
        if self.fitted is None:
            population, self.pending = self.pending, None
            return population
        return Population(self.strategy(self.fitted.members), self.fitted.generation + 1,
                          previous=self.fitted)

    def evaluate(self, population: Population) -> Population | None:
        """``population`` evaluated, best first; None where the deadline cut it short."""
        self.t0 = time.monotonic()
        try:
            evaluated = self.evaluate_all(population)
        except DeadlineExceeded:
            if self.fitted is None:
                raise RuntimeError(
                    f"fit: the search's {self.search_limit:g} s of the time limit ended before "
                    f"the first generation was evaluated ({self.config.population_size} "
                    f"candidates of {self.config.batches_at(1, self.ntrain)} batches each); "
                    "give a longer time limit, or a smaller population_size or "
                    "batches_per_generation") from None
            log.warning("the time limit cut generation %d short: it is dropped, and the run "
                        "ends with generation %d", population.generation, self.fitted.generation)
            self.stopped = "time"
            return None
        return Population(evaluated.best_first(), evaluated.generation)

    def record(self, fitted: Population) -> None:
        """Take ``fitted`` as the last generation: the hall of fame, the callbacks, the
        checkpoint and the progress event."""
        self.fitted = fitted
        self.hof.update(fitted)
        if self.front is not None:
            self.front.update(fitted)
        # The generation just replaced is garbage now, but graphs are reference cycles: freed
        # here, their memory is what the next generation's edits and training reuse (left to
        # the collector's schedule, they wait and new arrays take fresh pages).
        gc.collect()
        elapsed = self.elapsed()
        self.last_seconds = time.monotonic() - self.t0
        # Callbacks before the checkpoint: a run killed between the two redoes this generation
        # on resume and its plots record it again (rows of a generation are replaced), where
        # the other order would lose its rows for good.
        for cb in self.callbacks:
            run_callback(cb, fitted)
        if self.mdir is not None:
            save_checkpoint(self.mdir, fitted, self.state(), hall_of_fame=self.hof,
                            pareto_front=self.front)
            self.checkpointed = (fitted, self.hof.members, self.front_members())
        if self.progress is not None:
            self.progress({"event": "generation", "generation": fitted.generation,
                           "best": fitted.best().fitness, "mean": _mean_fitness(fitted),
                           "best_ever": self.hof.best().fitness if len(self.hof) else None,
                           "seconds": time.monotonic() - self.t0, "elapsed": elapsed})

    def final_training(self) -> None:
        """With a time limit and ``final_training``, train the best-ever model on (its share of
        the time limit; all the time left where the search stopped for time) and keep it as
        ``population.final`` where :func:`accept_final` says so."""
        limit, share = self.stop.time_limit, self.config.final_training
        if limit is None or share <= 0 or not len(self.hof):
            return
        left = limit - self.elapsed()
        if self.stopped != "time":
            left = min(left, share * limit)
        self.scorer.deadline = None          # the final training keeps to ``left`` itself
        best = self.hof.best()
        final = train_final(best, self.scorer, self.fitted.generation, left, self.progress)
        if final is not None and self.front is not None:
            with one_blas_thread():      # as where candidates are evaluated
                final.fitness = self.fitness.measure(final.candidate, final.fitness)
        if final is not None and accept_final(final, best, self.scorer.nvalid):
            self.hof.update([final])
            if self.front is not None:
                self.front.update([final])
            self.fitted.final = final
            if self.mdir is not None:
                save_checkpoint(self.mdir, self.fitted, {**self.state(), "final": {
                    "fitness": float(final.fitness), "generation": final.generation}},
                    hall_of_fame=self.hof, pareto_front=self.front)

    def interrupted(self) -> bool:
        """After Ctrl-C: go back to what the checkpoint holds where the interrupted generation
        was evaluated but not yet checkpointed (resuming redoes the rest). False where there is
        nothing to return."""
        if self.mdir is not None and self.checkpointed is None:
            return False
        if self.mdir is not None and self.checkpointed[0] is not self.fitted:
            self.fitted, self.hof = self.checkpointed[0], HallOfFame(self.hof.size)
            self.hof.update(self.checkpointed[1])
            if self.front is not None:
                self.front = ParetoFront()
                self.front.update(self.checkpointed[2])
        if self.fitted is None:
            return False
        log.warning("interrupted: returning generation %d%s", self.fitted.generation,
                    f"; run fit again with mdir={str(self.mdir)!r} to continue"
                    if self.mdir else "")
        return True

    def close(self) -> None:
        """Close the evaluator where it is ours; a user's stays open."""
        if self.evaluator is not self.executor:
            self.evaluator.close()
        elif isinstance(self.evaluator, SeededEvaluator):
            self.evaluator.on_result = None

    def result(self) -> Population:
        """The last generation, with its ``hall_of_fame``, ``pareto_front`` and ``final``."""
        self.fitted.hall_of_fame = self.hof
        self.fitted.pareto_front = self.front
        self.fitted.final = getattr(self.fitted, "final", None)
        return self.fitted

    def front_members(self) -> list:
        """The Pareto front's members (none without objectives)."""
        return self.front.members if self.front is not None else []

    def state(self) -> dict:
        return resume.run_state(self.config, self.kind, self.sample_shape, self.nclasses,
                                self.elapsed(), self.last_seconds)


# ---------------------------------------------------------------------------- fitness

class ClassifierFitness(AbstractFitness):
    """Train on the generation's batches, then score on the validation set: the seed's
    ``accuracy + min(1e-3, 1 / nparams)`` (``tiebreak="size"``, default), or
    ``accuracy + 1e-3 / (1 + cross entropy)`` (``tiebreak="loss"``: among equally accurate
    models, the one that is right with more confidence). Accuracy always comes first: the extra
    term is below one validation sample's worth. Invalid: 0.0. ``keep_optimizer_state``: see
    :class:`~tinyevo.evolution.TrainThenFitness`. ``keep_metrics``: each validation also
    leaves ``candidate.metrics = {"accuracy": ..., "loss": ...}`` (for objectives)."""

    def __init__(self, train: GenerationBatches, valid: tuple[np.ndarray, np.ndarray],
                 batch_size: int = 256, time_limit: float | None = None,
                 tiebreak: str = "size", lr_schedule: Callable | None = None,
                 keep_optimizer_state: bool = False, keep_metrics: bool = False) -> None:
        if tiebreak not in TIEBREAKS:
            raise ValueError(f"tiebreak must be one of {TIEBREAKS}, got {tiebreak!r}")
        xv, yv = valid
        self.valid = [(xv[i:i + batch_size], yv[i:i + batch_size])
                      for i in range(0, len(yv), batch_size)]
        self.nvalid = len(yv)
        self._device: tuple | None = None
        self.tiebreak, self.keep_metrics = tiebreak, keep_metrics
        self.train = TrainThenFitness(train, logit_cross_entropy, Adam(), self._score,
                                      invalidfitness=0.0, time_limit=time_limit,
                                      lr_schedule=lr_schedule,
                                      keep_optimizer_state=keep_optimizer_state)
        self.invalidfitness = 0.0

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
        value = float(self.train(candidate, generation) or 0.0)
        candidate.eval_time = time.perf_counter() - t0      # for ScatterPop; travels back
        return value


# ---------------------------------------------------------------------------- population

def initial_population(space: Any, insize: int, kind: str, size: int,
                       rng: np.random.Generator | None = None, max_macs: float | None = None,
                       spatial: Sequence[int] = (), tries: int = 20) -> Population:
    """``size`` candidates drawn from ``space``, each with its own optimiser
    (:func:`tinyevo.app.defaults.default_optimizer`). With ``max_macs``, a model over that
    many multiply-adds per sample (inputs of ``spatial`` size) is drawn again, up to ``tries``
    times (then the cheapest draw is kept)."""
    members = []
    for i in range(size):
        graph = _draw(space, insize, kind, rng)
        if max_macs is not None:
            draws = [(graph.macs(tuple(spatial)), graph)]
            while draws[-1][0] > max_macs and len(draws) < tries:
                graph = _draw(space, insize, kind, rng)
                draws.append((graph.macs(tuple(spatial)), graph))
            graph = min(draws, key=lambda d: d[0])[1]
        members.append(CandidateOptModel(defaults.default_optimizer(rng), graph))
        log.debug("initial model %d: %d vertices, %d parameters", i, len(graph.vertices),
                  graph.nparams())
    return Population(members)


def _draw(space: Any, insize: int, kind: str, rng: Any) -> CompGraph:
    inp = input_vertex("input", insize, kind)
    return CompGraph(inp, space(inp, rng))


def train_final(best: Any, scorer: ClassifierFitness, generation: int, seconds: float,
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


def accept_final(final: Any, best: Any, nvalid: int) -> bool:
    """Whether the final training's model replaces the best-ever one as the run's result: unless
    it validates lower by more than two standard errors of the validation accuracy.

    The best-ever fitness is the maximum over every candidate evaluated, so it is biased
    upwards (the winner's curse); the trained copy's is a fresh measurement. On 1,000
    samples at 99 % the standard error is 0.3 %, more than the final training's gain, so a
    plain comparison would keep the less trained model about half the time."""
    p = min(1.0, max(0.0, float(best.fitness)))
    return float(final.fitness) >= float(best.fitness) - 2.0 * math.sqrt(p * (1 - p) / nvalid)


def _train_final(candidate: Any, best: Any, scorer: ClassifierFitness, generation: int,
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
            loss, dout = logit_cross_entropy(out, y)
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


def _evaluate_with(evaluator: Any, fitness: Any, progress: Callable | None,
               elapsed: Callable[[], float]) -> Callable:
    """``evaluate(population) -> fitted population`` through ``evaluator`` (what
    :func:`~tinyevo.app.executors.make_evaluator` gave), reporting each finished candidate as
    its result arrives.

    Members carried over from the last generation (the elites) are evaluated as copies, so
    that training in this process never changes a model of the last complete generation: a
    run cut or interrupted mid-generation returns that generation as it was checkpointed."""
    def evaluate(population: Population) -> Population:
        total = len(population.members)
        done = [0]

        def report(index: int, result: Any) -> None:
            done[0] += 1
            progress({"event": "candidate", "generation": population.generation,
                      "done": done[0], "total": total,
                      "fitness": getattr(result, "fitness", None),
                      "seconds": getattr(result, "eval_time", None), "elapsed": elapsed()})

        if isinstance(evaluator, SeededEvaluator):
            evaluator.on_result = report if progress is not None else None
        members = [snapshot(c) if isinstance(c, FittedCandidate) else c
                   for c in population.members]
        fitted = Population(members, population.generation).evaluate(fitness, evaluator)
        if not isinstance(evaluator, SeededEvaluator) and progress is not None:
            for i, c in enumerate(fitted.members):
                report(i, c)
        return fitted

    return evaluate


def _expected_seconds(config: FitConfig, generation: int, ntrain: int,
                      last_seconds: float) -> float:
    """The expected time of ``generation``: the previous one's, scaled by the training budget,
    with a 20 % margin (generations vary by about that: a generation started on a bare
    estimate was often cut at the deadline, its time lost)."""
    if generation <= 1:
        return 0.0
    return 1.2 * last_seconds * (config.batches_at(generation, ntrain)
                                 / config.batches_at(generation - 1, ntrain))


def _done(fitted: Population, generations: int | None, time_limit: float | None,
          target: float | None, elapsed: float) -> str | None:
    """Why the search stops after ``fitted`` ("generations", "time", "target"), or None."""
    if generations is not None and fitted.generation >= generations:
        return "generations"
    if time_limit is not None and elapsed >= time_limit:
        return "time"
    if target is not None and fitted.best().fitness >= target:
        return "target"
    return None


def _mean_fitness(population: Population) -> float:
    values = [c.fitness for c in population.members if isinstance(c.fitness, (int, float))]
    return float(np.mean(values)) if values else float("nan")


def _run_directory(mdir: str | os.PathLike | None) -> Path | None:
    """``mdir`` as a Path, made sure to hold checkpoints before any training (a file in its
    place or a read-only folder was found a whole generation late)."""
    if mdir is None:
        return None
    mdir = Path(mdir)
    if mdir.exists() and not mdir.is_dir():
        raise ValueError(f"fit: mdir {str(mdir)!r} is a file, not a folder; pass a folder for "
                         "the run's checkpoints (it is made if missing)")
    try:
        mdir.mkdir(parents=True, exist_ok=True)
        probe = mdir / f".tinyevo-write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        raise ValueError(f"fit: cannot write checkpoints to {str(mdir)!r} ({err.strerror or err});"
                         " pass a folder you can write to") from err
    return mdir
