"""Parallel evaluation of a population's fitness: local processes or a Dask cluster.

An evaluator is a *mapper*: ``evaluator(fn, members)`` replaces ``map`` in
``Population.evaluate`` and ``evolve``. ``make_evaluator`` turns what a user asks for (nothing, a
worker count, a scheduler address, a Dask client, any ``concurrent.futures.Executor``) into one:

    >>> with make_evaluator(workers=2) as mapper:                        # doctest: +SKIP
    ...     population = te.evolve(strategy, fitness, population, mapper=mapper)

Every evaluator gives the same fitness values and the same trained weights as
:class:`SerialEvaluator` for the same library seed (see docs/parallel.md):

- randomness drawn while a candidate is evaluated (dropout masks, shuffled batches) comes from the
  library generator reseeded for that candidate from (run key, generation, candidate index), and
  the generator's state is put back afterwards, so the GA's own draws do not depend on evaluation;
- generation-aware data iterators found in the fitness object (``StatefulGenerationIter``) are
  advanced once per generation, before any candidate, under a seed of their own, in the main
  process and in every worker alike, so all of them train on the same partition.

The fitness object (which holds the training and validation data) travels to each worker once per
run: in the process pool's initializer, by ``client.scatter`` on Dask, or on the first task a
worker of any other executor receives. Tasks carry only a candidate.

A worker that dies while evaluating (killed, out of memory) does not lose the generation: its
candidates are retried (``retries`` times) and a candidate that keeps failing gets the fitness
object's ``invalidfitness`` (else 0.0), the reason logged on the "tinyevo" logger. ``timeout``
bounds each candidate's evaluation in seconds; a process-pool worker past it is terminated.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import dataclasses
import functools
import hashlib
import logging
import multiprocessing
import os
import pickle
import threading
import time
import traceback
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from tinyevo import backend as B
from tinyevo.evolution.candidate import FittedCandidate
from tinyevo.evolution.fitness import AbstractFitness
from tinyevo.evolution.population import evaluate_candidate

__all__ = [
    "make_evaluator", "make_mapper", "Evaluator", "SerialEvaluator", "ProcessEvaluator",
    "DaskEvaluator", "ExecutorEvaluator",
]

log = logging.getLogger("tinyevo")

_BLAS_ENV = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
             "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS", "TINYEVO_NUM_THREADS")


def make_evaluator(executor: Any = None, *, workers: int | None = None,
                   dask_scheduler: str | None = None, retries: int = 2,
                   timeout: float | None = None, seed: int | None = None) -> Any:
    """The evaluator (a mapper for ``evolve``/``Population.evaluate``) for what the user asked.

    ``executor`` may be None or "serial", "processes", an int (that many local processes), a
    ``distributed.Client``, a scheduler address "tcp://host:8786", any
    ``concurrent.futures.Executor`` (``client.get_executor()`` included), an :class:`Evaluator`
    (returned as is) or any other callable mapper (returned as is). Without ``executor``,
    ``workers`` > 1 gives a :class:`ProcessEvaluator` and ``dask_scheduler`` a
    :class:`DaskEvaluator`; otherwise a :class:`SerialEvaluator`. Close it when done (``with``).

        >>> make_evaluator()
        SerialEvaluator()
    """
    opts = {"retries": retries, "timeout": timeout, "seed": seed}
    if executor is not None and (workers is not None or dask_scheduler is not None):
        raise ValueError("make_evaluator: pass either executor, or workers/dask_scheduler, "
                         f"not both (got executor={executor!r}, workers={workers!r}, "
                         f"dask_scheduler={dask_scheduler!r})")
    if executor is None:
        if dask_scheduler is not None and workers is not None:
            raise ValueError("make_evaluator: workers (local processes) and dask_scheduler (a "
                             "cluster) exclude each other; start the Dask workers with "
                             "`dask worker ADDRESS --nworkers N --nthreads 1` instead")
        if dask_scheduler is not None:
            return DaskEvaluator(dask_scheduler, **opts)
        if workers is not None:
            if not isinstance(workers, int) or isinstance(workers, bool) or workers < 1:
                raise ValueError(f"workers must be a positive int, got {workers!r}")
            return ProcessEvaluator(workers, **opts) if workers > 1 else SerialEvaluator(seed)
        return SerialEvaluator(seed)
    if isinstance(executor, Evaluator):
        return executor
    if isinstance(executor, str):
        if executor == "serial":
            return SerialEvaluator(seed)
        if executor == "processes":
            return ProcessEvaluator(None, **opts)
        if "://" in executor or ":" in executor:
            return DaskEvaluator(executor, **opts)
        raise ValueError(f"make_evaluator: unknown executor {executor!r}; expected 'serial', "
                         "'processes' or a Dask scheduler address such as 'tcp://host:8786'")
    if isinstance(executor, int) and not isinstance(executor, bool):
        return make_evaluator(workers=executor, retries=retries, timeout=timeout, seed=seed)
    if _is_dask_client(executor):
        return DaskEvaluator(executor, **opts)
    if _is_dask_client(getattr(executor, "_client", None)):  # client.get_executor()
        return DaskEvaluator(executor._client, **opts)
    if isinstance(executor, cf.Executor):
        return ExecutorEvaluator(executor, **opts)
    if callable(executor):
        return executor
    raise TypeError(f"make_evaluator: expected None, 'serial', 'processes', a worker count, a "
                    f"Dask client or address, or a concurrent.futures.Executor, got "
                    f"{type(executor).__name__}")


make_mapper = make_evaluator  # the name fit() asks for


class Evaluator:
    """Base class: ``evaluator(fn, members)`` is ``list(map(fn, members))``, evaluated its way.

    ``fn`` is what ``Population.evaluate`` passes: ``partial(evaluate_candidate, fitness,
    generation)``; any other picklable callable of one candidate works too (then it is sent with
    every task and generations are counted by call).

    ``on_result(index, result)``, where set, is called in this process as each member's result
    arrives (in completion order): the hook for progress displays.
    """

    on_result: Callable[[int, Any], None] | None = None

    def __init__(self, seed: int | None = None) -> None:
        if seed is not None and (not isinstance(seed, int) or seed < 0):
            raise ValueError(f"seed must be None or a non-negative int, got {seed!r}")
        self.seed = seed
        self._calls = 0

    def _report(self, index: int, result: Any) -> Any:
        if self.on_result is not None:
            self.on_result(index, result)
        return result

    def __call__(self, fn: Callable, members: Iterable) -> list:
        members = list(members)
        job = _Job.of(fn, self._calls)
        self._calls += 1
        key = self.seed if self.seed is not None else _peek_key()
        job.round_seed = (key, job.key, 0)
        self._start(job)  # before the main copy advances: workers get the fitness as it was
        with _seeded(job.round_seed):  # the main copy stays as a serial run leaves it
            _advance(job.fitness, job.generation)
        seeds = [(key, job.key, i + 1) for i in range(len(members))]
        return self._evaluate(job, members, seeds)

    def _start(self, job: _Job) -> None:
        """Get the workers ready for ``job`` (a no-op in process)."""

    def _evaluate(self, job: _Job, members: list, seeds: list) -> list:
        raise NotImplementedError

    def close(self) -> None:
        """Release the workers (a no-op for the serial evaluator)."""

    def __enter__(self) -> Evaluator:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class SerialEvaluator(Evaluator):
    """In-process, one candidate after the other: ``map`` with per-candidate seeding.

    Candidates are trained in place, as with ``mapper=None``. Two differences make its results
    those of the parallel evaluators, bit for bit: evaluation-time randomness comes from a
    per-candidate seed (see the module doc), and BLAS runs with one thread while candidates are
    evaluated, as in the workers (a multi-threaded OpenBLAS matrix product differs from a
    single-threaded one in the last bits). ``single_thread=False`` keeps the process's BLAS
    threads (faster for large models on an idle machine; results then differ slightly).

        >>> SerialEvaluator()(lambda c: c * 2, [1, 2])
        [2, 4]
    """

    def __init__(self, seed: int | None = None, single_thread: bool = True) -> None:
        super().__init__(seed)
        self.single_thread = bool(single_thread)

    def _evaluate(self, job: _Job, members: list, seeds: list) -> list:
        out = []
        with _one_blas_thread() if self.single_thread else contextlib.nullcontext():
            for i, (member, seed) in enumerate(zip(members, seeds)):
                with _seeded(seed):
                    out.append(self._report(i, job.fn(member)))
        return out

    def __repr__(self) -> str:
        return "SerialEvaluator()" if self.seed is None else f"SerialEvaluator(seed={self.seed})"


class _PoolEvaluator(Evaluator):
    """Shared scheduling: bounded in-flight tasks, deadlines, retries, invalid fitness."""

    def __init__(self, retries: int = 2, timeout: float | None = None,
                 seed: int | None = None) -> None:
        super().__init__(seed)
        if not isinstance(retries, int) or retries < 0:
            raise ValueError(f"retries must be a non-negative int, got {retries!r}")
        if timeout is not None and not timeout > 0:
            raise ValueError(f"timeout must be None or > 0 seconds, got {timeout!r}")
        self.retries, self.timeout = retries, timeout
        self._run: _Run | None = None

    # --- hooks for the subclasses
    def _prepare(self, run: _Run) -> None:
        """Make the workers ready for ``run`` (start a pool, scatter the fitness)."""

    def _capacity(self) -> int:
        raise NotImplementedError

    def _submit(self, task: _Task, with_payload: bool) -> cf.Future:
        raise NotImplementedError

    def _failure_kind(self, exc: BaseException) -> str:
        """'pool' (every task in flight is lost), 'task' (this one is) or 'final' (no retry)."""
        return "task"

    def _recover(self) -> None:
        """Called after a 'pool' failure, before resubmitting."""

    def _stop(self, expired: list[cf.Future], inflight: list[cf.Future]) -> bool:
        """Stop the expired tasks; True when the others in flight were lost too."""
        for f in expired:
            f.cancel()
        return False

    # --- the loop
    _shared_failures = False  # True where one dead worker takes every task in flight with it

    def _start(self, job: _Job) -> None:
        run = self._run_for(job)
        self._prepare(run)
        if job.fitness is not None:
            run.rounds.append((job.generation, job.round_seed))

    def _evaluate(self, job: _Job, members: list, seeds: list) -> list:
        run = self._run
        tasks = [_Task(run.token, tuple(run.rounds), job.generation, i, seed, _dumps(member),
                       os.getpid(), job.fitness is None, backend=B.name())
                 for i, (member, seed) in enumerate(zip(members, seeds))]
        inflight: dict[cf.Future, tuple[int, float | None]] = {}
        try:
            return self._schedule(job, members, tasks, inflight)
        finally:
            for fut in inflight:
                fut.cancel()

    def _schedule(self, job: _Job, members: list, tasks: list, inflight: dict) -> list:
        results: list[Any] = [None] * len(tasks)
        failures = [0] * len(tasks)
        isolated: set[int] = set()  # suspects of killing a worker: run alone so a crash is theirs
        todo = deque(range(len(tasks)))
        resend = set()  # tasks whose worker asked for the fitness payload
        capacity = max(1, self._capacity())
        while todo or inflight:
            while todo and len(inflight) < capacity:
                i = todo[0]
                if i in isolated and inflight:
                    break
                todo.popleft()
                fut = self._submit(tasks[i], with_payload=i in resend)
                deadline = None if self.timeout is None else time.monotonic() + self.timeout
                inflight[fut] = (i, deadline)
                if i in isolated:
                    break
            deadlines = [d for _, d in inflight.values() if d is not None]
            wait_s = None if not deadlines else max(0.0, min(deadlines) - time.monotonic())
            done, _ = cf.wait(list(inflight), timeout=wait_s, return_when=cf.FIRST_COMPLETED)
            lost: list[tuple[int, str]] = []
            pool_broken = False
            for fut in done:
                i, _ = inflight.pop(fut)
                try:
                    out = fut.result()
                except BaseException as e:  # noqa: BLE001 - the worker, not the candidate, failed
                    kind = self._failure_kind(e)
                    reason = f"{type(e).__name__}: {e}".rstrip(": ")
                    if kind == "final":
                        results[i] = self._report(i, _invalid(job, members[i], reason))
                    else:
                        lost.append((i, reason))
                        pool_broken = pool_broken or kind == "pool"
                    continue
                status = out[0]
                if status == "ok":
                    results[i] = self._report(i, pickle.loads(out[1]))
                elif status == "need":
                    resend.add(i)
                    todo.appendleft(i)
                else:
                    raise out[1] from _RemoteTraceback(out[2])
            if pool_broken:  # every task still in flight went down with the pool
                lost.extend((i, "its worker process died") for i, _ in inflight.values())
                inflight.clear()
                self._recover()
            crashed_alone = len(lost) == 1 and not inflight
            for i, reason in sorted(lost, reverse=True):
                failures[i] += 1
                if failures[i] <= self.retries:
                    log.warning("candidate %d of generation %s: worker lost (%s); retry %d of %d",
                                i, job.generation, reason, failures[i], self.retries)
                    todo.appendleft(i)
                elif crashed_alone or i in isolated or not self._shared_failures:
                    results[i] = self._report(i, _invalid(
                        job, members[i], f"the worker failed {failures[i]} times evaluating it, "
                        f"last: {reason}"))
                else:
                    isolated.add(i)
                    todo.appendleft(i)
            now = time.monotonic()
            expired = [f for f, (_, d) in inflight.items()
                       if d is not None and d <= now and not f.done()]
            if expired:
                for f in expired:
                    i, _ = inflight.pop(f)
                    results[i] = self._report(i, _invalid(
                        job, members[i], f"its evaluation exceeded the time limit of "
                        f"{self.timeout} s"))
                if self._stop(expired, list(inflight)):
                    todo.extendleft(sorted((i for i, _ in inflight.values()), reverse=True))
                    inflight.clear()
        return results

    def _run_for(self, job: _Job) -> _Run:
        """The run this fitness belongs to: a new token and payload when the fitness changes."""
        subject = job.fitness if job.fitness is not None else job.fn
        if self._run is None or self._run.subject is not subject:
            try:
                payload = _dumps(subject)
            except Exception as e:
                raise TypeError(
                    f"{type(self).__name__}: the fitness {_short(subject)} cannot be pickled "
                    f"for the workers ({type(e).__name__}: {e}); define fitness functions at "
                    "module level, and hand the evaluator a fitness that has not been used yet (a "
                    "StatefulGenerationIter that has started holds a live generator)") from e
            self._run = _Run(subject, uuid.uuid4().hex, payload, [])
        return self._run

    def __repr__(self) -> str:
        return f"{type(self).__name__}(retries={self.retries}, timeout={self.timeout})"


class ProcessEvaluator(_PoolEvaluator):
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

        >>> with ProcessEvaluator(workers=2, timeout=600) as mapper:      # doctest: +SKIP
        ...     population = population.evaluate(fitness, mapper=mapper)
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

    def _prepare(self, run: _Run) -> None:
        if self._pool is None:
            self._start_pool(run)
        # A later run's fitness reaches the running workers on request (their first task).

    def _start_pool(self, run: _Run) -> None:
        self._shutdown_pool()
        method = self._start_method()
        ctx = multiprocessing.get_context(method)
        if method == "forkserver":
            # Workers fork from a server that has imported tinyevo once: a (re)start takes
            # ~0.1 s instead of seconds. Takes effect when the server starts (first pool).
            ctx.set_forkserver_preload(["__main__", __name__])
        with _single_threaded_environ():  # read by BLAS at import in spawned workers
            pool = cf.ProcessPoolExecutor(self.workers, mp_context=ctx,
                                          initializer=_init_worker,
                                          initargs=(run.token, run.payload, B.name()))
            # Start every worker now, inside the environment above and before any candidate's
            # clock runs (submit spawns a process while none is idle).
            pings = [pool.submit(os.getpid) for _ in range(self.workers)]
        self._pool = pool
        try:
            for f in pings:
                f.result()
        except cf.process.BrokenProcessPool as e:
            self._shutdown_pool()
            raise RuntimeError("ProcessEvaluator: the worker processes failed to start (see "
                               "the error above); is the fitness importable in a fresh "
                               "interpreter?") from e

    def _capacity(self) -> int:
        return self.workers

    def _submit(self, task: _Task, with_payload: bool) -> cf.Future:
        if with_payload:
            task = _with_payload(task, self._run)
        return self._pool.submit(_run_task, task)

    def _failure_kind(self, exc: BaseException) -> str:
        return "pool" if isinstance(exc, cf.process.BrokenProcessPool) else "task"

    def _recover(self) -> None:
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


class DaskEvaluator(_PoolEvaluator):
    """Evaluate on a Dask ``distributed`` cluster: a Client, or a scheduler address.

    The fitness object (with the data) is scattered to every worker once per run; each candidate
    is one task. Dask reschedules a task whose worker died; after its ``allowed-failures`` the
    task fails with KilledWorker and the candidate gets the invalid fitness. Other lost tasks are
    resubmitted ``retries`` times. Start workers with one thread each (``--nthreads 1``): a
    worker process evaluates one candidate at a time.

        >>> with DaskEvaluator("tcp://scheduler:8786") as mapper:         # doctest: +SKIP
        ...     population = te.evolve(strategy, fitness, population, mapper=mapper)
    """

    def __init__(self, client: Any, *, retries: int = 2, timeout: float | None = None,
                 seed: int | None = None) -> None:
        super().__init__(retries, timeout, seed)
        try:
            import distributed
        except ImportError as e:
            raise ImportError("DaskEvaluator needs dask.distributed: pip install "
                              "'tinyevo[dask]'") from e
        self._owns_client = isinstance(client, str)
        if self._owns_client:
            client = distributed.Client(client)
        if not _is_dask_client(client):
            raise TypeError(f"DaskEvaluator: expected a distributed.Client or a scheduler "
                            f"address, got {type(client).__name__}")
        self.client = client
        self._scattered: Any = None
        self._scattered_token: str | None = None
        self._dask: dict[cf.Future, Any] = {}

    def _prepare(self, run: _Run) -> None:
        if (self._scattered is None or self._scattered_token != run.token
                or self._scattered.status != "finished"):
            self._scattered = self.client.scatter(run.payload, broadcast=True, hash=False)
            self._scattered_token = run.token

    def _capacity(self) -> int:
        if self.timeout is None:
            return 1 << 30  # no deadlines to keep: let the scheduler queue them
        return sum(self.client.nthreads().values())

    def _submit(self, task: _Task, with_payload: bool) -> cf.Future:
        self._prepare(self._run)
        dfut = self.client.submit(_dask_task, task, self._scattered, pure=False,
                                  key=f"tinyevo-{task.index}-{uuid.uuid4().hex}")
        fut: cf.Future = cf.Future()
        fut.set_running_or_notify_cancel()
        self._dask[fut] = dfut

        def relay(d: Any) -> None:
            self._dask.pop(fut, None)
            try:
                fut.set_result(d.result())
            except BaseException as e:  # noqa: BLE001 - handed on to the scheduling loop
                fut.set_exception(e)

        dfut.add_done_callback(relay)
        return fut

    def _failure_kind(self, exc: BaseException) -> str:
        from distributed.scheduler import KilledWorker

        return "final" if isinstance(exc, KilledWorker) else "task"

    def _stop(self, expired: list[cf.Future], inflight: list[cf.Future]) -> bool:
        keys = {self._dask[f].key for f in expired if f in self._dask}
        self.client.cancel([self._dask[f] for f in expired if f in self._dask], force=True)
        try:  # a thread cannot be stopped: restart the worker processes that run them
            busy = [w for w, ks in self.client.processing().items() if keys & set(ks)]
            if busy:
                self.client.restart_workers(busy)
        except Exception as e:  # noqa: BLE001 - best effort; the candidate is already invalid
            log.warning("could not restart the Dask workers of stuck candidates: %s", e)
        return False

    def close(self) -> None:
        """Release the scattered data; close the client if this evaluator opened it."""
        if self._scattered is not None:
            with contextlib.suppress(Exception):
                self.client.cancel(self._scattered)
            self._scattered = None
        if self._owns_client:
            self.client.close()
        self._run = None

    def __repr__(self) -> str:
        return f"DaskEvaluator({self.client!r}, retries={self.retries}, timeout={self.timeout})"


class ExecutorEvaluator(_PoolEvaluator):
    """Any ``concurrent.futures.Executor`` the caller owns (not shut down here).

    The fitness reaches each worker on the first task it runs (a worker without it asks once).
    A broken executor cannot be rebuilt here: use :class:`ProcessEvaluator` for a process pool
    that survives dead workers. Thread pools share the library generator and run one candidate
    at a time.

        >>> with cf.ProcessPoolExecutor(2) as pool:                        # doctest: +SKIP
        ...     population = population.evaluate(fitness, mapper=ExecutorEvaluator(pool))
    """

    def __init__(self, executor: cf.Executor, *, retries: int = 2, timeout: float | None = None,
                 seed: int | None = None) -> None:
        super().__init__(retries, timeout, seed)
        if not isinstance(executor, cf.Executor):
            raise TypeError(f"ExecutorEvaluator: expected a concurrent.futures.Executor, got "
                            f"{type(executor).__name__}")
        self.executor = executor

    def _capacity(self) -> int:
        n = getattr(self.executor, "_max_workers", None)
        return n if isinstance(n, int) and n > 0 else 1 << 30

    def _submit(self, task: _Task, with_payload: bool) -> cf.Future:
        if with_payload:
            task = _with_payload(task, self._run)
        try:
            return self.executor.submit(_run_task, task)
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


# --------------------------------------------------------------------- the job and its tasks
@dataclass
class _Job:
    """One call of the mapper: the fitness and generation unpacked from ``fn`` where possible."""

    fn: Callable
    fitness: Any
    generation: Any
    key: int  # the generation, or the call count for an opaque fn
    round_seed: tuple = ()

    @classmethod
    def of(cls, fn: Callable, calls: int) -> _Job:
        if (isinstance(fn, functools.partial) and fn.func is evaluate_candidate
                and len(fn.args) == 2 and not fn.keywords):
            fitness, generation = fn.args
            key = generation if isinstance(generation, int) and generation >= 0 else calls
            return cls(fn, fitness, generation, key)
        if not callable(fn):
            raise TypeError(f"an evaluator maps a callable over the members, got "
                            f"{type(fn).__name__}")
        return cls(fn, None, None, calls)


@dataclass
class _Run:
    subject: Any  # the fitness (or opaque fn) of this run, kept alive so its id stays unique
    token: str
    payload: bytes
    rounds: list


@dataclass
class _Task:
    token: str
    rounds: tuple  # ((generation, seed), ...) of the run so far, for workers that missed some
    generation: Any
    index: int
    seed: tuple
    candidate: bytes  # pickled with _dumps
    parent_pid: int
    opaque: bool  # the subject is a plain callable of the candidate, not a fitness
    payload: bytes | None = None
    backend: str = "numpy"  # the parent's array backend, which the worker uses too


def _with_payload(task: _Task, run: _Run) -> _Task:
    return dataclasses.replace(task, payload=run.payload)


def _invalid(job: _Job, member: Any, reason: str) -> Any:
    value = getattr(job.fitness, "invalidfitness", 0.0)
    log.warning("candidate %r of generation %s gets invalid fitness %r: %s",
                member, job.generation, value, reason)
    inner = member.candidate if isinstance(member, FittedCandidate) else member
    return FittedCandidate(inner, value, job.generation)


class _RemoteTraceback(Exception):
    def __init__(self, tb: str) -> None:
        super().__init__(tb)

    def __str__(self) -> str:
        return f'\n"""\n{self.args[0]}"""'


# --------------------------------------------------------------------- the worker side
@dataclass
class _WorkerRun:
    subject: Any
    applied: int = 0  # rounds already applied to the subject's generation iterators


_WORKER: dict[str, _WorkerRun] = {}
_WORKER_LOCK = threading.Lock()  # one candidate at a time per process: shared generator, data


def _init_worker(token: str, payload: bytes, backend: str = "numpy") -> None:
    _pin_threads()
    _use_backend(backend)
    _WORKER.clear()
    _WORKER[token] = _WorkerRun(pickle.loads(payload))


def _dask_task(task: _Task, payload: bytes) -> tuple:
    return _run_task(task, payload)


def _run_task(task: _Task, payload: bytes | None = None) -> tuple:
    """Evaluate one candidate in a worker: ('ok', fitted), ('need', None) or ('error', ...)."""
    if os.getpid() != task.parent_pid:
        _pin_threads()
    _use_backend(task.backend)
    with _WORKER_LOCK:
        state = _WORKER.get(task.token)
        if state is None:
            payload = payload if payload is not None else task.payload
            if payload is None:
                return ("need", None)
            _WORKER.clear()  # one run at a time: free the last run's data
            state = _WORKER[task.token] = _WorkerRun(pickle.loads(payload))
        subject, candidate = state.subject, pickle.loads(task.candidate)
        if task.opaque:
            return _guarded(lambda: _call_seeded(task.seed, subject, candidate))
        for generation, seed in task.rounds[state.applied:]:
            with _seeded(seed):
                _advance(subject, generation)
        state.applied = max(state.applied, len(task.rounds))
        return _guarded(lambda: _call_seeded(
            task.seed, functools.partial(evaluate_candidate, subject, task.generation),
            candidate))


def _use_backend(backend: str) -> None:
    """Candidates are evaluated on the parent's backend (CuPy arrays need CuPy selected to be
    recognised); selecting it in a worker initialises CUDA there, after the fork."""
    if B.name() != backend:
        B.use(backend)


def _call_seeded(seed: tuple, fn: Callable, candidate: Any) -> Any:
    with _seeded(seed):
        return fn(candidate)


def _guarded(call: Callable[[], Any]) -> tuple:
    try:
        return ("ok", _dumps(call()))
    except Exception as e:  # noqa: BLE001 - raised again in the main process, as in a serial run
        return ("error", e, traceback.format_exc())


_PINNED: list[bool] = []


def _pin_threads() -> None:
    """One BLAS thread and one tinyevo thread in this worker process (once)."""
    if _PINNED:
        return
    _PINNED.append(True)
    for name in _BLAS_ENV:
        os.environ[name] = "1"
    B.set_num_threads(1)
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # the environment set before spawning covers BLAS then
        return
    threadpool_limits(1)


@contextlib.contextmanager
def _one_blas_thread() -> Iterator[None]:
    """BLAS limited to one thread in this process for the block (needs threadpoolctl)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        yield
        return
    with threadpool_limits(1, user_api="blas"):
        yield


@contextlib.contextmanager
def _single_threaded_environ() -> Iterator[None]:
    """The BLAS thread variables set to 1 while worker processes are spawned (they copy it)."""
    saved = {name: os.environ.get(name) for name in _BLAS_ENV}
    os.environ.update({name: "1" for name in _BLAS_ENV})
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


# --------------------------------------------------------------------- seeding and data
@contextlib.contextmanager
def _seeded(seed: tuple) -> Iterator[None]:
    """The library generator reseeded from ``seed`` (a tuple of ints), its state put back after."""
    gen = B.rng()
    saved = gen.bit_generator.state
    gen.bit_generator.state = type(gen.bit_generator)(np.random.SeedSequence(seed)).state
    try:
        yield
    finally:
        gen.bit_generator.state = saved


def _peek_key() -> int:
    """A key from the library generator's state, without drawing (the GA's stream is untouched)."""
    digest = hashlib.blake2b(repr(B.rng().bit_generator.state).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


def _advance(fitness: Any, generation: Any) -> None:
    """Move the generation-aware iterators of ``fitness`` to ``generation`` (in a fixed order)."""
    if fitness is None:
        return
    for it in _generation_iters(fitness):
        it.itergeneration(generation)


def _generation_iters(root: Any) -> list:
    """Objects with ``itergeneration`` reachable through fitness objects' attributes."""
    found, seen, stack = [], set(), [root]
    while stack:
        obj = stack.pop()
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        if callable(getattr(obj, "itergeneration", None)) and not isinstance(obj, type):
            found.append(obj)
        elif isinstance(obj, AbstractFitness):
            stack.extend(reversed([v for v in vars(obj).values() if _may_hold_iters(v)]))
        elif isinstance(obj, (list, tuple)):
            stack.extend(reversed([v for v in obj if _may_hold_iters(v)]))
    return found


def _may_hold_iters(v: Any) -> bool:
    if isinstance(v, (list, tuple)):
        return any(isinstance(x, AbstractFitness) for x in v)
    return isinstance(v, AbstractFitness) or callable(getattr(v, "itergeneration", None))


def _is_dask_client(obj: Any) -> bool:
    return (type(obj).__module__.startswith("distributed") and type(obj).__name__ == "Client")


def _short(obj: Any) -> str:
    text = repr(obj)
    return text if len(text) <= 120 else text[:117] + "..."


# --------------------------------------------------------------------- transport
def _dumps(obj: Any) -> bytes:
    """Pickle for inter-process transport only (never for files). Protocol 4, not 5: NumPy
    unpickles protocol 5 arrays as views of the pickle's buffer, which a model copy cannot share
    copy-on-write (:func:`tinyevo.layers.share` copies views), so the children of a model that
    came back from a worker would lose their inherited arrays' identity, and with it the
    optimiser state that goes with them (:meth:`tinyevo.optimizers.Optimizer.inherit`)."""
    return pickle.dumps(obj, protocol=4)
