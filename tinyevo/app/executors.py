"""Parallel evaluation of a population's fitness: in this process, local processes or Dask.

Every evaluator here implements the evaluator contract of :mod:`tinyevo.evolution.population`,
``evaluator.evaluate(fitness, generation, members) -> [FittedCandidate, ...]``, and is what
``Population.evaluate(fitness, evaluator)`` and ``evolve(..., evaluator=)`` take.
``make_evaluator`` turns what a user asks for into one:

    >>> with make_evaluator(workers=2) as evaluator:                     # doctest: +SKIP
    ...     population = te.evolve(strategy, fitness, population, evaluator=evaluator)

Every evaluator defined here gives the same fitness values and the same trained weights as
:class:`SerialEvaluator` for the same library seed (see docs/parallel.md and
:class:`SeededEvaluator`): candidates are evaluated under seeds of their own, and each
generation's data is started (``fitness.start_generation``) under a seed of its own, in this
process and in every worker alike.

The fitness object (which holds the training and validation data) travels to each worker once per
run: in the process pool's initializer, by ``client.scatter`` on Dask, or with the run's first
tasks, one per worker (a worker that got none asks once). Tasks carry only a candidate.

A worker that dies while evaluating (killed, out of memory) does not lose the generation: its
candidates are retried (``retries`` times) and a candidate that keeps failing gets the fitness
object's ``invalidfitness`` (else 0.0), the reason logged on the "tinyevo" logger. ``timeout``
bounds each candidate's evaluation in seconds; a process-pool worker past it is terminated.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import multiprocessing
import os
from typing import Any

from tinyevo import backend as B
from tinyevo.app._dask import DaskEvaluator, is_dask_client, is_dask_executor
from tinyevo.app._scheduling import PoolEvaluator, Run, SeededEvaluator, multiply_adds
from tinyevo.app._workers import (
    Task,
    init_worker,
    one_blas_thread,
    run_task,
    seeded,
    single_threaded_environ,
)
from tinyevo.evolution.population import Evaluator, MapEvaluator, evaluate_candidate
from tinyevo.evolution.timing import phase

__all__ = [
    "make_evaluator", "SeededEvaluator", "SerialEvaluator", "ProcessEvaluator", "DaskEvaluator",
    "ExecutorEvaluator", "multiply_adds",
]


def make_evaluator(executor: Any = None, *, workers: int | None = None,
                   dask_scheduler: str | None = None, retries: int = 2,
                   timeout: float | None = None, seed: int | None = None) -> Evaluator:
    """The evaluator for what the user asked; close it when done (``with``).

    ``executor`` is one of (each told by its type):

    - None: by ``workers`` (> 1: a :class:`ProcessEvaluator`) or ``dask_scheduler`` (a
      :class:`DaskEvaluator`), else a :class:`SerialEvaluator`;
    - an int: that many local worker processes (1: serial);
    - a str: a Dask scheduler address such as "tcp://host:8786";
    - a ``distributed.Client``, or its ``client.get_executor()``: a :class:`DaskEvaluator`;
    - any other ``concurrent.futures.Executor``: an :class:`ExecutorEvaluator`;
    - an evaluator (an object with ``evaluate(fitness, generation, members)``): itself;
    - a map function ``map_fn(fn, items)`` (``map``, ``pool.map``): a ``MapEvaluator``, which
      adds no seeding (results then follow the map, not :class:`SerialEvaluator`).

    ``retries``, ``timeout`` and ``seed`` go to the evaluators made here.

        >>> make_evaluator()
        SerialEvaluator()
    """
    opts = {"retries": retries, "timeout": timeout, "seed": seed}
    if executor is None:
        return _by_keywords(workers, dask_scheduler, opts)
    if workers is not None or dask_scheduler is not None:
        raise ValueError("make_evaluator: pass either executor, or workers/dask_scheduler, "
                         f"not both (got executor={executor!r}, workers={workers!r}, "
                         f"dask_scheduler={dask_scheduler!r})")
    if isinstance(executor, int) and not isinstance(executor, bool):
        return _by_keywords(executor, None, opts)
    if isinstance(executor, str):
        if ":" not in executor:
            raise ValueError(f"make_evaluator: expected a Dask scheduler address such as "
                             f"'tcp://host:8786', got {executor!r}")
        return DaskEvaluator(executor, **opts)
    if is_dask_client(executor):
        return DaskEvaluator(executor, **opts)
    if is_dask_executor(executor):
        return DaskEvaluator(executor._client, **opts)
    if isinstance(executor, cf.Executor):
        return ExecutorEvaluator(executor, **opts)
    if isinstance(executor, Evaluator):
        return executor
    if callable(executor):
        return MapEvaluator(executor)
    raise TypeError(f"make_evaluator: expected None, a worker count, a Dask scheduler address "
                    f"or distributed.Client, a concurrent.futures.Executor, an evaluator (with "
                    f"evaluate(fitness, generation, members)) or a map function, got "
                    f"{type(executor).__name__} {executor!r}")


def _by_keywords(workers: int | None, dask_scheduler: str | None, opts: dict) -> Evaluator:
    if dask_scheduler is not None and workers is not None:
        raise ValueError("make_evaluator: workers (local processes) and dask_scheduler (a "
                         "cluster) exclude each other; start the Dask workers with "
                         "`dask worker ADDRESS --nworkers N --nthreads 1` instead")
    if dask_scheduler is not None:
        return DaskEvaluator(dask_scheduler, **opts)
    if workers is None:
        return SerialEvaluator(opts["seed"])
    if not isinstance(workers, int) or isinstance(workers, bool) or workers < 1:
        raise ValueError(f"workers must be a positive int, got {workers!r}")
    return ProcessEvaluator(workers, **opts) if workers > 1 else SerialEvaluator(opts["seed"])


class SerialEvaluator(SeededEvaluator):
    """In-process, one candidate after the other: ``map`` with per-candidate seeding.

    Candidates are trained in place, as with ``Population.evaluate``'s default. Two differences
    make its results those of the parallel evaluators, bit for bit: evaluation-time randomness
    comes from a per-candidate seed (see the module doc), and BLAS runs with one thread while
    candidates are evaluated, as in the workers (a multi-threaded OpenBLAS matrix product
    differs from a single-threaded one in the last bits). ``single_thread=False`` keeps the
    process's BLAS threads (faster for large models on an idle machine; results then differ
    slightly).

        >>> [c.fitness for c in SerialEvaluator().evaluate(lambda c: c * 2, 1, [1, 2])]
        [2, 4]
    """

    workers = 1

    def __init__(self, seed: int | None = None, single_thread: bool = True) -> None:
        super().__init__(seed)
        self.single_thread = bool(single_thread)

    def _evaluate(self, fitness: Any, generation: int, members: list, seeds: list) -> list:
        out = []
        with one_blas_thread() if self.single_thread else contextlib.nullcontext():
            for i, (member, seed) in enumerate(zip(members, seeds)):
                with seeded(seed):
                    with phase("busy"):
                        fitted = evaluate_candidate(fitness, generation, member)
                    out.append(self._report(i, fitted))
        return out

    def __repr__(self) -> str:
        return "SerialEvaluator()" if self.seed is None else f"SerialEvaluator(seed={self.seed})"


class ProcessEvaluator(PoolEvaluator):
    """A local pool of ``workers`` processes (default: the CPU count).

    Each worker uses one BLAS thread and one tinyevo thread, so workers do not fight over cores.
    Workers start by 'forkserver' where the platform has it (else 'spawn'): both are safe with
    threads in the parent, and the fork server has imported tinyevo once, so a pool (re)starts
    in a fraction of a second. A pool started while the backend is CuPy uses 'spawn' (the fork
    server imports ``__main__`` and tinyevo, which may initialise CUDA, after which forked
    children cannot use the GPU); ``mp_context="fork"`` is refused then. The fitness object
    reaches each worker once, through the pool's initializer. A pool broken by a dead worker,
    or a worker stuck past ``timeout``, is replaced and the unfinished candidates are
    resubmitted.

        >>> with ProcessEvaluator(workers=2, timeout=600) as evaluator:   # doctest: +SKIP
        ...     population = population.evaluate(fitness, evaluator)
    """

    def __init__(self, workers: int | None = None, *, retries: int = 2,
                 timeout: float | None = None, seed: int | None = None,
                 mp_context: str | None = None) -> None:
        super().__init__(retries, timeout, seed)
        if workers is None:
            workers = os.cpu_count() or 1
        if not isinstance(workers, int) or isinstance(workers, bool) or workers < 1:
            raise ValueError(f"workers must be a positive int or None, got {workers!r}")
        self.workers = workers
        self._chosen_context = mp_context
        if mp_context is None:
            methods = multiprocessing.get_all_start_methods()
            mp_context = "forkserver" if "forkserver" in methods else "spawn"
        self.mp_context = mp_context
        self._pool: cf.ProcessPoolExecutor | None = None
        self._spare = True  # one task queued beyond the workers (see _capacity)

    def _start_method(self) -> str:
        """The start method for a pool started now: 'spawn' where the backend is CuPy (CUDA
        does not survive a fork once initialised), unless the caller chose one."""
        if B.name() == "numpy":
            return self.mp_context
        if self._chosen_context is None:
            return "spawn"
        if self._chosen_context == "fork":
            raise ValueError("ProcessEvaluator: mp_context='fork' cannot start workers for the "
                             f"{B.name()} backend (CUDA does not survive a fork); use 'spawn' "
                             "or leave mp_context unset")
        return self._chosen_context

    _shared_failures = True

    def _prepare(self, run: Run) -> None:
        self._spare = True  # a new generation
        if self._pool is None:
            self._start_pool(run)
        # A later run's fitness reaches the running workers with the run's first tasks.

    def _start_pool(self, run: Run) -> None:
        self._shutdown_pool()
        method = self._start_method()
        ctx = multiprocessing.get_context(method)
        if method == "forkserver":
            # Workers fork from a server that has imported tinyevo once: a (re)start takes
            # ~0.1 s instead of seconds. Takes effect when the server starts (first pool).
            ctx.set_forkserver_preload(["__main__", __name__])
        with single_threaded_environ():  # read by BLAS at import in spawned workers
            pool = cf.ProcessPoolExecutor(self.workers, mp_context=ctx,
                                          initializer=init_worker,
                                          initargs=(run.token, run.payload, B.name()))
            # Start every worker now, inside the environment above and before any candidate's
            # clock runs (submit spawns a process while none is idle).
            pings = [pool.submit(os.getpid) for _ in range(self.workers)]
        self._pool = pool
        run.delivered = True
        try:
            for f in pings:
                f.result()
        except cf.process.BrokenProcessPool as e:
            self._shutdown_pool()
            raise RuntimeError("ProcessEvaluator: the worker processes failed to start (see "
                               "the error above); is the fitness importable in a fresh "
                               "interpreter?") from e

    def _capacity(self) -> int:
        # Without deadlines (which count from submission), one task more than the workers: it
        # waits in the pool's queue, so a worker that finishes takes it at once instead of
        # waiting for this process to see the result and hand it the next. Not after a worker
        # died in this generation: a task that only waited would be charged for the crash, and
        # a crash with one task in flight is that task's.
        return self.workers + (self.timeout is None and self._spare)

    def _submit(self, task: Task, with_payload: bool) -> cf.Future:
        if with_payload:
            task = self._with_payload(task)
        return self._pool.submit(run_task, task)

    def _failure_kind(self, exc: BaseException) -> str:
        return "pool" if isinstance(exc, cf.process.BrokenProcessPool) else "task"

    def _recover(self) -> None:
        self._spare = False  # for the rest of this generation
        self._start_pool(self._run)

    def _stop(self, expired: list[cf.Future], inflight: list[cf.Future]) -> bool:
        # No public way to tell which process runs a task: terminate them all and start afresh.
        self._terminate_pool()
        self._start_pool(self._run)
        return True

    def _terminate_pool(self) -> None:
        pool, self._pool = self._pool, None
        if pool is None:
            return
        procs = list((getattr(pool, "_processes", None) or {}).values())
        for p in procs:
            p.terminate()
        pool.shutdown(wait=False, cancel_futures=True)
        for p in procs:
            p.join(10)

    def _shutdown_pool(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)

    def close(self) -> None:
        """Shut the worker processes down."""
        self._shutdown_pool()
        self._run = None

    def __repr__(self) -> str:
        return (f"ProcessEvaluator(workers={self.workers}, retries={self.retries}, "
                f"timeout={self.timeout})")


class ExecutorEvaluator(PoolEvaluator):
    """Any ``concurrent.futures.Executor`` the caller owns (not shut down here).

    The fitness reaches the workers with the run's first tasks, one per worker where the
    executor tells how many (``_max_workers``); a worker without it asks once.
    A broken executor cannot be rebuilt here: use :class:`ProcessEvaluator` for a process pool
    that survives dead workers. Thread pools share the library generator and run one candidate
    at a time.

        >>> with cf.ProcessPoolExecutor(2) as pool:                        # doctest: +SKIP
        ...     population = population.evaluate(fitness, ExecutorEvaluator(pool))
    """

    def __init__(self, executor: cf.Executor, *, retries: int = 2, timeout: float | None = None,
                 seed: int | None = None) -> None:
        super().__init__(retries, timeout, seed)
        if not isinstance(executor, cf.Executor):
            raise TypeError(f"ExecutorEvaluator: expected a concurrent.futures.Executor, got "
                            f"{type(executor).__name__}")
        self.executor = executor

    @property
    def workers(self) -> int | None:
        """The candidates evaluated at once: the executor's worker processes, where it tells
        (``_max_workers``); 1 for a thread pool, whose threads share one process and run one
        candidate at a time."""
        if isinstance(self.executor, cf.ThreadPoolExecutor):
            return 1
        return self._pool_size()

    def _pool_size(self) -> int | None:
        n = getattr(self.executor, "_max_workers", None)
        return n if isinstance(n, int) and n > 0 else None

    def _capacity(self) -> int:
        return self._pool_size() or 1 << 30

    def _submit(self, task: Task, with_payload: bool) -> cf.Future:
        if with_payload:
            task = self._with_payload(task)
        try:
            return self.executor.submit(run_task, task)
        except cf.BrokenExecutor as e:
            raise RuntimeError(f"ExecutorEvaluator: the executor {self.executor!r} is broken "
                               "(a worker died) and cannot be rebuilt from here; use "
                               "make_evaluator(workers=N) for a pool that recovers") from e

    def _failure_kind(self, exc: BaseException) -> str:
        if isinstance(exc, cf.BrokenExecutor):
            raise RuntimeError(f"ExecutorEvaluator: the executor {self.executor!r} broke (a "
                               "worker died); use make_evaluator(workers=N) for a pool that "
                               "recovers") from exc
        return "task"
