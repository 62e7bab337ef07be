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
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from tinyevo.app import defaults, pareto, resume
from tinyevo.app._workers import one_blas_thread
from tinyevo.app.callbacks import callback_list, run_callback
from tinyevo.app.checkpoint import save_checkpoint, stored_settings
from tinyevo.app.config import (
    FitConfig,
    check_combination,
    configure,
    data_choices,
    data_defaults,
    integer,
    plain_defaults,
    real,
)
from tinyevo.app.data import (
    KIND_OF_RANK,
    GenerationBatches,
    as_arrays,
    noutputs,
    split_validation,
    validation_arrays,
)
from tinyevo.app.executors import SeededEvaluator, make_evaluator, multiply_adds
from tinyevo.app.runlock import run_lock
from tinyevo.app.scoring import (
    ClassifierFitness,
    RegressorFitness,
    ValidationFitness,
    accept_final,
    train_final,
)
from tinyevo.app.warmstart import continue_names_after, fingerprint, initial_models
from tinyevo.evolution.candidate import CandidateOptModel, FittedCandidate
from tinyevo.evolution.fitness import DeadlineExceeded, EwmaFitness, cosine_schedule
from tinyevo.evolution.halloffame import HallOfFame, snapshot
from tinyevo.evolution.lineage import Lineage
from tinyevo.evolution.pareto import ParetoFront
from tinyevo.evolution.population import Population
from tinyevo.evolution.timing import phase, take
from tinyevo.graph import CompGraph, input_vertex
from tinyevo.layers import destandardizer, standardizer
from tinyevo.search import rescale_vertex

__all__ = ["fit", "initial_population", "result_model"]

log = logging.getLogger("tinyevo")

MAX_FITNESS = 1.001     # what ClassifierFitness can give: accuracy 1 plus the tie-break
CANDIDATE_KILL_GRACE = 5.0  # seconds past 2x candidate_time_limit before a worker is killed
# The phases of a generation's "timings" (tinyevo.evolution.timing), reported even when 0.
PHASES = ("train", "validate", "serialise", "busy", "ship", "operators", "checkpoint")


def fit(x: Any, y: Any = None, *, generations: int | None = None,
        time_limit: float | None = None, target_fitness: float | None = None,
        valid: tuple | None = None, mdir: str | Path | None = None,
        callbacks: Sequence[Callable] | Callable = (),
        progress: Callable[[dict], None] | None = None, executor: Any = None,
        search_space: Any = None, mutation: Any = None, crossover: Any = None,
        strategy: Any = None, hall_of_fame: int = 5, config: FitConfig | None = None,
        initial: Sequence[Any] | None = None, **settings: Any) -> Population:
    """Evolve a model for ``x`` (N, C, H, W), (N, C, L) or (N, F): a classifier for integer
    labels ``y``, a regressor for numbers ``y`` (N,) or (N, K) (``task``: see below).

    ``x`` may also be an ``(x, y)`` tuple or an iterable of ``(x, y)`` batches (gathered into
    arrays); labels may be one-hot. Without ``valid`` (an ``(x, y)`` pair or batches), a
    stratified share of the data is held out for validation.

    ``task`` (a setting) is "classification" (cross entropy; fitness: validation accuracy) or
    "regression" (MSE on standardised targets; fitness: validation R², at least -1; each model
    ends in a fixed layer that gives predictions in ``y``'s units); None infers it from ``y``
    (:func:`~tinyevo.app.tasks.infer_task`). ``standardize`` (None: for (N, F) data) starts
    each drawn model with a fixed layer that standardises the raw inputs.
    ``initial``: the user's models (graphs, or folders written by ``save_model``) to start
    from: copies of them, weights as given, are the first members of generation 1
    (:mod:`tinyevo.app.warmstart`).

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
    ``population.lineage`` records where each kept candidate came from (docs/lineage.md).
    ``.predict(x)``, ``.evaluate(x, y)`` and ``.graph()`` work on each (for regression:
    predictions (N, K) and R²); :func:`result_model` picks the one a user gets.

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
    task = config.task
    if task is None and mdir is not None:         # a resumed run's, where it is not given
        task = (stored_settings(mdir) or {}).get("task")
    x, y, task = as_arrays(x, y, "training data", task)
    kind, nout = KIND_OF_RANK[x.ndim], noutputs(y, task)
    valid = None if valid is None else validation_arrays(valid, x, task, nout)
    check_combination(config, kind, valid=valid, search_space=search_space, mutation=mutation,
                      crossover=crossover, strategy=strategy, task=task)
    initial = initial_models(initial, x, kind, nout)
    mdir = _run_directory(mdir)
    with run_lock(mdir) if mdir is not None else contextlib.nullcontext():
        resumed = resume.load(mdir)
        config = resume.fill(config, resumed, plain_defaults())
        if valid is None:
            (x, y), valid = split_validation(x, y, config.valid_fraction, config.seed,
                                             config.valid_max)
        config = resume.fill(config, resumed, {**data_defaults(config, len(y), x.shape[1:]),
                                               **data_choices(kind, task)})
        if len(initial) > config.population_size:
            raise ValueError(f"fit: initial= gives {len(initial)} models for a population of "
                             f"{config.population_size}; give at most that many, or a larger "
                             "population_size")
        started_from = fingerprint(initial)
        if resumed is not None:
            resume.check(resumed, config, kind, x.shape[1:], nout, mdir, started_from)
            started_from = resumed.state.get("initial", [])
            log.info("resuming %s from generation %d", mdir, resumed.population.generation)
        scorer = _scorer(config, task, GenerationBatches(x, y, config), valid, y)
        batch_mutation, batch_crossover = defaults.batch_size_operators(
            config.batch_size if config.batch_size_search else None)
        strategy = strategy or defaults.default_strategy(
            config.population_size, mutation or defaults.default_mutation(
                kind, nout, max_macs=config.max_macs, sample_shape=x.shape[1:]),
            crossover or defaults.default_crossover(batch_crossover), config.elites,
            itermap_mutation=batch_mutation, pareto=bool(config.objectives))

        def draw() -> Population:
            space = search_space or defaults.default_search_space(kind, nout, config.widths,
                                                                  x.shape[1:], task)
            continue_names_after(initial)
            population = initial_population(
                space, x.shape[1], kind, config.population_size, max_macs=config.max_macs,
                spatial=x.shape[2:], initial=initial,
                inputs=standardizer(x) if config.standardize else None,
                outputs=destandardizer(y) if task == "regression" else None)
            if config.batch_size_search:      # each candidate with its own batch size
                population = defaults.with_batch_sizes(population, config.batch_size)
            return population

        search = _Search(config, stop, scorer, strategy, resumed, draw, executor,
                         facts=(kind, x.shape[1:], nout, len(y)), mdir=mdir,
                         callbacks=callbacks, progress=progress, hall_of_fame=hall_of_fame,
                         started_from=started_from)
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


def result_model(population: Population) -> Any:
    """The candidate a run's user gets: the final training's model where there was one, else
    the best model ever evaluated (the hall of fame's best), else the last generation's best
    (what the command tests and exports, and the estimators keep)."""
    fame = population.hall_of_fame
    if getattr(population, "final", None) is not None:
        return population.final
    return fame.best() if fame is not None and len(fame) else population.best()


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

    def __init__(self, config: FitConfig, stop: _Stop, scorer: ValidationFitness,
                 strategy: Callable, resumed: resume.Resumed | None,
                 draw: Callable[[], Population], executor: Any, *, facts: tuple,
                 mdir: Path | None, callbacks: list[Callable], progress: Callable | None,
                 hall_of_fame: int, started_from: list[str]) -> None:
        self.config, self.stop, self.scorer, self.strategy = config, stop, scorer, strategy
        self.started_from = started_from
        take()                      # phase timings from before this run are not its
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
            self.lineage = resume.continued_lineage(resumed, self.hof.members,
                                                    self.front_members())
        else:
            resume.start_random_state(config.seed)
            self.elapsed0 = self.last_seconds = 0.0
            self.fitted = None
            self.lineage = Lineage()        # who came from whom (draws no random numbers)
            with phase("operators"):
                self.pending = draw()
                self.lineage.register(self.pending)
        # The search's deadline (wall clock, so that worker processes can read it too): training
        # and validation that reach it stop, and the generation they were in is dropped. The
        # final training has the rest of the time limit.
        self.search_limit = (None if stop.time_limit is None
                             else stop.time_limit * (1.0 - config.final_training))
        if self.search_limit is not None:
            scorer.deadline = time.time() + max(0.0, self.search_limit - self.elapsed0)
        # the last checkpoint: what an interrupted run returns
        self.checkpointed = (self.fitted, self.hof.members, self.front_members(),
                             self.lineage.copy()) if self.fitted is not None else None
        self.stopped: str | None = None
        # A candidate past its time limit stops at the next batch; in worker processes one
        # stuck inside a batch is also terminated, at twice its limit plus 5 s.
        limit = config.candidate_time_limit
        self.executor = executor
        self.evaluator = make_evaluator(executor, timeout=None if limit is None
                                     else 2.0 * limit + CANDIDATE_KILL_GRACE)
        if self.evaluator is not executor and isinstance(self.evaluator, SeededEvaluator):
            self.evaluator.cost = multiply_adds(self.sample_shape[1:])  # costliest first
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
        with phase("operators"):
            with self.lineage.recording():
                children = self.strategy(self.fitted.members)
            population = Population(children, self.fitted.generation + 1,
                                    previous=self.fitted)
            self.lineage.register(population)
        return population

    def evaluate(self, population: Population) -> Population | None:
        """``population`` evaluated, best first; None where the deadline cut it short."""
        self.t0 = time.monotonic()
        try:
            evaluated = self.evaluate_all(population)
            self.evaluate_wall = time.monotonic() - self.t0
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
        checkpoint and the progress event (with the generation's :meth:`timings`)."""
        with phase("checkpoint"):
            elapsed = self._keep(fitted)
        timings = self.timings()
        if self.progress is not None:
            self.progress({"event": "generation", "generation": fitted.generation,
                           "best": fitted.best().fitness, "mean": _mean_fitness(fitted),
                           "best_ever": self.hof.best().fitness if len(self.hof) else None,
                           "seconds": time.monotonic() - self.t0, "elapsed": elapsed,
                           "timings": timings})

    def _keep(self, fitted: Population) -> float:
        """:meth:`record`'s work before the event; returns the run's elapsed seconds."""
        self.fitted = fitted
        self.hof.update(fitted)
        if self.front is not None:
            self.front.update(fitted)
        self.lineage.update(fitted, self.hof, self.front_members())
        fitted.lineage = self.lineage           # for the callbacks too
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
                            pareto_front=self.front, lineage=self.lineage)
            self.checkpointed = (fitted, self.hof.members, self.front_members(),
                                 self.lineage.copy())
        return elapsed

    def timings(self) -> dict:
        """Where the generation's time went, taken (reset) from :mod:`tinyevo.evolution.timing`:
        seconds per phase of :data:`PHASES`, summed over the workers ("busy": their whole
        tasks), "train_samples", "workers" (None where the evaluator does not say),
        "evaluate_wall" and "idle" (workers x evaluate_wall - busy; None without workers)."""
        totals = {**dict.fromkeys(PHASES, 0.0), "train_samples": 0, **take()}
        try:
            workers = getattr(self.evaluator, "workers", None)
        except Exception as e:  # noqa: BLE001 - a diagnostic never ends a run (a Dask call)
            log.info("phase timings: the evaluator's worker count is unknown (%s)", e)
            workers = None
        workers = workers if isinstance(workers, int) and workers > 0 else None
        wall = self.evaluate_wall
        # (busy can exceed workers x wall only by clock rounding: clamped at zero)
        idle = None if workers is None else max(0.0, workers * wall - totals["busy"])
        return {**totals, "workers": workers, "evaluate_wall": wall, "idle": idle}

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
        if final is not None and accept_final(final, best, self.scorer.nvalid,
                                              self.config.task):
            self.hof.update([final])
            if self.front is not None:
                self.front.update([final])
            self.lineage.update(self.fitted, self.hof, self.front_members())  # final: its id
            self.fitted.final = final
            if self.mdir is not None:
                save_checkpoint(self.mdir, self.fitted, {**self.state(), "final": {
                    "fitness": float(final.fitness), "generation": final.generation}},
                    hall_of_fame=self.hof, pareto_front=self.front, lineage=self.lineage)

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
            self.lineage = self.checkpointed[3]
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
        """The last generation, with its ``hall_of_fame``, ``pareto_front``, ``final``,
        ``lineage`` and ``task``."""
        self.fitted.hall_of_fame = self.hof
        self.fitted.pareto_front = self.front
        self.fitted.final = getattr(self.fitted, "final", None)
        self.fitted.task = self.config.task
        self.lineage.update(self.fitted, self.hof, self.front_members())  # drops a cut generation
        self.fitted.lineage = self.lineage
        for c in [*self.fitted.members, *self.hof.members, *self.front_members(),
                  *([self.fitted.final] if self.fitted.final is not None else [])]:
            c.task = self.config.task    # predict and evaluate give a regressor's outputs, R²
        return self.fitted

    def front_members(self) -> list:
        """The Pareto front's members (none without objectives)."""
        return self.front.members if self.front is not None else []

    def state(self) -> dict:
        return resume.run_state(self.config, self.kind, self.sample_shape, self.nclasses,
                                self.elapsed(), self.last_seconds, self.started_from)


# ---------------------------------------------------------------------------- population

def initial_population(space: Any, insize: int, kind: str, size: int,
                       rng: np.random.Generator | None = None, max_macs: float | None = None,
                       spatial: Sequence[int] = (), tries: int = 20,
                       initial: Sequence[CompGraph] = (), inputs: tuple | None = None,
                       outputs: tuple | None = None) -> Population:
    """``size`` candidates, each with its own optimiser
    (:func:`tinyevo.app.defaults.default_optimizer`): first the graphs of ``initial`` (as
    they are), then models drawn from ``space``. With ``max_macs``, a model over that many
    multiply-adds per sample (inputs of ``spatial`` size) is drawn again, up to ``tries``
    times (then the cheapest draw is kept). ``inputs``/``outputs``: ``(scale, offset)`` of a
    fixed :class:`~tinyevo.layers.Rescale` vertex that the drawn models get after their input
    (standardising it) or after their output (giving targets' units)."""
    members = [CandidateOptModel(defaults.default_optimizer(rng), g) for g in initial]

    def draw() -> CompGraph:
        return _draw(space, insize, kind, rng, inputs, outputs)

    for i in range(len(members), size):
        graph = draw()
        if max_macs is not None:
            draws = [(graph.macs(tuple(spatial)), graph)]
            while draws[-1][0] > max_macs and len(draws) < tries:
                graph = draw()
                draws.append((graph.macs(tuple(spatial)), graph))
            graph = min(draws, key=lambda d: d[0])[1]
        members.append(CandidateOptModel(defaults.default_optimizer(rng), graph))
        log.debug("initial model %d: %d vertices, %d parameters", i, len(graph.vertices),
                  graph.nparams())
    return Population(members)


def _draw(space: Any, insize: int, kind: str, rng: Any, inputs: tuple | None = None,
          outputs: tuple | None = None) -> CompGraph:
    inp = input_vertex("input", insize, kind)
    first = inp if inputs is None else rescale_vertex(inp, *inputs)
    out = space(first, rng)
    return CompGraph(inp, out if outputs is None else rescale_vertex(out, *outputs))


def _scorer(config: FitConfig, task: str, train: GenerationBatches, valid: tuple,
            y: np.ndarray) -> ValidationFitness:
    """The run's fitness: the task's, with the run's settings."""
    common = {"batch_size": 256, "time_limit": config.candidate_time_limit,
              "lr_schedule": cosine_schedule if config.lr_schedule == "cosine" else None,
              "keep_optimizer_state": config.optimizer_state == "keep",
              "keep_metrics": bool(config.objectives)}
    if task == "regression":
        return RegressorFitness(train, valid, scale=destandardizer(y)[0], **common)
    return ClassifierFitness(train, valid, tiebreak=config.tiebreak, **common)


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
