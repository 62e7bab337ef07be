"""scikit-learn estimators: ``EvoClassifier`` and ``EvoRegressor`` evolve a network with
:func:`tinyevo.fit` inside ``fit(X, y)``, so a search goes where scikit-learn users already are:
``Pipeline``, ``cross_val_score``, ``GridSearchCV``.

    >>> from sklearn.model_selection import cross_val_score
    >>> cross_val_score(EvoClassifier(time_limit=30, random_state=0), X, y, cv=5)  # doctest: +SKIP

They follow scikit-learn's conventions ("Rolling your own estimator"): ``__init__`` only stores
its arguments, ``fit`` validates the data with scikit-learn's own tools and returns ``self``,
what it learns ends in ``_``. Each row of ``X`` is one sample of F features; ``input_shape``
reshapes it (e.g. to ``(1, 28, 28)``) for the convolutional search spaces. Class labels of any
kind are mapped to 0..K-1 for tinyevo and back. docs/sklearn.md has the parameters, the fitted
attributes and the scikit-learn checks that do not apply to a NAS estimator.
"""

from __future__ import annotations

import math
import numbers
import time
from dataclasses import fields
from typing import Any

import numpy as np

try:
    from joblib import effective_n_jobs
    from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
    from sklearn.utils.multiclass import check_classification_targets
    from sklearn.utils.validation import check_is_fitted, check_random_state, validate_data
except ImportError as err:      # tinyevo.EvoClassifier reaches here only on first use
    raise ImportError("tinyevo's scikit-learn estimators need scikit-learn >= 1.6; install it "
                      "with pip install 'tinyevo[app]'") from err

import tinyevo.app.fitting as fitting
from tinyevo.app.callbacks import fitness_value
from tinyevo.app.config import FitConfig
from tinyevo.app.data import checked_float32
from tinyevo.metrics import outputs, softmax

__all__ = ["EvoClassifier", "EvoRegressor"]

PREDICT_BATCH = 256     # samples per forward pass in predict
# Settings the estimator's own parameters set: a `settings` dict may not set them again.
OWN_SETTINGS = {"seed": "random_state", "population_size": "population_size",
                "batch_size": "batch_size", "task": "the estimator (classifier or regressor)"}


class _EvoEstimator(BaseEstimator):
    """What both estimators share: the parameters, the call of ``tinyevo.fit``, the model's
    outputs on validated samples."""

    _task = ""

    def __init__(self, generations: int | None = None, time_limit: float | None = 60.0,
                 population_size: int | None = None, batch_size: int = 32,
                 random_state: Any = None, n_jobs: int | None = None, initial: Any = None,
                 input_shape: tuple[int, ...] | None = None, settings: dict | None = None,
                 verbose: int = 0) -> None:
        self.generations = generations
        self.time_limit = time_limit
        self.population_size = population_size
        self.batch_size = batch_size
        self.random_state = random_state
        self.n_jobs = n_jobs
        self.initial = initial
        self.input_shape = input_shape
        self.settings = settings
        self.verbose = verbose

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.non_deterministic = False      # a fixed random_state gives the same model
        return tags

    # ------------------------------------------------------------------ fit
    def _evolve(self, x: np.ndarray, y: np.ndarray, sample_weight: Any,
                fitted: dict[str, Any]) -> None:
        """Run ``tinyevo.fit`` on validated ``x`` (N, F) and targets ``y`` as tinyevo takes
        them; then, where it succeeded, set the fitted attributes: those they share, and
        ``fitted`` (each estimator's own)."""
        name = type(self).__name__
        if sample_weight is not None:
            raise ValueError(f"{name} does not support sample_weight: tinyevo trains every "
                             "candidate on the same unweighted batches. To weight samples, "
                             "resample the training data in proportion to the weights (e.g. "
                             "rng.choice(len(X), size=len(X), p=w / w.sum())) and fit on that")
        kwargs = self._fit_arguments(x.shape[1])
        history: list[dict] = []
        start = time.monotonic()

        def record(population: Any) -> None:
            values = [fitness_value(c) for c in population]
            valid = [v for v in values if math.isfinite(v)]
            row = {"generation": int(population.generation),
                   "best": max(valid) if valid else math.nan,
                   "mean": math.fsum(valid) / len(valid) if valid else math.nan,
                   "seconds": time.monotonic() - start}
            history.append(row)
            if self.verbose:
                print(f"{name}: generation {row['generation']}: best fitness {row['best']:.4f}, "
                      f"mean {row['mean']:.4f}, {row['seconds']:.0f} s", flush=True)

        samples = self._shaped(x, tuple(self.input_shape or x.shape[1:]))
        population = fitting.fit(samples, y, callbacks=[record], **kwargs)
        # Only now, the run done: a fit that fails leaves the estimator as it was.
        best = fitting.result_model(population)
        for key, value in fitted.items():
            setattr(self, key, value)
        self._sample_shape = samples.shape[1:]     # what predict reshapes rows to
        self.model_ = best.graph()
        self.best_fitness_ = fitness_value(best)
        self.population_ = population
        self.history_ = history

    def _fit_arguments(self, nfeatures: int) -> dict[str, Any]:
        """The keywords of ``tinyevo.fit`` for this estimator's parameters, each checked."""
        name = type(self).__name__
        settings = {} if self.settings is None else self.settings
        if not isinstance(settings, dict):
            raise ValueError(f"{name}: settings must be None or a dict of FitConfig settings "
                             f"(e.g. {{'lr_schedule': 'cosine'}}), got {settings!r}")
        known = {f.name for f in fields(FitConfig)}
        for key in settings:
            if key in OWN_SETTINGS:
                raise ValueError(f"{name}: settings[{key!r}] is set by {OWN_SETTINGS[key]}; "
                                 f"leave it out of settings")
            if key not in known:
                raise ValueError(f"{name}: settings[{key!r}] is no tinyevo setting; the settings "
                                 f"are the fields of FitConfig: {', '.join(sorted(known))}")
        _check_input_shape(name, self.input_shape, nfeatures)
        if not isinstance(self.verbose, numbers.Integral) or self.verbose < 0:
            raise ValueError(f"{name}: verbose must be an int >= 0, got {self.verbose!r}")
        return dict(settings, generations=self.generations, time_limit=self.time_limit,
                    population_size=self.population_size, batch_size=self.batch_size,
                    seed=_seed(name, self.random_state), executor=_workers(name, self.n_jobs),
                    task=self._task, initial=self.initial)

    # ------------------------------------------------------------------ predict
    def _model_outputs(self, X: Any) -> np.ndarray:
        """The model's outputs (N, K) on ``X``, checked as ``fit`` checked its samples."""
        check_is_fitted(self)
        x = validate_data(self, X, reset=False, dtype=[np.float32, np.float64])
        x = self._shaped(x, self._sample_shape)
        return outputs(self.model_, x, PREDICT_BATCH)

    def _shaped(self, x: np.ndarray, sample_shape: tuple[int, ...]) -> np.ndarray:
        """Rows of features ``x`` as float32 samples of ``sample_shape``."""
        x32 = checked_float32(x, f"{type(self).__name__}: X")
        return x32.reshape((len(x32),) + tuple(sample_shape))


class EvoClassifier(ClassifierMixin, _EvoEstimator):
    """A classifier whose architecture and weights tinyevo evolves in ``fit``.

        >>> clf = EvoClassifier(time_limit=30, random_state=0).fit(X, y)  # doctest: +SKIP
        >>> clf.predict(X[:3]), clf.predict_proba(X[:3])                   # doctest: +SKIP

    Parameters (each stored as given; checked in ``fit``):

    - ``generations``, ``time_limit``: stop after this many generations or seconds of each
      ``fit`` (the first reached; at least one must be given). Default: 60 s.
    - ``population_size``, ``batch_size``: tinyevo's settings of those names (None: 12).
    - ``random_state``: None (a random run), an int >= 0 (tinyevo's seed) or a
      ``numpy.random.RandomState`` (a seed is drawn from it).
    - ``n_jobs``: candidates evaluated in this many worker processes (None or 1: in this
      process; -1: one per core); the result is the same.
    - ``initial``: a warm start: a list of models (CompGraphs, saved model folders, or
      candidates) that are the first members of generation 1.
    - ``input_shape``: the shape of one sample, e.g. ``(1, 28, 28)``: each row of ``X`` is
      reshaped to it (None: rows of features).
    - ``settings``: a dict of further :class:`~tinyevo.app.FitConfig` settings, e.g.
      ``{"lr_schedule": "cosine"}``.
    - ``verbose``: > 0 prints a line per generation.

    Fitted attributes: ``classes_``, ``n_features_in_`` (``feature_names_in_`` for a
    DataFrame), ``model_`` (the CompGraph: the final training's model, else the best ever
    evaluated), ``best_fitness_`` (its validation fitness), ``population_`` (what
    ``tinyevo.fit`` returned), ``history_`` (a dict per generation: generation, best, mean,
    seconds).
    """

    _task = "classification"

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_label = False
        return tags

    def fit(self, X: Any, y: Any, sample_weight: Any = None) -> EvoClassifier:
        """Evolve a classifier of ``X`` (N, F) for labels ``y`` (N,) of any kind; ``self``.

        A stratified share of the data (FitConfig.valid_fraction) is held out to score the
        candidates. ``sample_weight`` must be None (tinyevo trains on unweighted batches)."""
        X, y = validate_data(self, X, y, dtype=[np.float32, np.float64], ensure_min_samples=2)
        check_classification_targets(y)
        classes, labels = np.unique(y, return_inverse=True)
        counts = np.bincount(labels)
        if len(classes) < 2:
            raise ValueError(f"{type(self).__name__}: y has one class only ({classes[0]!r}); "
                             "a classifier needs samples of at least two classes")
        if counts.max() < 2:
            raise ValueError(f"{type(self).__name__}: every class has a single sample, and "
                             "tinyevo holds out a share of each class (of those with 2 or more "
                             "samples) to validate on; give more samples")
        self._evolve(X, labels.astype(np.int64), sample_weight, {"classes_": classes})
        return self

    def predict(self, X: Any) -> np.ndarray:
        """The class (from ``classes_``) of each row of ``X``."""
        logits = self._model_outputs(X)                     # checks first that fit was called
        return self.classes_[logits.argmax(axis=1)]

    def predict_proba(self, X: Any) -> np.ndarray:
        """Class probabilities (N, len(classes_)), the softmax of the model's logits, columns
        in the order of ``classes_``."""
        return softmax(self._model_outputs(X))


class EvoRegressor(RegressorMixin, _EvoEstimator):
    """A regressor whose architecture and weights tinyevo evolves in ``fit`` (mean squared
    error on standardised targets, scored by validation R^2).

        >>> reg = EvoRegressor(time_limit=30, random_state=0).fit(X, y)    # doctest: +SKIP
        >>> reg.predict(X[:3]), reg.score(X, y)                            # doctest: +SKIP

    Its parameters are :class:`EvoClassifier`'s. Targets ``y`` are floats (N,) or (N, K);
    ``predict`` returns the same shape, in ``y``'s units. Fitted attributes as the
    classifier's, with ``n_outputs_`` (K) in place of ``classes_``.
    """

    _task = "regression"

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags

    def fit(self, X: Any, y: Any, sample_weight: Any = None) -> EvoRegressor:
        """Evolve a regressor of ``X`` (N, F) for targets ``y`` (N,) or (N, K); ``self``.

        A share of the data (FitConfig.valid_fraction) is held out to score the candidates.
        ``sample_weight`` must be None (tinyevo trains on unweighted batches)."""
        X, y = validate_data(self, X, y, dtype=[np.float32, np.float64], multi_output=True,
                             y_numeric=True, ensure_min_samples=2)
        y = np.asarray(y, dtype=np.float64)
        self._evolve(X, y, sample_weight, {"n_outputs_": 1 if y.ndim == 1 else y.shape[1],
                                           "_target_shape": y.shape[1:]})
        return self

    def predict(self, X: Any) -> np.ndarray:
        """Predictions in ``y``'s units: (N,) for targets that were (N,) in ``fit``, else
        (N, K)."""
        out = self._model_outputs(X).astype(np.float64)
        return out.reshape((len(out),) + self._target_shape)


def _seed(name: str, random_state: Any) -> int | None:
    """tinyevo's seed for scikit-learn's ``random_state``: None stays None (a random run), an
    int is the seed, a RandomState draws one."""
    if random_state is None:
        return None
    if isinstance(random_state, numbers.Integral) and not isinstance(random_state, bool):
        if random_state < 0:
            raise ValueError(f"{name}: random_state must be None, an int >= 0 or a "
                             f"numpy.random.RandomState, got {random_state!r}")
        return int(random_state)
    return int(check_random_state(random_state).randint(np.iinfo(np.int32).max))


def _workers(name: str, n_jobs: Any) -> int | None:
    """``tinyevo.fit``'s executor for ``n_jobs``: None (this process) or a number of worker
    processes; -1 is one per core, -2 all but one, as in scikit-learn."""
    if n_jobs is not None and (not isinstance(n_jobs, numbers.Integral)
                               or isinstance(n_jobs, bool) or n_jobs == 0):
        raise ValueError(f"{name}: n_jobs must be None, a positive int or a negative one "
                         f"(-1: every core), got {n_jobs!r}")
    workers = effective_n_jobs(n_jobs)
    return None if workers <= 1 else int(workers)


def _check_input_shape(name: str, input_shape: Any, nfeatures: int) -> None:
    """``input_shape`` is None, or a sample shape of ``nfeatures`` values that tinyevo takes:
    (C, L) signals or (C, H, W) images."""
    if input_shape is None:
        return
    shape = tuple(input_shape) if isinstance(input_shape, tuple | list) else ()
    if (len(shape) not in (2, 3) or not all(isinstance(d, numbers.Integral)
                                            and not isinstance(d, bool) and d >= 1
                                            for d in shape)):
        raise ValueError(f"{name}: input_shape must be None or the shape of one sample, (C, L) "
                         f"or (C, H, W) positive ints, e.g. (1, 28, 28); got {input_shape!r}")
    if math.prod(shape) != nfeatures:
        raise ValueError(f"{name}: input_shape {shape} holds {math.prod(shape)} values, but "
                         f"each row of X has {nfeatures} features; they must match")
