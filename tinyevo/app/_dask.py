"""Evaluation on a Dask ``distributed`` cluster: the fitness scattered once, a task per candidate.

Dask is imported only when a :class:`DaskEvaluator` is made; ``tinyevo.app`` imports without it.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import logging
import uuid
from typing import Any

from tinyevo.app._scheduling import PoolEvaluator, Run
from tinyevo.app._workers import Task, dask_task

__all__ = ["DaskEvaluator"]

log = logging.getLogger("tinyevo")


class DaskEvaluator(PoolEvaluator):
    """Evaluate on a Dask ``distributed`` cluster: a Client, or a scheduler address.

    The fitness object (with the data) is scattered to every worker once per run; each candidate
    is one task. Dask reschedules a task whose worker died; after its ``allowed-failures`` the
    task fails with KilledWorker and the candidate gets the invalid fitness. Other lost tasks are
    resubmitted ``retries`` times. Start workers with one thread each (``--nthreads 1``): a
    worker process evaluates one candidate at a time.

        >>> with DaskEvaluator("tcp://scheduler:8786") as evaluator:      # doctest: +SKIP
        ...     population = te.evolve(strategy, fitness, population, evaluator=evaluator)
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
        if not is_dask_client(client):
            raise TypeError(f"DaskEvaluator: expected a distributed.Client or a scheduler "
                            f"address, got {type(client).__name__}")
        self.client = client
        self._scattered: Any = None
        self._scattered_token: str | None = None
        self._dask: dict[cf.Future, Any] = {}

    def _prepare(self, run: Run) -> None:
        if (self._scattered is None or self._scattered_token != run.token
                or self._scattered.status != "finished"):
            self._scattered = self.client.scatter(run.payload, broadcast=True, hash=False)
            self._scattered_token = run.token
        run.delivered = True        # every task gets the scattered fitness

    @property
    def workers(self) -> int:
        """The candidates the cluster evaluates at once now: its worker processes (each runs
        one candidate at a time, whatever its threads)."""
        return len(self.client.nthreads())

    def _capacity(self) -> int:
        if self.timeout is None:
            return 1 << 30  # no deadlines to keep: let the scheduler queue them
        return sum(self.client.nthreads().values())

    def _submit(self, task: Task, with_payload: bool) -> cf.Future:
        self._prepare(self._run)
        dfut = self.client.submit(dask_task, task, self._scattered, pure=False,
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


def is_dask_client(obj: Any) -> bool:
    """``obj`` is a ``distributed.Client`` (told by its type, without importing dask)."""
    return _is_dask_type(obj, "Client")


def is_dask_executor(obj: Any) -> bool:
    """``obj`` is what ``client.get_executor()`` returns (a ``distributed.ClientExecutor``)."""
    return _is_dask_type(obj, "ClientExecutor")


def _is_dask_type(obj: Any, name: str) -> bool:
    return type(obj).__module__.startswith("distributed") and type(obj).__name__ == name
