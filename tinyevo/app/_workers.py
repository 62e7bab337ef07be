"""The worker side of parallel evaluation, and the seeding and transport both sides share.

A worker process receives the run's fitness (with its data) once and keeps it; each task
carries one pickled candidate, that candidate's seed, and the run's generation starts so far,
and each result goes back with the worker's phase timings (what ``fit`` reports).
Before evaluating, the worker replays the starts it has not applied yet on its copy of the
fitness (``start_generation`` under each generation's seed, as the main process did on its
copy), so every copy hands out the same partition whatever tasks the worker missed.

Randomness drawn while a candidate is evaluated comes from the library generator reseeded for
that candidate (:func:`seeded`), its state put back afterwards; workers and the serial evaluator
compute with one BLAS thread, so that every process does the same floating-point work.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import threading
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from tinyevo import backend as B
from tinyevo.evolution.fitness import start_generation
from tinyevo.evolution.population import evaluate_candidate
from tinyevo.evolution.timing import phase, take

BLAS_ENV = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
            "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS", "TINYEVO_NUM_THREADS")


@dataclass
class Task:
    """One candidate to evaluate, and what a worker needs to be in step with the run."""

    token: str  # the run: a worker holds the fitness of one run at a time
    rounds: tuple  # ((generation, seed), ...): the run's generation starts so far
    generation: int
    index: int
    seed: tuple
    candidate: bytes  # pickled with dumps
    parent_pid: int
    payload: bytes | None = None  # the pickled fitness, for a worker that has not got it
    backend: str = "numpy"  # the parent's array backend, which the worker uses too


@dataclass
class _WorkerRun:
    fitness: Any
    applied: int = 0  # generation starts already replayed on this copy


_WORKER: dict[str, _WorkerRun] = {}
_WORKER_LOCK = threading.Lock()  # one candidate at a time per process: shared generator, data


def init_worker(token: str, payload: bytes, backend: str = "numpy") -> None:
    """A process pool's initializer: one thread, the parent's backend, the run's fitness."""
    pin_threads()
    _use_backend(backend)
    _WORKER.clear()
    with phase("busy"), phase("serialise"):   # reported with the worker's first result
        _WORKER[token] = _WorkerRun(pickle.loads(payload))


def dask_task(task: Task, payload: bytes) -> tuple:
    """:func:`run_task` with the fitness Dask scattered to the worker."""
    return run_task(task, payload)


def run_task(task: Task, payload: bytes | None = None) -> tuple:
    """Evaluate one candidate in a worker: ('ok', fitted, timings), ('need', None, timings) or
    ('error', ...). ``timings``: the worker's phase totals since its last result
    (:mod:`tinyevo.evolution.timing`: "busy", "serialise", "train", "validate" ...), for the
    parent to add to its own."""
    if os.getpid() != task.parent_pid:
        pin_threads()
    _use_backend(task.backend)
    with _WORKER_LOCK:
        with phase("busy"):
            with phase("serialise"):
                state = _WORKER.get(task.token)
                if state is None:
                    payload = payload if payload is not None else task.payload
                    if payload is None:
                        return ("need", None, take())
                    _WORKER.clear()  # one run at a time: free the last run's data
                    state = _WORKER[task.token] = _WorkerRun(pickle.loads(payload))
                candidate = pickle.loads(task.candidate)
                for generation, seed in task.rounds[state.applied:]:
                    with seeded(seed):
                        start_generation(state.fitness, generation)
                state.applied = max(state.applied, len(task.rounds))
            out = _guarded(lambda: _evaluate_seeded(state.fitness, task, candidate))
        # The phase totals go back with every outcome, so that none stays behind in a worker
        # to be counted in the next run on it.
        return (*out, take())


def _evaluate_seeded(fitness: Any, task: Task, candidate: Any) -> Any:
    with seeded(task.seed):
        return evaluate_candidate(fitness, task.generation, candidate)


def _use_backend(backend: str) -> None:
    """Candidates are evaluated on the parent's backend (CuPy arrays need CuPy selected to be
    recognised); selecting it in a worker initialises CUDA there, after the fork."""
    if B.name() != backend:
        B.use(backend)


def _guarded(call: Callable[[], Any]) -> tuple:
    try:
        result = call()
        with phase("serialise"):
            return ("ok", dumps(result))
    except Exception as e:  # noqa: BLE001 - raised again in the main process, as in a serial run
        return ("error", e, traceback.format_exc())


# --------------------------------------------------------------------- seeding
@contextlib.contextmanager
def seeded(seed: tuple) -> Iterator[None]:
    """The library generator reseeded from ``seed`` (a tuple of ints), its state put back after."""
    gen = B.rng()
    saved = gen.bit_generator.state
    gen.bit_generator.state = type(gen.bit_generator)(np.random.SeedSequence(seed)).state
    try:
        yield
    finally:
        gen.bit_generator.state = saved


# --------------------------------------------------------------------- threads
_PINNED: list[bool] = []


def pin_threads() -> None:
    """One BLAS thread and one tinyevo thread in this worker process (once)."""
    if _PINNED:
        return
    _PINNED.append(True)
    for name in BLAS_ENV:
        os.environ[name] = "1"
    B.set_num_threads(1)
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # the environment set before spawning covers BLAS then
        return
    threadpool_limits(1)


@contextlib.contextmanager
def one_blas_thread() -> Iterator[None]:
    """BLAS limited to one thread in this process for the block (needs threadpoolctl)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        yield
        return
    with threadpool_limits(1, user_api="blas"):
        yield


@contextlib.contextmanager
def single_threaded_environ() -> Iterator[None]:
    """The BLAS thread variables set to 1 while worker processes are spawned (they copy it)."""
    saved = {name: os.environ.get(name) for name in BLAS_ENV}
    os.environ.update({name: "1" for name in BLAS_ENV})
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


# --------------------------------------------------------------------- transport
def dumps(obj: Any) -> bytes:
    """Pickle for inter-process transport only (never for files). Protocol 4, not 5: NumPy
    unpickles protocol 5 arrays as views of the pickle's buffer, which a model copy cannot share
    copy-on-write (:func:`tinyevo.layers.share` copies views), so the children of a model that
    came back from a worker would lose their inherited arrays' identity, and with it the
    optimiser state that goes with them (:meth:`tinyevo.optimizers.Optimizer.inherit`)."""
    return pickle.dumps(obj, protocol=4)
