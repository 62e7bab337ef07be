"""``FitConfig``: the settings of a ``fit`` run, in one documented dataclass.

``fit`` takes them as keyword arguments or as ``config=FitConfig(...)``, a checkpoint stores
them (and a resumed run must match them), and the ``tinyevo fit`` command builds them from its
flags, whose help is each field's doc:

    >>> config = FitConfig(population_size=8, batch_size=64, seed=1)
    >>> population = te.fit(x, y, generations=10, config=config)       # doctest: +SKIP

A setting left None is chosen by ``fit``: on a new run from the data (see
:func:`data_defaults`) or a plain default, on a resumed run the checkpoint's
(:mod:`tinyevo.app.resume`). Every value is checked when the config is made, and
:func:`check_combination` refuses a setting that the rest of the call would silently ignore,
both before any work.
"""

from __future__ import annotations

import difflib
import math
import numbers
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

import numpy as np

from tinyevo.app.tasks import TASKS
from tinyevo.evolution.halloffame import finite_number

__all__ = ["FitConfig", "configure", "check_combination", "plain_defaults", "data_defaults",
           "data_choices",
           "small_data_config", "default_batches", "integer", "real"]

# Defaults sized on MNIST (60,000 28x28 images) on 2 cores; docs/fit.md has the measurements.
DEFAULT_BATCHES = 50    # training batches of a generation's first budget, at most
VALID_FRACTION = 0.3    # share of the data held out for validation
VALID_MAX = 1000        # validation samples, at most
ELITES = 2              # candidates the default strategy keeps as they are
WIDTHS = (8, 32)        # channels of the default space's first conv block
POPULATION = 12         # candidates per generation (LARGE_DATA_POPULATION on large data)
LARGE_DATA_POPULATION = 8
FINAL_TRAINING = 0.4    # share of a time limit for training the best model, on large data
# The ceiling on a model's multiply-adds per sample on large data, per input value: 6.3 M for
# MNIST's 784, 1.5 times the hand-written two-block CNN of benchmarks/bench_mnist.py (4.2 M).
LARGE_DATA_MACS_PER_VALUE = 8000
LR_SCHEDULES = ("constant", "cosine")
# What fit(objectives=...) can search on (tinyevo.app.pareto): validation accuracy and cross
# entropy, parameters and inference latency per sample.
OBJECTIVES = ("accuracy", "loss", "r2", "params", "latency")
# The objectives that measure how good a model's predictions are: a front needs one.
QUALITY_OBJECTIVES = ("accuracy", "loss", "r2")
# The front's table (tinyevo.app.pareto.front_rows) has these columns beside the objectives.
FRONT_COLUMNS = ("index", "fitness", "generation", "nparams", "nvertices", "test_accuracy",
                 "test_r2", "model", "onnx")
TIEBREAKS = ("size", "loss")        # see tinyevo.app.scoring.ClassifierFitness
OPTIMIZER_STATES = ("keep", "reset")


def integer(name: str, value: Any, least: int, optional: bool = False,
            expected: str | None = None) -> int | None:
    """``value`` as an int >= ``least`` (NumPy integers welcome), else a ValueError saying so."""
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < least:
        raise ValueError(f"fit: {name} must be {expected or f'an int >= {least}'}, got "
                         f"{value!r}")
    return int(value)


def real(name: str, value: Any, low: float | None, high: float | None, expected: str,
         optional: bool = False, open_low: bool = False, open_high: bool = False
         ) -> float | None:
    """``value`` as a finite float within the bounds, else a ValueError saying ``expected``."""
    if value is None and optional:
        return None
    ok = finite_number(value)
    if ok and low is not None:
        ok = float(value) > low if open_low else float(value) >= low
    if ok and high is not None:
        ok = float(value) < high if open_high else float(value) <= high
    if not ok:
        raise ValueError(f"fit: {name} must be {expected}, got {value!r}")
    return float(value)


def _count(least: int, expected: str | None = None, optional: bool = True) -> Any:
    return lambda name, v: integer(name, v, least, optional=optional, expected=expected)


def _share(expected: str, optional: bool = True) -> Any:
    return lambda name, v: real(name, v, 0.0, 1.0, expected, optional=optional,
                                open_high=True)


def _one_of(choices: tuple[str, ...]) -> Any:
    def check(name: str, value: Any) -> str:
        if value not in choices:
            raise ValueError(f"fit: {name} must be one of {choices}, got {value!r}")
        return value
    return check


def _flag(name: str, value: Any) -> bool:
    if not isinstance(value, bool | np.bool_):
        raise ValueError(f"fit: {name} must be True or False, got {value!r}")
    return bool(value)


def _widths(name: str, value: Any) -> tuple[int, int] | None:
    if value is None:
        return None
    pair = tuple(value) if isinstance(value, tuple | list) else ()
    if (len(pair) != 2 or not all(isinstance(w, numbers.Integral) and not isinstance(w, bool)
                                  and w >= 1 for w in pair) or pair[0] > pair[1]):
        raise ValueError(f"fit: {name} must be None or two ints (low, high) with "
                         f"1 <= low <= high, got {value!r}")
    return int(pair[0]), int(pair[1])


def _objectives(name: str, value: Any) -> tuple | None:
    """None, or the objectives of a multi-objective search: names of :data:`OBJECTIVES` (a
    tuple, or one string "accuracy,params") or ``Objective`` objects; () for none. At least
    two, named differently, one of them accuracy, r2 or loss (a search blind to how good the
    predictions are would find the empty model)."""
    from tinyevo.evolution.objectives import Objective

    if value is None:
        return None
    items = [o for o in value.split(",") if o.strip()] if isinstance(value, str) else value
    if not isinstance(items, tuple | list) or not all(
            isinstance(o, Objective) or isinstance(o, str) and o.strip() in OBJECTIVES
            for o in items):
        raise ValueError(f"fit: {name} must be None or a list of objectives, each one of "
                         f"{OBJECTIVES} or an Objective, got {value!r}")
    items = tuple(o.strip() if isinstance(o, str) else o for o in items)
    names = [o if isinstance(o, str) else o.name for o in items]
    taken = sorted(set(names) & set(FRONT_COLUMNS))
    if taken:
        raise ValueError(f"fit: {name}: {taken} name a column of the front's table "
                         f"({', '.join(FRONT_COLUMNS)}); give the objective another name")
    if items and (len(items) < 2 or len(set(names)) < len(names)
                  or not set(QUALITY_OBJECTIVES) & set(names)):
        raise ValueError(f"fit: {name} needs at least two different objectives, one of them "
                         f"accuracy, r2 or loss (e.g. accuracy,params), got {names}")
    return items


def _setting(default: Any, doc: str, check: Any, choices: tuple | None = None) -> Any:
    return field(default=default, metadata={"doc": doc, "check": check, "choices": choices})


@dataclass(frozen=True)
class FitConfig:
    """Everything that decides a ``fit`` run's result; stored in its checkpoints, checked on
    resume, and built by the command from its flags.

    Each field's doc is ``FitConfig.doc(name)`` (what ``tinyevo fit --help`` prints). A field
    left None is chosen by ``fit`` (the doc says how); on resume, it is the checkpoint's.
    Defaults: the seed's AutoFlux ImageClassifier scaled to minutes on a CPU (docs/fit.md).
    """

    population_size: int | None = _setting(
        None, f"candidates per generation (None: {POPULATION}, or {LARGE_DATA_POPULATION} on "
        "large data, where a generation trains on less than one pass)",
        _count(2, "None or an int >= 2"))
    batch_size: int = _setting(32, "training samples per batch", _count(1, optional=False))
    batch_size_search: bool = _setting(
        False, "search each candidate's training batch size too (the seed's "
        "TrainBatchSizeMutation): drawn at batch_size x 2^-2..2, mutated and crossed over",
        _flag)
    batches_per_generation: int | None = _setting(
        None, f"training batches of the first generation (None: one pass over the training "
        f"split, at most {DEFAULT_BATCHES})", _count(1, "None or an int >= 1"))
    budget_growth: float = _setting(
        0.1, "extra share of the first generation's batches each generation adds",
        lambda n, v: real(n, v, 0.0, None, ">= 0 (0: the same budget every generation)"))
    valid_fraction: float | None = _setting(
        None, f"share of each class held out for validation (None: {VALID_FRACTION}); not "
        "with valid=", lambda n, v: real(n, v, 0.0, 1.0, "in (0, 1)", optional=True,
                                         open_low=True, open_high=True))
    valid_max: int | None = _setting(
        None, f"validation samples, at most (None: {VALID_MAX:,}; 0: no cap); not with valid=",
        lambda n, v: v if v == 0 and not isinstance(v, bool) else integer(
            n, v, 2, optional=True, expected="None, 0 (no cap) or an int >= 2"))
    augment: bool = _setting(False, "shift image batches by up to one pixel each way (images "
                                    "(N, C, H, W) only)", _flag)
    seed: int | None = _setting(None, "the run's random seed (None: drawn at random)",
                                _count(0))
    elites: int | None = _setting(
        None, f"candidates the default strategy keeps unchanged (None: {ELITES}, or half the "
        "population with objectives); not with strategy=", _count(0))
    widths: tuple[int, int] | None = _setting(
        None, f"channels of the default space's first conv block, low and high (None: "
        f"{WIDTHS[0]} {WIDTHS[1]}; the second block draws up to twice high); conv data only, "
        "not with search_space=", _widths)
    candidate_time_limit: float | None = _setting(
        None, "seconds one candidate may train in a generation; past it, fitness 0 (None: no "
        "limit)", lambda n, v: real(n, v, 0.0, None, "None or a positive number of seconds",
                                    optional=True, open_low=True))
    lr_schedule: str = _setting(
        "constant", "learning rate within a generation: constant, or cosine (decays to 0 over "
        "each generation's training)", _one_of(LR_SCHEDULES), LR_SCHEDULES)
    tiebreak: str | None = _setting(
        None, "among equally accurate models: the more confident (loss) or the smaller "
        "(size) wins (None: loss; classification only)",
        lambda n, v: None if v is None else _one_of(TIEBREAKS)(n, v), TIEBREAKS)
    optimizer_state: str = _setting(
        "keep", "optimiser state between generations: keep (into checkpoints and children) or "
        "reset", _one_of(OPTIMIZER_STATES), OPTIMIZER_STATES)
    fitness_ewma: float = _setting(
        0.0, "weight of the parent's fitness in a candidate's (the seed's EwmaFitness; 0: off)",
        _share("in [0, 1) (the weight of the parent's fitness; 0 turns it off)",
               optional=False))
    final_training: float | None = _setting(
        None, f"share of time_limit kept to train the best model at the end (None: "
        f"{FINAL_TRAINING} on large data, else 0; 0: off)",
        _share("None or in [0, 1) (the share of time_limit kept to train the best model at "
               "the end; 0 turns it off)"))
    max_macs: float | None = _setting(
        None, f"ceiling on a model's multiply-adds per sample (None: "
        f"{LARGE_DATA_MACS_PER_VALUE:,} per input value on large data, else none; 0: none)",
        lambda n, v: real(n, v, 0.0, None, "None or >= 0 multiply-adds per sample (0 turns "
                          "the ceiling off)", optional=True))

    task: str | None = _setting(
        None, "classification (integer labels) or regression (numbers; MSE, R² fitness) "
        "(None: inferred from the targets: floats with a fractional part are regression)",
        lambda n, v: None if v is None else _one_of(TASKS)(n, v), TASKS)
    standardize: bool | None = _setting(
        None, "standardise the inputs inside each drawn model (a fixed first layer, saved and "
        "exported with it, so it takes raw data) (None: for (N, F) tabular data only)",
        lambda n, v: None if v is None else _flag(n, v))
    objectives: tuple[str, ...] | None = _setting(
        None, f"search a Pareto front of these objectives, e.g. accuracy,params (of "
        f"{', '.join(OBJECTIVES)}; None: none, a single-objective search)", _objectives)

    def __post_init__(self) -> None:
        for f in fields(self):
            object.__setattr__(self, f.name, f.metadata["check"](f.name, getattr(self, f.name)))

    @classmethod
    def doc(cls, name: str) -> str:
        """What the setting ``name`` means (the command's help for its flag)."""
        return next(f.metadata["doc"] for f in fields(cls) if f.name == name)

    def batches_at(self, generation: int, ntrain: int) -> int:
        """The training budget of ``generation``, in batches (the same for every candidate)."""
        base = self.batches_per_generation or default_batches(ntrain, self.batch_size)
        return max(1, int(round(base * (1.0 + self.budget_growth * (generation - 1)))))

    def to_json(self) -> dict:
        """The settings as a checkpoint stores them."""
        d = asdict(self)
        d["widths"] = None if self.widths is None else list(self.widths)
        d["objectives"] = None if self.objectives is None else [
            o if isinstance(o, str) else o.name for o in self.objectives]
        return d


def default_batches(ntrain: int, batch_size: int) -> int:
    """The first generation's default training budget: one pass over the training split, but
    at most :data:`DEFAULT_BATCHES` batches, so that the time of a generation does not grow
    with the data (see docs/fit.md)."""
    return max(1, min(math.ceil(ntrain / batch_size), DEFAULT_BATCHES))


def configure(config: FitConfig | None, settings: dict[str, Any]) -> FitConfig:
    """``config`` (default: all defaults) with the keyword ``settings`` of ``fit`` in place of
    its fields; a name that is no setting is a TypeError that lists the settings."""
    if config is not None and not isinstance(config, FitConfig):
        raise TypeError(f"fit: config must be a FitConfig, got {type(config).__name__}; build "
                        "one with tinyevo.app.FitConfig(...) or pass the settings as keywords")
    names = [f.name for f in fields(FitConfig)]
    for name in settings:
        if name not in names:
            close = difflib.get_close_matches(name, names, n=1)
            hint = f"did you mean {close[0]}? " if close else ""
            raise TypeError(f"fit() got an unexpected keyword argument {name!r}; {hint}its "
                            f"settings are the fields of FitConfig: {', '.join(names)}")
    return replace(config or FitConfig(), **settings)


def check_combination(config: FitConfig, kind: str, *, valid: Any, search_space: Any,
                      mutation: Any, crossover: Any, strategy: Any,
                      task: str = "classification") -> None:
    """Refuse a setting that the rest of the call would ignore, or that does not fit the
    ``task``: a ValueError that says which, why, and what to do instead."""
    if task == "regression" and config.tiebreak is not None:
        raise ValueError("fit: tiebreak= breaks ties between equally accurate classifiers; a "
                         "regression's fitness, R², has no such ties. Leave tiebreak out")
    wrong = {"classification": "r2", "regression": "accuracy"}[task]
    names = [o if isinstance(o, str) else o.name for o in config.objectives or ()]
    if wrong in names:
        raise ValueError(f"fit: the objective {wrong} is for "
                         f"{'regression' if wrong == 'r2' else 'classification'}, and this "
                         f"run is {task}; use {'accuracy' if wrong == 'r2' else 'r2'} or loss")
    if strategy is not None:
        given = [n for n, v in (("mutation", mutation), ("crossover", crossover),
                                ("elites", config.elites)) if v is not None]
        if given:
            raise ValueError(f"fit: {'= and '.join(given)}= would be ignored: they configure "
                             "the default strategy, and strategy= replaces it. Build them into "
                             "your strategy (e.g. tinyevo.app.defaults.default_strategy("
                             "population_size, mutation, crossover, elites)) or leave "
                             "strategy= out")
    if config.widths is not None and kind == "dense":
        raise ValueError("fit: widths= sizes the conv blocks of the default search space, and "
                         "(N, F) data gets a space of dense layers without any; leave widths "
                         "out, or pass search_space= to choose the layers")
    if config.widths is not None and search_space is not None:
        raise ValueError("fit: widths= would be ignored: it sizes the default search space, "
                         "and search_space= replaces it; give the widths in your space, or "
                         "leave search_space= out")
    if config.augment and kind != "conv2d":
        raise ValueError(f"fit: augment=True shifts images (N, C, H, W) by a pixel, but the "
                         f"data is {kind} ({'(N, F)' if kind == 'dense' else '(N, C, L)'}); "
                         "leave augment out")
    given = [n for n in ("valid_fraction", "valid_max") if getattr(config, n) is not None]
    if valid is not None and given:
        raise ValueError(f"fit: {'= and '.join(given)}= would be ignored: they size the "
                         "validation split held out of x, and valid= gives the validation "
                         "data instead; leave them out, or leave valid= out")


def plain_defaults() -> dict[str, Any]:
    """What a new run chooses for the settings left None that do not depend on the size of
    the data (the seed drawn from the operating system's entropy)."""
    return {"seed": int(np.random.SeedSequence().entropy % 2**31),
            "valid_fraction": VALID_FRACTION, "valid_max": VALID_MAX, "widths": WIDTHS,
            "objectives": (), "tiebreak": "loss"}


def data_choices(kind: str, task: str) -> dict[str, Any]:
    """What a new run chooses for ``task`` and ``standardize`` on data of ``kind`` (the
    inferred ``task``): tabular data standardised, images and signals as they are."""
    return {"task": task, "standardize": kind == "dense"}


def small_data_config() -> FitConfig:
    """The settings a run on small data chooses where it is given none (but the seed)."""
    return FitConfig(population_size=POPULATION, valid_fraction=VALID_FRACTION,
                     valid_max=VALID_MAX, elites=ELITES, widths=WIDTHS, final_training=0.0,
                     objectives=(), task="classification", standardize=False,
                     tiebreak="loss")


def data_defaults(config: FitConfig, ntrain: int, sample_shape: tuple[int, ...]
                  ) -> dict[str, Any]:
    """What a new run chooses for ``population_size``, ``elites``, ``final_training`` and
    ``max_macs`` on ``ntrain`` training samples of ``sample_shape``.

    *Large data* is data of which the first generation's training budget is less than one
    pass (MNIST, not digits): the search cannot train its models to the end there, so it runs
    cheaper generations (a smaller population, a ceiling on model cost) and trains the winner
    at the end (docs/fit.md). With objectives, half the population are elites: NSGA-II's
    survivors (its parents and children compete for half the places each generation)."""
    large = config.batches_at(1, ntrain) * config.batch_size < ntrain
    population = config.population_size or (LARGE_DATA_POPULATION if large else POPULATION)
    return {"population_size": population,
            "elites": population // 2 if config.objectives else ELITES,
            "final_training": FINAL_TRAINING if large else 0.0,
            "max_macs": (LARGE_DATA_MACS_PER_VALUE * int(np.prod(sample_shape)) if large
                         else None)}
