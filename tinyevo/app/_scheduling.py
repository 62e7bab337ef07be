"""What tinyevo's evaluators share: a seed per candidate, and the loop that feeds workers.

:class:`SeededEvaluator` implements the evaluator contract
(``evaluate(fitness, generation, members)``, see :class:`tinyevo.evolution.Evaluator`) so that
where a candidate is evaluated does not change its result: each generation starts the fitness's
generation-aware data (``start_generation``) under a seed of its own, and each candidate is
evaluated under a seed from (run key, generation, candidate index). The run key is read from
the library generator without drawing, so the GA's own draws do not depend on evaluation.

:class:`PoolEvaluator` is the scheduling loop of the evaluators that hand candidates to workers
(processes, a Dask cluster, any executor): the fitness is shipped once per run, each task
carries one candidate, and a candidate whose worker dies or hangs is retried or given the
fitness object's ``invalidfitness``.
"""

from __future__ import annotations

import concurrent.futures as cf
import dataclasses
import functools
import hashlib
import logging
import math
import os
import pickle
import time
import uuid
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from tinyevo import backend as B
from tinyevo.app._workers import Task, dumps, seeded
from tinyevo.evolution.candidate import FittedCandidate, graph, nparams
from tinyevo.evolution.fitness import start_generation
from tinyevo.evolution.timing import merge, phase

log = logging.getLogger("tinyevo")


class SeededEvaluator:
    """Base class: evaluates each candidate under a seed of its own, wherever it runs.

    Subclasses implement ``_evaluate(fitness, generation, members, seeds)`` (evaluate member i
    under ``seeds[i]``) and, where they use workers, ``_start`` (get them ready for the
    generation, before this process's copy of the fitness starts it) and ``close``.

    ``on_result(index, result)``, where set, is called in this process as each member's result
    arrives (in completion order): the hook for progress displays. ``workers``: how many
    candidates it evaluates at once, where it knows (what ``fit``'s timings count idle time by).
    ``cost(member)``: a number that grows with the time the member takes to evaluate (default:
    its model's parameter count; ``fit`` sets multiply-adds for its data's shape); evaluators
    with workers hand out the costliest first, so that a generation does not end with one
    worker busy on a large candidate and the others idle (the order changes no result).
    """

    on_result: Callable[[int, Any], None] | None = None
    workers: int | None = None  # how many candidates it evaluates at once (None: unknown)
    cost: Callable[[Any], float] | None = None

    def __init__(self, seed: int | None = None) -> None:
        if seed is not None and (not isinstance(seed, int) or seed < 0):
            raise ValueError(f"seed must be None or a non-negative int, got {seed!r}")
        self.seed = seed

    def evaluate(self, fitness: Any, generation: int,
                 members: Sequence[Any]) -> list[FittedCandidate]:
        """One FittedCandidate per member, in order (the evaluator contract)."""
        if not isinstance(generation, int) or isinstance(generation, bool) or generation < 0:
            raise ValueError(f"{type(self).__name__}.evaluate: generation must be a "
                             f"non-negative int, got {generation!r}")
        members = list(members)
        key = self.seed if self.seed is not None else peek_key()
        round_seed = (key, generation, 0)
        self._start(fitness, generation, round_seed)  # workers get the fitness as it was
        with seeded(round_seed):  # the main copy stays as a serial run leaves it
            start_generation(fitness, generation)
        seeds = [(key, generation, i + 1) for i in range(len(members))]
        return self._evaluate(fitness, generation, members, seeds)

    def _report(self, index: int, result: Any) -> Any:
        if self.on_result is not None:
            self.on_result(index, result)
        return result

    def _start(self, fitness: Any, generation: int, round_seed: tuple) -> None:
        """Get the workers ready for this generation (a no-op in process)."""

    def _evaluate(self, fitness: Any, generation: int, members: list, seeds: list) -> list:
        raise NotImplementedError

    def close(self) -> None:
        """Release the workers (a no-op for the serial evaluator)."""

    def __enter__(self) -> SeededEvaluator:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class PoolEvaluator(SeededEvaluator):
    """Hands candidates to workers: bounded in-flight tasks, deadlines, retries, invalid fitness.

    A subclass says how to get workers ready (``_prepare``), how many tasks they take at once
    (``_capacity``), how to submit one (``_submit``), what a failure means (``_failure_kind``),
    how to recover from a broken pool (``_recover``) and how to stop a stuck task (``_stop``).
    """

    def __init__(self, retries: int = 2, timeout: float | None = None,
                 seed: int | None = None) -> None:
        super().__init__(seed)
        if not isinstance(retries, int) or retries < 0:
            raise ValueError(f"retries must be a non-negative int, got {retries!r}")
        if timeout is not None and not timeout > 0:
            raise ValueError(f"timeout must be None or > 0 seconds, got {timeout!r}")
        self.retries, self.timeout = retries, timeout
        self._run: Run | None = None

    # --- hooks for the subclasses
    def _prepare(self, run: Run) -> None:
        """Make the workers ready for ``run`` (start a pool, scatter the fitness)."""

    def _capacity(self) -> int:
        raise NotImplementedError

    def _submit(self, task: Task, with_payload: bool) -> cf.Future:
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

    def _with_payload(self, task: Task) -> Task:
        """``task`` carrying the run's fitness, for a worker that has not got it."""
        return dataclasses.replace(task, payload=self._run.payload)

    # --- the loop
    _shared_failures = False  # True where one dead worker takes every task in flight with it

    def _start(self, fitness: Any, generation: int, round_seed: tuple) -> None:
        run = self._run_for(fitness)
        self._prepare(run)
        run.rounds.append((generation, round_seed))

    def _evaluate(self, fitness: Any, generation: int, members: list, seeds: list) -> list:
        run = self._run
        with phase("ship"):
            tasks = [Task(run.token, tuple(run.rounds), generation, i, seed, dumps(member),
                          os.getpid(), backend=B.name())
                     for i, (member, seed) in enumerate(zip(members, seeds))]
        give_up = functools.partial(_invalid, fitness, generation)
        order = longest_first(members, self.cost or parameter_count)
        inflight: dict[cf.Future, tuple[int, float | None]] = {}
        try:
            return self._schedule(give_up, members, tasks, order, inflight)
        finally:
            for fut in inflight:
                fut.cancel()

    def _schedule(self, give_up: Callable, members: list, tasks: list, order: list,
                  inflight: dict) -> list:
        """Submit the tasks in ``order``, at most ``_capacity()`` at a time, until each has its
        result."""
        results: list[Any] = [None] * len(tasks)
        failures = [0] * len(tasks)
        isolated: set[int] = set()  # suspects of killing a worker: run alone so a crash is theirs
        todo = deque(order)
        resend = self._carrying_the_fitness(order)  # tasks sent with the fitness payload
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
                        results[i] = self._report(i, give_up(members[i], reason))
                    else:
                        lost.append((i, reason))
                        pool_broken = pool_broken or kind == "pool"
                    continue
                status = out[0]
                merge(out[-1])  # the worker's phase totals, whatever the outcome
                if status == "ok":
                    with phase("ship"):
                        fitted = pickle.loads(out[1])
                    results[i] = self._report(i, fitted)
                elif status == "need":
                    resend.add(i)
                    todo.appendleft(i)
                else:
                    raise out[1] from _RemoteTraceback(out[2])
            if pool_broken:  # every task still in flight went down with the pool
                lost.extend((i, "its worker process died") for i, _ in inflight.values())
                inflight.clear()
                self._recover()
                capacity = max(1, self._capacity())
            crashed_alone = len(lost) == 1 and not inflight
            for i, reason in sorted(lost, reverse=True):
                failures[i] += 1
                if failures[i] <= self.retries:
                    log.warning("candidate %d of generation %s: worker lost (%s); retry %d of %d",
                                i, tasks[i].generation, reason, failures[i], self.retries)
                    todo.appendleft(i)
                elif crashed_alone or i in isolated or not self._shared_failures:
                    results[i] = self._report(i, give_up(
                        members[i], f"the worker failed {failures[i]} times evaluating it, "
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
                    results[i] = self._report(i, give_up(
                        members[i], f"its evaluation exceeded the time limit of "
                        f"{self.timeout} s"))
                if self._stop(expired, list(inflight)):
                    todo.extendleft(sorted((i for i, _ in inflight.values()), reverse=True))
                    inflight.clear()
        return results

    def _carrying_the_fitness(self, order: list) -> set:
        """The first task for each worker where the workers have not been sent the run's
        fitness yet: it goes with them, rather than each worker asking for it (a round trip).
        A worker that got none of them asks (its task comes back 'need' and is resent)."""
        run = self._run
        first = set() if run.delivered or not self.workers else set(order[:self.workers])
        run.delivered = True
        return first

    def _run_for(self, fitness: Any) -> Run:
        """The run this fitness belongs to: a new token and payload when the fitness changes."""
        if self._run is None or self._run.fitness is not fitness:
            try:
                with phase("ship"):
                    payload = dumps(fitness)
            except Exception as e:
                raise TypeError(
                    f"{type(self).__name__}: the fitness {_short(fitness)} cannot be pickled "
                    f"for the workers ({type(e).__name__}: {e}); define fitness functions at "
                    "module level, and hand the evaluator a fitness that has not been used yet (a "
                    "StatefulGenerationIter that has started holds a live generator)") from e
            self._run = Run(fitness, uuid.uuid4().hex, payload, [])
        return self._run

    def __repr__(self) -> str:
        return f"{type(self).__name__}(retries={self.retries}, timeout={self.timeout})"


@dataclass
class Run:
    """The fitness a pool evaluator's workers hold, and the generation starts they replay."""

    fitness: Any  # kept alive so that its id stays unique while it is the run's
    token: str
    payload: bytes
    rounds: list
    delivered: bool = False  # the workers were sent the payload (a pool's initializer, a task)


def longest_first(members: Sequence[Any], cost: Callable[[Any], float]) -> list[int]:
    """The members' indices, costliest first (ties in their order): the longest-processing-time
    rule, whose makespan on workers that each take the next when free is within 4/3 of the
    best possible.

        >>> longest_first(["a", "ccc", "bb"], len)
        [1, 2, 0]
    """
    try:
        costs = [float(cost(m)) for m in members]
    except Exception as e:  # noqa: BLE001 - a cost only orders the tasks; results do not change
        log.warning("evaluator.cost failed (%s: %s); candidates go out in the members' order",
                    type(e).__name__, e)
        return list(range(len(members)))
    if not all(math.isfinite(c) for c in costs):
        log.warning("evaluator.cost gave a value that is not a finite number; candidates go out "
                    "in the members' order")
        return list(range(len(members)))
    return sorted(range(len(members)), key=lambda i: -costs[i])


def parameter_count(member: Any) -> int:
    """The default cost of evaluating ``member``: its model's parameter count (0 without one)."""
    return nparams(graph(member))


def multiply_adds(spatial: Sequence[int]) -> Callable[[Any], float]:
    """A cost for inputs of ``spatial`` size: the member's multiply-adds a sample (what
    ``graph.macs`` counts; ranks training times far better than the parameter count where
    layers work at different resolutions), else its parameter count.

        >>> cost = multiply_adds((28, 28))
    """
    spatial = tuple(spatial)

    def cost(member: Any) -> float:
        model = graph(member)
        try:
            return model.macs(spatial)
        except (AttributeError, ValueError):   # no macs, or not one input of that rank
            return nparams(model)

    return cost


def _invalid(fitness: Any, generation: int, member: Any, reason: str) -> FittedCandidate:
    value = getattr(fitness, "invalidfitness", 0.0)
    log.warning("candidate %r of generation %s gets invalid fitness %r: %s",
                member, generation, value, reason)
    inner = member.candidate if isinstance(member, FittedCandidate) else member
    return FittedCandidate(inner, value, generation)


class _RemoteTraceback(Exception):
    def __init__(self, tb: str) -> None:
        super().__init__(tb)

    def __str__(self) -> str:
        return f'\n"""\n{self.args[0]}"""'


def peek_key() -> int:
    """A key from the library generator's state, without drawing (the GA's stream is untouched)."""
    digest = hashlib.blake2b(repr(B.rng().bit_generator.state).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


def _short(obj: Any) -> str:
    text = repr(obj)
    return text if len(text) <= 120 else text[:117] + "..."
