"""``tinyevo.fit``: evolve a classifier end to end, with checkpoints to resume.

    >>> import tinyevo as te
    >>> (x, y), (x_test, y_test) = te.load_dataset("digits")
    >>> population = te.fit(x, y, generations=3, population_size=4, seed=0)  # doctest: +SKIP
    >>> population.best().evaluate(x_test, y_test)                             # doctest: +SKIP

Each generation every candidate trains on the same batches (drawn from the run seed and the
generation number alone, so any process computes them alike), is scored on the validation set,
and the strategy makes the next generation from the scores. With ``mdir`` the evaluated
population is checkpointed after every generation (JSON + ``.npz``, atomically); calling ``fit``
again on the same ``mdir`` continues from the last complete generation and reaches the same
result as a run that was never interrupted.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import math
import numbers
import os
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tinyevo import backend as B
from tinyevo.app import defaults
from tinyevo.app.checkpoint import load_checkpoint, save_checkpoint
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
from tinyevo.evolution.population import Population
from tinyevo.graph import CompGraph, input_vertex
from tinyevo.graph.vertex import name_counter, set_name_counter
from tinyevo.losses import logit_cross_entropy
from tinyevo.optimizers import Adam

__all__ = ["fit", "FitConfig", "GenerationBatches", "ClassifierFitness", "initial_population"]

log = logging.getLogger("tinyevo")

KIND_OF_RANK = {2: "dense", 3: "conv1d", 4: "conv2d"}
# Defaults sized on MNIST (60,000 28x28 images) on 2 cores; docs/fit.md has the measurements.
DEFAULT_BATCHES = 50    # training batches of a generation's first budget, at most
VALID_MAX = 1000        # validation samples, at most
FINAL_TRAINING = 0.4    # share of a time limit for training the best model, on large data
LARGE_DATA_POPULATION = 8   # candidates per generation on large data (12 otherwise)
# The ceiling on a model's multiply-adds per sample on large data, per input value: 6.3 M for
# MNIST's 784, 1.5 times the hand-written two-block CNN of benchmarks/bench_mnist.py (4.2 M).
LARGE_DATA_MACS_PER_VALUE = 8000
MAX_FITNESS = 1.001     # what ClassifierFitness can give: accuracy 1 plus the tie-break
CANDIDATE_KILL_GRACE = 5.0  # seconds past 2x candidate_time_limit before a worker is killed
MAX_SPARSE_CLASSES = 1000   # labels may skip classes, but not up to more than this (or 10x)


@dataclass
class FitConfig:
    """Everything that decides a run's result; stored in checkpoints, checked on resume.

    Defaults (see docs/fit.md): the seed's AutoFlux ImageClassifier scaled to minutes on a CPU.
    """

    population_size: int = 12
    batch_size: int = 32
    batches_per_generation: int | None = None   # None: one pass, at most DEFAULT_BATCHES
    budget_growth: float = 0.1                  # extra share of batches per generation
    valid_fraction: float = 0.3
    valid_max: int | None = VALID_MAX           # at most this many validation samples
    augment: bool = False                       # +-1 pixel shifts of image batches
    seed: int = 0
    elites: int = 2
    widths: tuple[int, int] = (8, 32)
    candidate_time_limit: float | None = None
    lr_schedule: str = "constant"               # "cosine": decay to 0 within each generation
    tiebreak: str = "loss"                      # among equally accurate: "loss" or "size"
    optimizer_state: str = "keep"               # "reset": wipe moments after every generation
    fitness_ewma: float = 0.0                   # weight of the parent's fitness (EwmaFitness)
    final_training: float = 0.0                 # share of the time limit to train the best
    max_macs: float | None = None               # ceiling on a model's multiply-adds a sample

    def batches_at(self, generation: int, ntrain: int) -> int:
        """The training budget of ``generation``, in batches (the same for every candidate)."""
        base = self.batches_per_generation or default_batches(ntrain, self.batch_size)
        return max(1, int(round(base * (1.0 + self.budget_growth * (generation - 1)))))


def default_batches(ntrain: int, batch_size: int) -> int:
    """The first generation's default training budget: one pass over the training split, but
    at most :data:`DEFAULT_BATCHES` batches, so that the time of a generation does not grow
    with the data (see docs/fit.md)."""
    return max(1, min(math.ceil(ntrain / batch_size), DEFAULT_BATCHES))


def fit(x: Any, y: Any = None, *, valid: tuple | None = None, generations: int | None = None,
        time_limit: float | None = None, target_fitness: float | None = None,
        population_size: int | None = None, batch_size: int = 32,
        batches_per_generation: int | None = None, budget_growth: float = 0.1,
        valid_fraction: float = 0.3, valid_max: int | None = VALID_MAX, augment: bool = False,
        mdir: str | Path | None = None, callbacks: Sequence[Callable] | Callable = (),
        seed: int | None = None, executor: Any = None, search_space: Any = None,
        mutation: Any = None, crossover: Any = None, strategy: Any = None,
        widths: tuple[int, int] = (8, 32), candidate_time_limit: float | None = None,
        lr_schedule: str = "constant", tiebreak: str = "loss", optimizer_state: str = "keep",
        fitness_ewma: float = 0.0, hall_of_fame: int = 5, final_training: float | None = None,
        max_macs: float | None = None,
        progress: Callable[[dict], None] | None = None) -> Population:
    """Evolve a classifier for ``x`` (N, C, H, W), (N, C, L) or (N, F) with integer labels ``y``.

    ``x`` may also be an ``(x, y)`` tuple or an iterable of ``(x, y)`` batches (gathered into
    arrays). Stops after ``generations`` generations, when the best fitness reaches
    ``target_fitness``, or at ``time_limit`` seconds (at least one must be given). The time
    limit holds: a generation expected to end past it is not started, and one that is still
    training when it comes is cut and dropped (the run returns, and its checkpoint holds, the
    last complete generation, so resuming is exact). The fitness of a candidate is its
    validation accuracy plus a tie-break below one sample's worth (``tiebreak``).

    Returns the last evaluated population sorted best first: ``population.best()`` is the best
    candidate *of the last generation*; ``population.hall_of_fame`` holds snapshots of the
    ``hall_of_fame`` best candidates *ever evaluated* (``population.hall_of_fame.best()`` is
    the best-ever model, as it was when it earned its fitness); ``population.final`` is the
    final training's model where there was one (see ``final_training``). ``.predict(x)``,
    ``.evaluate(x, y)`` and ``.graph()`` (the model) work on either.

    Every generation trains each candidate on the same ``batches_per_generation`` batches of
    ``batch_size`` (default: one pass, at most 50 batches, growing by ``budget_growth`` of
    that per generation), the next slice of one shuffled stream over the training data.
    Without ``valid``, a stratified ``valid_fraction`` of the data (at most ``valid_max``
    samples) is held out for validation.

    *Large data* is data of which a generation's training budget is less than one pass
    (MNIST, not digits): the search cannot train its models to the end there, so the defaults
    left as None change to search cheaper generations and train the winner at the end:
    ``population_size`` 8 (else 12), ``final_training`` 0.4 (else 0) and ``max_macs`` 8,000
    per input value (6.3 M for MNIST; else no ceiling). On resume, a setting left as None is
    the checkpoint's.

    ``max_macs``: a ceiling on a model's cost, in multiply-adds per sample
    (:meth:`CompGraph.macs`): initial models over it are drawn again, and a mutation that
    takes a model over it is undone (the child keeps its parent's structure; crossover is not
    checked). 0 turns it off.

    ``mdir``: checkpoint every generation there and resume from it (one ``fit`` at a time owns
    it: a second is refused while the first runs). ``callbacks``: called with
    the evaluated population after every generation (PlotFitness, ScatterPop, ... from
    ``tinyevo.app``). ``executor``: where candidates are evaluated: None (this process, one BLAS
    thread), a number of local worker processes, a Dask client or scheduler address, or any
    ``concurrent.futures.Executor`` (see docs/parallel.md); results are the same on all.
    ``progress(event)``: a dict per finished candidate and generation, for progress displays.
    ``search_space``, ``mutation``, ``crossover`` and ``strategy`` replace the defaults of
    ``tinyevo.app.defaults``. ``lr_schedule``: "constant" (default) or "cosine" (each
    candidate's learning rate decays to 0 over each generation's training, a warm restart per
    generation; the searched rate is its peak). ``tiebreak``: among equally accurate models,
    the more confident ("loss", default) or the smaller ("size", the seed's) wins.
    ``optimizer_state``: "keep" (default) carries each model's optimiser state (Adam's moments
    and step count) from one generation to the next, into checkpoints and, for the parameters
    they inherit unchanged, to its children; "reset" starts every generation's training from a
    fresh optimiser, as the seed does. ``fitness_ewma``: the seed's EwmaFitness, a candidate's
    fitness blended with its parent's (or, for an elite, its own last one) with this weight on
    the old value (0: off).

    ``candidate_time_limit``: seconds one candidate may train in a generation; past it, its
    training stops at the next batch and it gets fitness 0 (the reason is logged). In this
    process that is all it can promise: a batch that never ends cannot be interrupted. In
    worker processes (``executor=2``, the command's default) a candidate still running at
    twice its limit plus 5 s, stuck inside a batch, is also terminated with its worker, and
    gets fitness 0; the other candidates in flight are retried. (An evaluator you pass as
    ``executor`` keeps its own ``timeout``.)

    ``final_training``: with a ``time_limit``, the share of it kept for the end (NASH's last
    step): the best model ever evaluated trains alone, in this process with all its threads,
    on the continuing stream, its learning rate annealed from its own to 0 (cosine) over that
    time; validated again, it is the run's result (``population.final``, what the command
    exports) unless it validates lower than the model it started from by more than two
    standard errors (:func:`accept_final`); it also enters the hall of fame (0: off; then
    ``population.final`` is None). Where the search stops for time (the next generation would
    not fit, or the deadline cut it), the final training takes all the time left instead.
    Default (None): 0.4 on large data, else 0 (digits, where every generation trains on all
    of it).
    """
    if generations is None and time_limit is None and target_fitness is None:
        raise ValueError("fit: give generations=, time_limit= or target_fitness= so the run "
                         "knows when to stop")
    generations = _integer("generations", generations, 1, optional=True)
    population_size = _integer("population_size", population_size, 2, optional=True)
    batch_size = _integer("batch_size", batch_size, 1)
    batches_per_generation = _integer("batches_per_generation", batches_per_generation, 1,
                                      optional=True)
    valid_max = _integer("valid_max", valid_max, 2, optional=True)
    candidate_time_limit = _real("candidate_time_limit", candidate_time_limit, 0.0, None,
                                 "a positive number of seconds", optional=True, open_low=True)
    hall_of_fame = _integer("hall_of_fame", hall_of_fame, 1)
    if seed is not None:
        seed = _integer("seed", seed, 0)
    time_limit = _real("time_limit", time_limit, 0.0, None, "a positive number of seconds "
                       "(the command's --time-limit reads '5m'; fit takes 300)", optional=True,
                       open_low=True)
    target_fitness = _real("target_fitness", target_fitness, None, MAX_FITNESS,
                           f"a fitness the run can reach (at most {MAX_FITNESS}: accuracy "
                           "plus the tie-break)", optional=True)
    valid_fraction = _real("valid_fraction", valid_fraction, 0.0, 1.0, "in (0, 1)",
                           open_low=True, open_high=True)
    budget_growth = _real("budget_growth", budget_growth, 0.0, None, ">= 0 (0: the same "
                          "budget every generation)")
    max_macs = _real("max_macs", max_macs, 0.0, None, ">= 0 multiply-adds per sample (0 "
                     "turns the ceiling off)", optional=True)
    fitness_ewma = _real("fitness_ewma", fitness_ewma, 0.0, 1.0, "in [0, 1) (the weight of "
                         "the parent's fitness; 0 turns it off)", open_high=True)
    final_training = _real("final_training", final_training, 0.0, 1.0, "in [0, 1) (the "
                           "share of time_limit kept to train the best model at the end; 0 "
                           "turns it off)", optional=True, open_high=True)
    for name, value, allowed in (("tiebreak", tiebreak, TIEBREAKS),
                                 ("optimizer_state", optimizer_state, OPTIMIZER_STATES),
                                 ("lr_schedule", lr_schedule, tuple(LR_SCHEDULES))):
        if value not in allowed:
            raise ValueError(f"fit: {name} must be one of {allowed}, got {value!r}")
    callbacks = _callbacks(callbacks)
    x, y = as_arrays(x, y, "training data")
    kind = KIND_OF_RANK[x.ndim]
    nclasses = int(y.max()) + 1
    distinct = len(np.unique(y))
    if distinct < 2:
        raise ValueError(f"fit: the training data has one class only (label {int(y[0])}); a "
                         "classifier needs at least two")
    if nclasses > max(MAX_SPARSE_CLASSES, 10 * distinct):
        raise ValueError(f"fit: labels must be 0..K-1, but the largest is {nclasses - 1} and "
                         f"only {distinct} distinct labels appear (a model with {nclasses:,} "
                         "outputs); remap them with numpy.unique(y, return_inverse=True)")
    seed = int(seed) if seed is not None else int(np.random.SeedSequence().entropy % 2**31)
    config = FitConfig(population_size=population_size or 0, batch_size=batch_size,
                       batches_per_generation=batches_per_generation,
                       budget_growth=float(budget_growth), valid_fraction=valid_fraction,
                       valid_max=valid_max, augment=bool(augment), seed=seed,
                       widths=tuple(widths), candidate_time_limit=candidate_time_limit,
                       lr_schedule=lr_schedule, tiebreak=tiebreak,
                       optimizer_state=optimizer_state, fitness_ewma=float(fitness_ewma))
    if valid is None:
        (x, y), (xv, yv) = split_validation(x, y, valid_fraction, seed, valid_max)
    else:
        xv, yv = as_arrays(*valid, "validation data") if isinstance(valid, tuple) and \
            len(valid) == 2 else as_arrays(valid, None, "validation data")
        if xv.shape[1:] != x.shape[1:]:
            raise ValueError(f"fit: validation samples have shape {xv.shape[1:]}, training "
                             f"samples {x.shape[1:]}; they must match")
        if yv.max() >= nclasses:
            raise ValueError(f"fit: validation label {int(yv.max())} is not a class of the "
                             f"training data (labels 0..{nclasses - 1}); every validation "
                             "sample would count as wrong. Use the same label coding for both")
    mdir = Path(mdir) if mdir is not None else None
    if mdir is not None:
        _check_writable(mdir)
    with contextlib.ExitStack() as owning:
        if mdir is not None:
            owning.enter_context(run_lock(mdir))     # one fit per run directory
        resumed = load_checkpoint(mdir, owner=True) if mdir is not None else None
        # Large data (a generation trains on less than one pass over it) gets a smaller
        # population, a ceiling on model cost and a final training: the search cannot train
        # its models to the end (see the docstring). A resumed run keeps its own settings.
        large = config.batches_at(1, len(y)) * batch_size < len(y)
        saved_config = resumed[1].get("config", {}) if resumed is not None else {}
        derived = {"population_size": (population_size, LARGE_DATA_POPULATION if large else 12),
                   "final_training": (final_training, FINAL_TRAINING if large else 0.0),
                   "max_macs": (max_macs, LARGE_DATA_MACS_PER_VALUE * int(np.prod(x.shape[1:]))
                                if large else None)}
        for name, (given, default) in derived.items():
            if given is not None:
                value = given
            elif resumed is not None:
                value = saved_config.get(name, _BEFORE_IT_EXISTED.get(name, default))
            else:
                value = default
            if name == "max_macs":
                value = float(value) if value else None        # 0: off
            setattr(config, name, value)
        population_size, final_training = config.population_size, config.final_training
        scorer = ClassifierFitness(GenerationBatches(x, y, config), (xv, yv), batch_size=256,
                                   time_limit=candidate_time_limit, tiebreak=tiebreak,
                                   lr_schedule=LR_SCHEDULES[lr_schedule],
                                   keep_optimizer_state=optimizer_state == "keep")
        fitness = EwmaFitness(scorer, fitness_ewma) if fitness_ewma > 0 else scorer
        strategy = strategy or defaults.default_strategy(
            population_size, mutation or defaults.default_mutation(
                kind, nclasses, max_macs=config.max_macs, sample_shape=x.shape[1:]),
            crossover or defaults.default_crossover(), config.elites)
        start = time.monotonic()
        if resumed is not None:
            fitted, state = resumed
            _check_resume(state, config, kind, x.shape[1:], nclasses, mdir)
            B.seed(0)
            B.rng().bit_generator.state = state["rng"]
            set_name_counter(int(state.get("name_counter", 1)))
            elapsed0 = float(state.get("elapsed", 0.0))
            last_seconds = float(state.get("last_seconds", 0.0))
            hof = HallOfFame(hall_of_fame)
            hof.update(fitted.hall_of_fame)     # load_checkpoint always attaches one
            log.info("resuming %s from generation %d", mdir, fitted.generation)
            population = None
        else:
            B.seed(seed)
            set_name_counter(1)             # vertex names, like weights, follow from the seed
            elapsed0 = last_seconds = 0.0
            fitted = None
            hof = HallOfFame(hall_of_fame)
            population = initial_population(
                search_space or defaults.default_search_space(kind, nclasses, config.widths,
                                                              x.shape[1:]),
                x.shape[1], kind, population_size, max_macs=config.max_macs,
                spatial=x.shape[2:])
        # The search's deadline (wall clock, so that worker processes can read it too): training
        # and validation that reach it stop, and the generation they were in is dropped. The
        # final training has the rest of the time limit.
        search_limit = None if time_limit is None else time_limit * (1.0 - final_training)
        if search_limit is not None:
            scorer.deadline = time.time() + max(0.0, search_limit - elapsed0)

        def state_now() -> dict:
            """The run's state as the checkpoint keeps it (all that resume needs besides the
            population and the hall of fame)."""
            return {"config": _jsonable_config(config), "kind": kind,
                    "sample_shape": list(x.shape[1:]), "nclasses": nclasses,
                    "rng": B.rng().bit_generator.state, "name_counter": name_counter(),
                    "elapsed": elapsed0 + time.monotonic() - start, "last_seconds": last_seconds}

        checkpointed = (fitted, hof.members) if fitted is not None else None   # the last checkpoint
        # A candidate past its time limit stops at the next batch; in worker processes one
        # stuck inside a batch is also terminated, at twice its limit plus 5 s.
        mapper = make_evaluator(executor, timeout=None if candidate_time_limit is None
                                else 2.0 * candidate_time_limit + CANDIDATE_KILL_GRACE)
        stopped = None
        evaluate = _evaluator(mapper, fitness, progress,
                              lambda: elapsed0 + time.monotonic() - start)
        try:
            while True:
                if fitted is not None:
                    # A time limit also stops before a generation that would run past it,
                    # expecting the last one's time scaled by its training budget.
                    expected = _expected_seconds(config, fitted.generation + 1, len(y),
                                                 last_seconds)
                    stopped = _done(fitted, generations, search_limit, target_fitness,
                                    elapsed0 + time.monotonic() - start + expected)
                    if stopped:
                        break
                    population = Population(strategy(fitted.members), fitted.generation + 1,
                                            previous=fitted)
                t0 = time.monotonic()
                try:
                    evaluated = evaluate(population)
                except DeadlineExceeded:
                    if fitted is None:
                        raise RuntimeError(
                            f"fit: the search's {search_limit:g} s of the time limit ended before "
                            f"the first generation was evaluated ({population_size} candidates of "
                            f"{config.batches_at(1, len(y))} batches each); give a longer time "
                            "limit, or a smaller population_size or batches_per_generation"
                        ) from None
                    log.warning("the time limit cut generation %d short: it is dropped, and the "
                                "run ends with generation %d", population.generation,
                                fitted.generation)
                    stopped = "time"
                    break
                fitted = Population(evaluated.best_first(), evaluated.generation)
                hof.update(fitted)
                # The generation just replaced is garbage now, but graphs are reference cycles:
                # freed here, their memory is what the next generation's edits and training reuse
                # (left to the collector's schedule, they wait and new arrays take fresh pages).
                population = evaluated = None
                gc.collect()
                elapsed = elapsed0 + time.monotonic() - start
                last_seconds = time.monotonic() - t0
                # Callbacks before the checkpoint: a run killed between the two redoes this
                # generation on resume and its plots record it again (rows of a generation are
                # replaced), where the other order would lose its rows for good.
                for cb in callbacks:
                    cb(fitted)
                if mdir is not None:
                    save_checkpoint(mdir, fitted, state_now(), hall_of_fame=hof)
                    checkpointed = (fitted, hof.members)
                if progress is not None:
                    progress({"event": "generation", "generation": fitted.generation,
                              "best": fitted.best().fitness, "mean": _mean_fitness(fitted),
                              "best_ever": hof.best().fitness if len(hof) else None,
                              "seconds": time.monotonic() - t0, "elapsed": elapsed})
            if time_limit is not None and final_training > 0 and len(hof):
                # Its share of the time limit; all the time left where the search stopped for
                # time (the next generation would not have fitted).
                left = time_limit - (elapsed0 + time.monotonic() - start)
                if stopped != "time":
                    left = min(left, final_training * time_limit)
                scorer.deadline = None          # the final training keeps to ``left`` itself
                final = train_final(hof.best(), scorer, fitted.generation, left, progress)
                if final is not None and accept_final(final, hof.best(), scorer.nvalid):
                    hof.update([final])
                    fitted.final = final
                    if mdir is not None:
                        save_checkpoint(mdir, fitted, {**state_now(), "final": {
                            "fitness": final.fitness, "generation": final.generation}},
                            hall_of_fame=hof)
        except KeyboardInterrupt:
            if mdir is not None and checkpointed is not None and checkpointed[0] is not fitted:
                # Stopped between a generation's evaluation and its checkpoint (in the
                # callbacks): return what the checkpoint holds; resuming redoes the rest.
                fitted, hof = checkpointed[0], HallOfFame(hall_of_fame)
                hof.update(checkpointed[1])
            elif mdir is not None and checkpointed is None:
                fitted = None
            if fitted is None:
                raise
            log.warning("interrupted: returning generation %d%s", fitted.generation,
                        f"; run fit again with mdir={str(mdir)!r} to continue" if mdir else "")
        finally:
            if mapper is not executor:          # ours to close; a user's evaluator stays open
                mapper.close()
            elif isinstance(mapper, SeededEvaluator):
                mapper.on_result = None
        fitted.hall_of_fame = hof
        fitted.final = getattr(fitted, "final", None)
        return fitted


# ---------------------------------------------------------------------------- data

def as_arrays(x: Any, y: Any, what: str) -> tuple[np.ndarray, np.ndarray]:
    """Validated float32 samples (N, ...) and int64 labels (N,) from arrays, an ``(x, y)``
    tuple or an iterable of ``(x, y)`` batches."""
    if y is None:
        if isinstance(x, tuple) and len(x) == 2:
            x, y = x
        elif isinstance(x, Iterable) and not hasattr(x, "shape"):
            batches = list(x)
            if not batches or not all(isinstance(b, tuple) and len(b) == 2 for b in batches):
                raise ValueError(f"fit: {what} given as an iterable must yield (x, y) batches")
            x = np.concatenate([B.to_numpy(b[0]) for b in batches])
            y = np.concatenate([B.to_numpy(b[1]) for b in batches])
        else:
            raise ValueError(f"fit: {what}: labels y are missing; pass fit(x, y), fit((x, y)) "
                             "or an iterable of (x, y) batches")
    x, y = B.to_numpy(x), B.to_numpy(y)
    if x.ndim not in KIND_OF_RANK:
        raise ValueError(f"fit: {what} must be (N, F), (N, C, L) or (N, C, H, W), got shape "
                         f"{x.shape}")
    if not np.issubdtype(x.dtype, np.number) or np.issubdtype(x.dtype, np.complexfloating):
        raise ValueError(f"fit: {what} must be real numbers, got dtype {x.dtype}")
    if y.ndim == 2 and y.shape[0] == x.shape[0] and y.shape[1] == 1:
        y = y[:, 0]                                # a column of labels
    elif y.ndim == 2 and y.shape[0] == x.shape[0]:
        if not np.issubdtype(y.dtype, np.number) or not np.all(np.isfinite(y)):
            raise ValueError(f"fit: {what}: one-hot labels must be finite numbers, got dtype "
                             f"{y.dtype}")
        empty = np.flatnonzero(y.max(axis=1) <= 0)
        if empty.size:
            raise ValueError(f"fit: {what}: one-hot label rows must mark a class, but "
                             f"{empty.size} rows are all zero (the first is row {empty[0]}); "
                             "pass integer labels 0..K-1 or fix those rows")
        y = y.argmax(axis=1)                       # one-hot labels
    if y.ndim != 1 or y.shape[0] != x.shape[0]:
        raise ValueError(f"fit: {what}: expected {x.shape[0]} labels (N,) or one-hot (N, K), "
                         f"got shape {y.shape}")
    if not np.issubdtype(y.dtype, np.integer):
        if np.issubdtype(y.dtype, np.floating) and np.all(y == np.round(y)):
            y = y.astype(np.int64)
        else:
            raise ValueError(f"fit: {what}: labels must be integers 0..K-1, got dtype {y.dtype}")
    if len(y) and (y.min() < 0):
        raise ValueError(f"fit: {what}: labels must be integers 0..K-1, got minimum {y.min()}; "
                         "remap them with numpy.unique(y, return_inverse=True)")
    if x.shape[0] < 2:
        raise ValueError(f"fit: {what} needs at least 2 samples, got {x.shape[0]}")
    if not np.all(np.isfinite(x)):
        raise ValueError(f"fit: {what} contains NaN or Inf values; clean or impute them first")
    with np.errstate(over="ignore"):        # checked just below
        x32 = np.ascontiguousarray(x, dtype=np.float32)
    if x32.dtype != x.dtype and not np.all(np.isfinite(x32)):
        big = float(np.abs(x[np.isfinite(x)]).max())
        raise ValueError(f"fit: {what} has values too large for float32 (up to {big:.3g}; "
                         "float32 holds up to 3.4e38), which training computes in; rescale "
                         "them (for example standardise each feature)")
    return x32, y.astype(np.int64)


def split_validation(x: np.ndarray, y: np.ndarray, fraction: float, seed: int,
                     max_samples: int | None = None) -> tuple[tuple, tuple]:
    """A stratified, seeded split: ``fraction`` of each class to validation (at least one
    sample of classes with two or more), and with ``max_samples``, at most that many in all
    (each class in proportion to its size)."""
    rng = np.random.default_rng([seed, 7])
    if max_samples is not None:
        fraction = min(fraction, max_samples / len(y))
    valid_idx = []
    for label in np.unique(y):
        idx = np.flatnonzero(y == label)
        take = min(len(idx) - 1, max(1, int(round(fraction * len(idx))))) if len(idx) > 1 else 0
        valid_idx.extend(rng.permutation(idx)[:take])
    mask = np.zeros(len(y), dtype=bool)
    mask[np.asarray(valid_idx, dtype=np.int64)] = True
    if mask.all() or not mask.any():
        raise ValueError(f"fit: cannot split {len(y)} samples into training and validation; "
                         "pass valid=(x_valid, y_valid)")
    return (x[~mask], y[~mask]), (x[mask], y[mask])


LR_SCHEDULES: dict[str, Callable | None] = {"constant": None, "cosine": cosine_schedule}
TIEBREAKS = ("size", "loss")        # see ClassifierFitness
OPTIMIZER_STATES = ("keep", "reset")


class GenerationBatches:
    """The training batches of a generation: the next slice of one shuffled stream.

    The stream runs through the training samples epoch after epoch, each epoch in an order
    drawn from the run seed and the epoch number alone. Generation ``g`` trains on the
    ``config.batches_at(g)`` batches that follow those of generations 1..g-1 (the seed's
    RepeatPartitionIterator), so every candidate of a generation trains on the same batches,
    a long run sees all the data, and the cost of a generation does not grow with the data.
    Stateless: every candidate, process and resumed run gets the same batches.
    ``itergeneration(g)`` (what TrainThenFitness asks for) returns them as a lazy sequence
    (``len()`` works; batches are gathered as they are iterated), optionally shifted by up to
    one pixel (``config.augment``).
    """

    def __init__(self, x: np.ndarray, y: np.ndarray, config: FitConfig) -> None:
        self.x, self.y, self.config = x, y, config
        self._device: tuple | None = None

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_device": None}    # workers move the data themselves

    def span(self, generation: int) -> tuple[int, int]:
        """``(first, count)``: the stream's batches that ``generation`` trains on."""
        n = len(self.y)
        first = sum(self.config.batches_at(g, n) for g in range(1, generation))
        return first, self.config.batches_at(generation, n)

    def itergeneration(self, generation: int | None) -> _StreamSlice:
        g = 1 if generation is None else int(generation)
        first, count = self.span(g)
        return _StreamSlice(self, g, first, count)

    def order(self, epoch: int) -> np.ndarray:
        """The sample order of ``epoch`` (0-based) of the stream."""
        return np.random.default_rng([self.config.seed, 1, epoch]).permutation(len(self.y))

    def indices(self, first: int, count: int) -> np.ndarray:
        """The sample indices of the stream's batches ``first .. first + count - 1``."""
        n, bs = len(self.y), self.batch_size
        start, stop = first * bs, (first + count) * bs
        epochs = range(start // n, (stop - 1) // n + 1)
        stream = np.concatenate([self.order(e) for e in epochs])
        offset = epochs[0] * n
        return stream[start - offset:stop - offset]

    @property
    def batch_size(self) -> int:
        return min(self.config.batch_size, len(self.y))

    def _device_arrays(self) -> tuple[Any, Any]:
        if self._device is None or self._device[0] != B.name():
            self._device = (B.name(), B.to_device(self.x), B.to_device(self.y))
        return self._device[1:]

    def __iter__(self):
        return iter(self.itergeneration(1))

    def __repr__(self) -> str:
        return f"GenerationBatches({len(self.y)} samples, batch {self.config.batch_size})"


class _StreamSlice:
    """The batches of one generation (see :class:`GenerationBatches`), gathered lazily."""

    def __init__(self, source: GenerationBatches, generation: int, first: int,
                 count: int) -> None:
        self.source, self.generation, self.first, self.count = source, generation, first, count

    def __len__(self) -> int:
        return self.count

    def __iter__(self):
        src, cfg, bs = self.source, self.source.config, self.source.batch_size
        order = src.indices(self.first, self.count)
        if B.name() != "numpy" and not cfg.augment:
            # On a GPU the samples move there once; batches are gathered there.
            x, y = src._device_arrays()
            index = B.to_device(order)
            for b in range(self.count):
                yield x[index[b * bs:(b + 1) * bs]], y[index[b * bs:(b + 1) * bs]]
            return
        rng = np.random.default_rng([cfg.seed, self.generation, 2])
        for b in range(self.count):
            idx = order[b * bs:(b + 1) * bs]
            xb = src.x[idx]
            if cfg.augment and xb.ndim == 4:
                xb = _shift(xb, rng)
            yield B.to_device(xb), B.to_device(src.y[idx])

    def __repr__(self) -> str:
        return (f"<generation {self.generation}: batches {self.first}..."
                f"{self.first + self.count - 1} of the stream>")


def _shift(xb: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Shift each image by -1, 0 or +1 pixels in each direction (zeros come in)."""
    n, _, h, w = xb.shape
    padded = np.pad(xb, ((0, 0), (0, 0), (1, 1), (1, 1)))
    dy, dx = rng.integers(0, 3, n), rng.integers(0, 3, n)
    out = np.empty_like(xb)
    for oy in range(3):
        for ox in range(3):
            sel = np.flatnonzero((dy == oy) & (dx == ox))
            if sel.size:
                out[sel] = padded[sel, :, oy:oy + h, ox:ox + w]
    return out


# ---------------------------------------------------------------------------- fitness

class ClassifierFitness(AbstractFitness):
    """Train on the generation's batches, then score on the validation set: the seed's
    ``accuracy + min(1e-3, 1 / nparams)`` (``tiebreak="size"``, default), or
    ``accuracy + 1e-3 / (1 + cross entropy)`` (``tiebreak="loss"``: among equally accurate
    models, the one that is right with more confidence). Accuracy always comes first: the extra
    term is below one validation sample's worth. Invalid: 0.0. ``keep_optimizer_state``: see
    :class:`~tinyevo.evolution.TrainThenFitness`."""

    def __init__(self, train: GenerationBatches, valid: tuple[np.ndarray, np.ndarray],
                 batch_size: int = 256, time_limit: float | None = None,
                 tiebreak: str = "size", lr_schedule: Callable | None = None,
                 keep_optimizer_state: bool = False) -> None:
        if tiebreak not in TIEBREAKS:
            raise ValueError(f"tiebreak must be one of {TIEBREAKS}, got {tiebreak!r}")
        xv, yv = valid
        self.valid = [(xv[i:i + batch_size], yv[i:i + batch_size])
                      for i in range(0, len(yv), batch_size)]
        self.nvalid = len(yv)
        self._device: tuple | None = None
        self.tiebreak = tiebreak
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
            pairs = iter(_StreamSlice(stream, 0, first, 64))
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


def _evaluator(mapper: Any, fitness: Any, progress: Callable | None,
               elapsed: Callable[[], float]) -> Callable:
    """``evaluate(population) -> fitted population`` through ``mapper`` (an evaluator of
    :mod:`tinyevo.app.executors`), reporting each finished candidate as its result arrives.

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

        if isinstance(mapper, SeededEvaluator):
            mapper.on_result = report if progress is not None else None
        members = [snapshot(c) if isinstance(c, FittedCandidate) else c
                   for c in population.members]
        fitted = Population(members, population.generation).evaluate(fitness, mapper)
        if not isinstance(mapper, SeededEvaluator) and progress is not None:
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


def _check_writable(mdir: Path) -> None:
    """Make sure checkpoints can be written to ``mdir`` before any training (a file in its
    place or a read-only folder was found a whole generation late)."""
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


def _integer(name: str, value: Any, least: int, optional: bool = False) -> int | None:
    """``value`` as an int >= ``least`` (NumPy integers welcome), else a ValueError saying so."""
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < least:
        raise ValueError(f"fit: {name} must be {'None or ' if optional else ''}an int >= "
                         f"{least}, got {value!r}")
    return int(value)


def _real(name: str, value: Any, low: float | None, high: float | None, expected: str,
          optional: bool = False, open_low: bool = False, open_high: bool = False
          ) -> float | None:
    """``value`` as a finite float within the bounds, else a ValueError saying ``expected``."""
    if value is None and optional:
        return None
    ok = (isinstance(value, numbers.Real) and not isinstance(value, bool)
          and math.isfinite(float(value)))
    if ok and low is not None:
        ok = float(value) > low if open_low else float(value) >= low
    if ok and high is not None:
        ok = float(value) < high if open_high else float(value) <= high
    if not ok:
        raise ValueError(f"fit: {name} must be {'None or ' if optional else ''}{expected}, "
                         f"got {value!r}")
    return float(value)


def _callbacks(callbacks: Any) -> list[Callable]:
    if not callable(callbacks) and not isinstance(callbacks, (Sequence, type(None))):
        raise TypeError(f"fit: callbacks must be a callable of the population or a list of "
                        f"them, got {type(callbacks).__name__}")
    cbs = [callbacks] if callable(callbacks) else list(callbacks or ())
    for cb in cbs:
        if not callable(cb):
            raise TypeError(f"fit: callbacks must be callables of the population, got "
                            f"{type(cb).__name__}")
    return cbs


def _jsonable_config(config: FitConfig) -> dict:
    d = asdict(config)
    d["widths"] = list(d["widths"])
    return d


# What runs did before each setting came.
_BEFORE_IT_EXISTED = {"optimizer_state": "reset", "valid_max": None, "final_training": 0.0,
                      "max_macs": None}


def _check_resume(state: dict, config: FitConfig, kind: str, sample_shape: tuple,
                  nclasses: int, mdir: Path) -> None:
    saved = dict(state.get("config", {}))
    mine = _jsonable_config(config)
    # A setting added after the checkpoint was written counts as its default there, except
    # where runs did something else before it existed: those go on with what is asked now.
    defaults = _jsonable_config(FitConfig())
    for k, before in _BEFORE_IT_EXISTED.items():
        if k not in saved:
            if mine[k] != before:
                log.warning("%s was written before the setting %s existed (its runs used %r); "
                            "the run goes on with %r, so it will not end as the older version "
                            "would have ended it", mdir, k, before, mine[k])
            saved[k] = mine[k]
    saved = {**defaults, **saved}
    differ = [k for k in mine if saved[k] != mine[k]]
    if (state.get("kind") != kind or list(state.get("sample_shape", [])) != list(sample_shape)
            or state.get("nclasses") != nclasses):
        raise ValueError(f"fit: the checkpoint in {mdir} is for {state.get('kind')} data of "
                         f"shape {state.get('sample_shape')} with {state.get('nclasses')} "
                         f"classes, not {kind} {list(sample_shape)} with {nclasses}; use "
                         "another mdir")
    if differ:
        raise ValueError(f"fit: the checkpoint in {mdir} was made with other settings ("
                         + ", ".join(f"{k}: {saved.get(k)!r} there, {mine[k]!r} now"
                                     for k in differ)
                         + "); resume with the same settings (and seed) or use another mdir")
