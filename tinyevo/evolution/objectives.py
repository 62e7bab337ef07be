"""Objectives: a fitness that is a vector of named quantities, each maximised or minimised.

A multi-objective search wants the best model *it can afford*: accurate and small, or accurate
and fast. :class:`ObjectivesFitness` wraps a scalar fitness (training and validation, as
``TrainThenFitness`` does) and measures named :class:`Objective` s of the candidate after it;
its value is an :class:`Objectives`: the scalar fitness, which it *is* (a ``float``), with the
vector beside it. Code that wants one number (``best()``, the hall of fame, plots, SUS) reads
the scalar as before; Pareto code (:mod:`tinyevo.evolution.pareto`) reads the vector.

    >>> from tinyevo.evolution import CandidateModel
    >>> from tinyevo.layers import Dense
    >>> f = ObjectivesFitness(lambda c: 0.9, [FitnessObjective("accuracy"), ParamsObjective()])
    >>> value = fitness_of(f, CandidateModel(Dense(3, 2)))
    >>> value
    Objectives(0.9, accuracy=0.9, params=8)
    >>> float(value), value["params"], value.names
    (0.9, 8.0, ('accuracy', 'params'))
"""

from __future__ import annotations

import logging
import math
import numbers
import statistics
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from tinyevo import backend as B
from tinyevo.evolution.candidate import graph, nparams
from tinyevo.evolution.fitness import AbstractFitness, fitness_of, start_generation

__all__ = ["Objectives", "Objective", "FitnessObjective", "ParamsObjective", "LatencyObjective",
           "MetricObjective", "ObjectivesFitness", "SENSES"]

log = logging.getLogger("tinyevo.evolution")

SENSES = ("max", "min")


class Objectives(float):
    """Objectives(fitness, names, values, senses): a scalar fitness with a vector of named
    objectives, each maximised (``"max"``) or minimised (``"min"``).

    It *is* the float ``fitness`` wherever one number is wanted (``float()``, comparisons,
    sorting, formatting, arithmetic, which gives a plain float), so that ``best()``, the hall of
    fame, ``target_fitness`` and the plots rank by it; two values with the same fitness compare
    equal whatever their vectors. The vector is ``names``, ``values`` and ``senses`` (tuples),
    ``value[name]``, :meth:`as_dict` and, for Pareto code, :meth:`oriented` (every objective
    turned into one to maximise). Immutable; pickles; :meth:`to_json` / :meth:`from_json` for
    checkpoints.

        >>> v = Objectives(0.97, ("accuracy", "params"), (0.97, 1200), ("max", "min"))
        >>> float(v), v["params"], v.oriented()
        (0.97, 1200.0, (0.97, -1200.0))
    """

    __slots__ = ("names", "values", "senses")
    names: tuple[str, ...]
    values: tuple[float, ...]
    senses: tuple[str, ...]

    def __new__(cls, fitness: Any, names: Iterable[str], values: Iterable[Any],
                senses: Iterable[str]) -> Objectives:
        names, values, senses = tuple(names), tuple(values), tuple(senses)
        _check_names(names, senses)
        if len(values) != len(names):
            raise ValueError(f"Objectives: {len(values)} values for {len(names)} objectives "
                             f"{names}")
        for name, v in zip(names, values):
            if not _real(v):
                raise TypeError(f"Objectives: the value of {name!r} must be a real number, "
                                f"got {v!r}")
        if not _real(fitness):
            raise TypeError(f"Objectives: the fitness must be a real number, got {fitness!r}")
        self = super().__new__(cls, float(fitness))
        object.__setattr__(self, "names", names)
        object.__setattr__(self, "values", tuple(float(v) for v in values))
        object.__setattr__(self, "senses", senses)
        return self

    @classmethod
    def worst(cls, fitness: Any, names: Sequence[str], senses: Sequence[str]) -> Objectives:
        """The value of a candidate that could not be measured (an invalid one): every
        objective at its worst (-inf where maximised, +inf where minimised), so that every
        measured candidate dominates it."""
        return cls(fitness, names, [-math.inf if s == "max" else math.inf for s in senses],
                   senses)

    @property
    def fitness(self) -> float:
        """The scalar fitness, as a plain float."""
        return float(self)

    def __getitem__(self, name: str) -> float:
        try:
            return self.values[self.names.index(name)]
        except ValueError:
            raise KeyError(f"no objective {name!r}; the objectives are {self.names}") from None

    def as_dict(self) -> dict[str, float]:
        """``{name: value}`` in the objectives' order."""
        return dict(zip(self.names, self.values))

    def oriented(self) -> tuple[float, ...]:
        """The vector with every objective to be maximised (minimised ones negated); NaN as
        -inf, the worst."""
        return tuple(-math.inf if math.isnan(v) else (v if s == "max" else -v)
                     for v, s in zip(self.values, self.senses))

    def to_json(self) -> dict:
        """The vector as a checkpoint keeps it (the fitness is kept beside it)."""
        return {"names": list(self.names), "values": list(self.values),
                "senses": list(self.senses)}

    @classmethod
    def from_json(cls, fitness: Any, doc: Mapping) -> Objectives:
        """The value :meth:`to_json` wrote, with its ``fitness``; ValueError/TypeError where
        the document does not describe one."""
        if not isinstance(doc, Mapping) or set(doc) != {"names", "values", "senses"}:
            raise ValueError(f"objectives must be an object with names, values and senses, "
                             f"got {doc!r}")
        return cls(fitness, doc["names"], doc["values"], doc["senses"])

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("Objectives is immutable")

    def __delattr__(self, name: str) -> None:
        raise AttributeError("Objectives is immutable")

    def __reduce__(self) -> tuple:
        return (type(self), (float(self), self.names, self.values, self.senses))

    def __repr__(self) -> str:
        inner = ", ".join(f"{n}={v:.6g}" for n, v in zip(self.names, self.values))
        return f"Objectives({float(self):.6g}, {inner})"

    __str__ = __repr__


# --------------------------------------------------------------------- the objectives
class Objective:
    """Objective(name, fun, sense="max"): a named quantity ``fun(candidate)`` of an evaluated
    candidate, to be maximised (``"max"``) or minimised (``"min"``).

    It is measured after the scalar fitness (so the candidate is trained); ``objective(
    candidate, fitness)`` gives the value as a float. For worker processes, ``fun`` must pickle
    (a module-level function, not a lambda).

        >>> depth = Objective("depth", lambda c: len(c.graph().vertices), "min")
    """

    def __init__(self, name: str, fun: Callable[[Any], Any] | None = None,
                 sense: str = "max") -> None:
        _check_names((name,), (sense,))
        if fun is None and type(self) is Objective:
            raise TypeError(f"Objective {name!r}: give fun, the function of the candidate that "
                            "measures it (or use a subclass that measures it itself)")
        if fun is not None and not callable(fun):
            raise TypeError(f"Objective {name!r}: fun must be a function of the candidate, "
                            f"got {type(fun).__name__}")
        self.name, self.fun, self.sense = name, fun, sense

    def __call__(self, candidate: Any, fitness: Any = None) -> float:
        return float(self.fun(candidate))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, sense={self.sense!r})"


class FitnessObjective(Objective):
    """The scalar fitness itself as an objective (maximised): for a fitness that *is* what is
    wanted, such as :class:`~tinyevo.evolution.AccuracyFitness`.

        >>> FitnessObjective("accuracy")(None, 0.93)
        0.93
    """

    def __init__(self, name: str = "fitness") -> None:
        super().__init__(name, None, "max")

    def __call__(self, candidate: Any, fitness: Any = None) -> float:
        return float(fitness)


class ParamsObjective(Objective):
    """The number of parameters of the candidate's model (minimised).

        >>> from tinyevo.evolution import CandidateModel
        >>> from tinyevo.layers import Dense
        >>> ParamsObjective()(CandidateModel(Dense(3, 2)))
        8.0
    """

    def __init__(self, name: str = "params") -> None:
        super().__init__(name, None, "min")

    def __call__(self, candidate: Any, fitness: Any = None) -> float:
        return float(nparams(graph(candidate)))


class MetricObjective(Objective):
    """A measurement the scalar fitness left on the candidate, ``candidate.metrics[name]``
    (``fit``'s classifier fitness records ``"accuracy"`` and ``"loss"`` there when asked).

        >>> c = type("C", (), {"metrics": {"loss": 0.25}})()
        >>> MetricObjective("loss", "min")(c)
        0.25
    """

    def __init__(self, name: str, sense: str = "max") -> None:
        super().__init__(name, None, sense)

    def __call__(self, candidate: Any, fitness: Any = None) -> float:
        metrics = getattr(candidate, "metrics", None)
        if not isinstance(metrics, Mapping) or self.name not in metrics:
            raise ValueError(f"MetricObjective {self.name!r}: the fitness recorded no "
                             f"{self.name!r} in candidate.metrics")
        return float(metrics[self.name])


class LatencyObjective(Objective):
    """Inference time per sample, in seconds (minimised), measured where the candidate is
    evaluated: on the fixed batch ``x``, ``warmup`` calls first (caches, allocations), then
    the **median** of ``repeats`` timed calls (robust to a call slowed by the machine),
    divided by the batch size.

    The time includes reading one output value, which waits for a GPU to finish. Measured
    where the candidate is evaluated (a worker process uses one thread), so times are
    comparable within a run, not across machines or thread counts.

        >>> import numpy as np
        >>> from tinyevo.evolution import CandidateModel
        >>> from tinyevo.layers import Dense
        >>> seconds = LatencyObjective(np.ones((8, 3), np.float32))(CandidateModel(Dense(3, 2)))
    """

    def __init__(self, x: Any, repeats: int = 5, warmup: int = 1,
                 name: str = "latency") -> None:
        super().__init__(name, None, "min")
        for what, n, least in (("repeats", repeats, 1), ("warmup", warmup, 0)):
            if not isinstance(n, numbers.Integral) or isinstance(n, bool) or n < least:
                raise ValueError(f"LatencyObjective: {what} must be an int >= {least}, got "
                                 f"{n!r}")
        self.x = B.to_numpy(x)
        if self.x.ndim < 1 or len(self.x) == 0:
            raise ValueError("LatencyObjective: x must be a non-empty batch of samples")
        self.repeats, self.warmup = int(repeats), int(warmup)
        self._device: tuple | None = None

    def __call__(self, candidate: Any, fitness: Any = None) -> float:
        model = graph(candidate)
        if model is None:
            raise TypeError(f"LatencyObjective: candidate {candidate!r} has no model")
        x = self._batch()
        for _ in range(self.warmup):
            _wait(model(x))
        times = []
        for _ in range(self.repeats):
            t0 = time.perf_counter()
            _wait(model(x))
            times.append(time.perf_counter() - t0)
        return statistics.median(times) / len(self.x)

    def _batch(self) -> Any:
        """The batch on the current backend: moved to a GPU once."""
        if B.name() == "numpy":
            return self.x
        if self._device is None or self._device[0] != B.name():
            self._device = (B.name(), B.to_device(self.x))
        return self._device[1]

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_device": None}     # workers move the batch themselves

    def __repr__(self) -> str:
        return (f"LatencyObjective(batch of {len(self.x)}, repeats={self.repeats}, "
                f"warmup={self.warmup})")


# --------------------------------------------------------------------- the fitness
class ObjectivesFitness(AbstractFitness):
    """ObjectivesFitness(fitness, objectives): the scalar ``fitness`` (trains and validates,
    as usual), then each of ``objectives`` measured on the candidate: an :class:`Objectives`.

    A candidate whose scalar fitness is ``fitness.invalidfitness`` (training diverged, raised
    or ran out of time) or not finite, or whose objective raised, gets every objective at its
    worst (:meth:`Objectives.worst`), so that it is never on a Pareto front beside measured
    ones; a raised objective is logged (logger "tinyevo.evolution"). ``invalidfitness`` is that
    worst value, for evaluators that give a lost task the invalid fitness.

        >>> f = ObjectivesFitness(fitness, [FitnessObjective("accuracy"),
        ...                                 ParamsObjective()])       # doctest: +SKIP
    """

    def __init__(self, fitness: Any, objectives: Sequence[Objective]) -> None:
        objectives = tuple(objectives)
        if not objectives:
            raise ValueError("ObjectivesFitness needs at least one objective")
        for o in objectives:
            if not (isinstance(getattr(o, "name", None), str) and callable(o)
                    and getattr(o, "sense", None) in SENSES):
                raise TypeError(f"ObjectivesFitness: {o!r} is no objective; make one with "
                                "Objective(name, fun, sense)")
        _check_names(tuple(o.name for o in objectives), tuple(o.sense for o in objectives))
        self.fitness, self.objectives = fitness, objectives

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(o.name for o in self.objectives)

    @property
    def senses(self) -> tuple[str, ...]:
        return tuple(o.sense for o in self.objectives)

    @property
    def invalidfitness(self) -> Objectives:
        """Every objective at its worst, with the scalar fitness's invalid value (else 0.0)."""
        return Objectives.worst(getattr(self.fitness, "invalidfitness", 0.0), self.names,
                                self.senses)

    def __call__(self, candidate: Any, generation: int | None = None) -> Objectives:
        return self.measure(candidate, fitness_of(self.fitness, candidate, generation))

    def measure(self, candidate: Any, fitness: Any) -> Objectives:
        """The objectives of ``candidate``, whose scalar fitness is ``fitness`` (already
        computed, e.g. after a training of its own)."""
        if not _real(fitness):
            raise TypeError(f"ObjectivesFitness: the scalar fitness must be a real number, got "
                            f"{fitness!r}")
        invalid = getattr(self.fitness, "invalidfitness", None)
        if not math.isfinite(fitness) or (invalid is not None and fitness == invalid):
            return Objectives.worst(fitness, self.names, self.senses)
        try:
            values = [o(candidate, fitness) for o in self.objectives]
        except Exception as e:  # noqa: BLE001 - as the training guard: the run goes on
            log.warning("candidate %r gets the worst objectives: measuring them raised %s: %s",
                        candidate, type(e).__name__, e)
            return Objectives.worst(fitness, self.names, self.senses)
        return Objectives(fitness, self.names, values, self.senses)

    def start_generation(self, generation: int) -> None:
        start_generation(self.fitness, generation)

    def __repr__(self) -> str:
        return f"ObjectivesFitness({self.fitness!r}, {list(self.objectives)!r})"


# --------------------------------------------------------------------- helpers
def _check_names(names: tuple, senses: tuple) -> None:
    if not names:
        raise ValueError("objectives: at least one objective is needed")
    if len(senses) != len(names):
        raise ValueError(f"objectives: {len(senses)} senses for {len(names)} names")
    for n in names:
        if not isinstance(n, str) or not n:
            raise TypeError(f"objectives: a name must be a non-empty string, got {n!r}")
    if len(set(names)) != len(names):
        raise ValueError(f"objectives: the names must differ, got {names}")
    bad = [s for s in senses if s not in SENSES]
    if bad:
        raise ValueError(f"objectives: a sense is 'max' or 'min', got {bad[0]!r}")


def _real(x: Any) -> bool:
    return isinstance(x, numbers.Real) and not isinstance(x, bool)


def _wait(out: Any) -> None:
    """Wait for ``out`` to be computed: reading one value waits for a GPU (free on NumPy)."""
    first = out[0] if isinstance(out, (list, tuple)) else out
    float(first.reshape(-1)[0])
