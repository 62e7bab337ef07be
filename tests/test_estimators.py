"""EvoClassifier and EvoRegressor follow scikit-learn's conventions: parameters, clone, pipelines,
model selection, label mapping, clear errors, and the estimator checks that fit a NAS estimator,
all with tiny settings (a generation or two of two or three candidates)."""

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

sklearn = pytest.importorskip("sklearn")

from sklearn.base import clone  # noqa: E402
from sklearn.datasets import load_iris  # noqa: E402
from sklearn.exceptions import NotFittedError  # noqa: E402
from sklearn.model_selection import GridSearchCV, cross_val_score  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402
from sklearn.utils.estimator_checks import parametrize_with_checks  # noqa: E402

import tinyevo as te  # noqa: E402
from tinyevo.graph import CompGraph  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
TINY = dict(generations=1, population_size=2, random_state=0)

# scikit-learn's checks that do not apply, each with the reason (docs/sklearn.md lists them).
SAMPLE_WEIGHT = ("sample_weight is rejected with a ValueError: tinyevo trains every candidate "
                 "on the same unweighted batches (resample the data instead)")
FLOAT32 = ("tinyevo computes in float32, and the matrix products of one row and of many round "
           "differently (about 1e-6 relative, above the check's 1e-7)")
EXPECTED_FAILED = {
    "check_sample_weights_pandas_series": SAMPLE_WEIGHT,
    "check_sample_weights_not_an_array": SAMPLE_WEIGHT,
    "check_sample_weights_list": SAMPLE_WEIGHT,
    "check_sample_weights_shape": SAMPLE_WEIGHT,
    "check_sample_weights_not_overwritten": SAMPLE_WEIGHT,
    "check_sample_weight_equivalence_on_dense_data": SAMPLE_WEIGHT,
    "check_all_zero_sample_weights_error": SAMPLE_WEIGHT,
    "check_classifiers_one_label_sample_weights": SAMPLE_WEIGHT,
    "check_methods_subset_invariance": FLOAT32,
}


@pytest.fixture(scope="module")
def iris():
    x, y = load_iris(return_X_y=True)
    return x, y


# ------------------------------------------------------------------ import and parameters
def test_import_tinyevo_needs_no_sklearn_and_the_estimators_say_how_to_install():
    code = textwrap.dedent("""
        import sys
        sys.modules["sklearn"] = None          # as if scikit-learn were not installed
        import tinyevo
        try:
            tinyevo.EvoClassifier
        except ImportError as err:
            print(err)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=ROOT, env={"PYTHONPATH": str(ROOT)}, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "pip install 'tinyevo[app]'" in out.stdout


def test_the_estimators_are_exported_lazily():
    from tinyevo.app.estimators import EvoClassifier, EvoRegressor

    assert te.EvoClassifier is EvoClassifier and te.app.EvoRegressor is EvoRegressor
    with pytest.raises(AttributeError, match="no attribute 'EvoClassifer'"):
        te.EvoClassifer  # noqa: B018


def test_params_round_trip_through_set_params_and_clone():
    clf = te.EvoClassifier(generations=3, input_shape=(1, 2, 2), settings={"lr_schedule": "cosine"})
    params = clf.get_params()
    assert params["generations"] == 3 and params["time_limit"] == 60.0
    assert set(params) == {"generations", "time_limit", "population_size", "batch_size",
                           "random_state", "n_jobs", "initial", "input_shape", "settings",
                           "verbose"}
    clf.set_params(population_size=4, random_state=7)
    copy = clone(clf)
    assert copy is not clf and copy.get_params() == clf.get_params()
    assert copy.get_params()["population_size"] == 4
    with pytest.raises(NotFittedError):
        copy.predict(np.zeros((2, 4)))


# ------------------------------------------------------------------ model selection
def test_pipeline_with_a_scaler(iris):
    x, y = iris
    pipe = make_pipeline(StandardScaler(), te.EvoClassifier(generations=2, population_size=3,
                                                            random_state=0)).fit(x, y)
    assert set(pipe.predict(x)) <= set(y)
    assert pipe.score(x, y) > 0.5          # three classes: chance is 1/3


def test_cross_val_score_and_grid_search(iris):
    x, y = iris
    scores = cross_val_score(te.EvoClassifier(**TINY), x, y, cv=2)
    assert scores.shape == (2,) and np.all((0 <= scores) & (scores <= 1))
    search = GridSearchCV(te.EvoClassifier(**TINY), {"population_size": [2, 3]}, cv=2).fit(x, y)
    assert search.best_params_["population_size"] in (2, 3)
    assert search.best_estimator_.model_ is not None and len(search.cv_results_["params"]) == 2


# ------------------------------------------------------------------ labels and outputs
@pytest.mark.parametrize("labels", [np.array(["cat", "dog", "emu"]), np.array([-3, 5, 10]),
                                    np.array([1.0, 4.0, 9.0])])
def test_any_labels_are_mapped_and_mapped_back(iris, labels):
    x, y = iris
    clf = te.EvoClassifier(**TINY).fit(x, labels[y])
    assert list(clf.classes_) == sorted(labels)
    predicted = clf.predict(x)
    assert predicted.dtype == labels.dtype and set(predicted) <= set(labels)
    assert 0.0 <= clf.score(x, labels[y]) <= 1.0


def test_two_boolean_classes(iris):
    x, y = iris
    clf = te.EvoClassifier(**TINY).fit(x, y == 0)
    assert list(clf.classes_) == [False, True] and clf.predict(x).dtype == bool


def test_predict_proba_rows_sum_to_one_in_classes_order(iris):
    x, y = iris
    clf = te.EvoClassifier(generations=2, population_size=3, random_state=1).fit(x, y + 1)
    proba = clf.predict_proba(x[:20])
    assert proba.shape == (20, 3) and np.all(proba >= 0)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    np.testing.assert_array_equal(clf.classes_[proba.argmax(axis=1)], clf.predict(x[:20]))


def test_fitted_attributes(iris):
    x, y = iris
    clf = te.EvoClassifier(generations=2, population_size=2, random_state=0).fit(x, y)
    assert isinstance(clf.model_, CompGraph) and clf.n_features_in_ == 4
    assert [row["generation"] for row in clf.history_] == [1, 2]
    assert all(row["best"] >= row["mean"] for row in clf.history_)
    # the model is the best ever evaluated (no final training on small data)
    assert clf.population_.final is None
    assert clf.best_fitness_ == max(row["best"] for row in clf.history_)
    assert clf.population_.generation == 2


def test_same_random_state_same_model(iris):
    x, y = iris
    first = te.EvoClassifier(**TINY).fit(x, y).predict_proba(x)
    again = te.EvoClassifier(**TINY).fit(x, y).predict_proba(x)
    np.testing.assert_array_equal(first, again)
    from_state = te.EvoClassifier(**{**TINY, "random_state": np.random.RandomState(3)})
    assert from_state.fit(x, y).predict(x).shape == (150,)


def test_rows_reshaped_to_images(digits):
    x, y = digits
    flat = x.reshape(len(x), -1)
    clf = te.EvoClassifier(**TINY, input_shape=(1, 8, 8), settings={"widths": (2, 4)})
    clf.fit(flat, y)
    assert clf.n_features_in_ == 64 and clf.predict(flat[:5]).shape == (5,)
    with pytest.raises(ValueError, match="input_shape .* holds 49 values"):
        te.EvoClassifier(**TINY, input_shape=(1, 7, 7)).fit(flat, y)


def test_warm_start_from_a_fitted_model(iris):
    x, y = iris
    first = te.EvoClassifier(**TINY).fit(x, y)
    weights = [a.copy() for a in first.model_.arrays().values()]
    names = {v.name for v in first.model_.vertices}
    more = clone(te.EvoClassifier(**{**TINY, "random_state": 1}, initial=[first.model_]))
    assert more.initial[0] is not first.model_          # clone copies the parameter
    more.fit(x, y)
    assert any({v.name for v in c.graph().vertices} == names for c in more.population_)
    unchanged = [a for a, b in zip(first.model_.arrays().values(), weights)
                 if np.array_equal(a, b)]
    assert len(unchanged) == len(weights)               # the user's model is not trained
    with pytest.raises(ValueError, match="initial"):
        te.EvoClassifier(**TINY, initial=[first.model_]).fit(x[:, :3], y)


# ------------------------------------------------------------------ clear errors
def test_sample_weight_is_rejected_with_what_to_do(iris):
    x, y = iris
    with pytest.raises(ValueError, match="does not support sample_weight.*resample"):
        te.EvoClassifier(**TINY).fit(x, y, sample_weight=np.ones(len(y)))


def test_predict_checks_its_input(iris):
    x, y = iris
    clf = te.EvoClassifier(**TINY)
    with pytest.raises(NotFittedError):
        clf.predict_proba(x)
    clf.fit(x, y)
    with pytest.raises(ValueError, match="X has 3 features, but EvoClassifier is expecting 4"):
        clf.predict(x[:, :3])
    bad = x[:3].copy()
    bad[1, 2] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        clf.predict(bad)


@pytest.mark.parametrize("params, match", [
    ({"settings": {"seed": 1}}, r"settings\['seed'\] is set by random_state"),
    ({"settings": {"lr_shedule": "cosine"}}, r"settings\['lr_shedule'\] is no tinyevo setting"),
    ({"settings": ["cosine"]}, "settings must be None or a dict"),
    ({"n_jobs": 0}, "n_jobs must be"),
    ({"random_state": -1}, "random_state must be"),
    ({"input_shape": (4,)}, "input_shape must be"),
    ({"verbose": -1}, "verbose must be"),
    ({"population_size": 1}, "population_size must be"),
])
def test_bad_parameters_fail_in_fit(iris, params, match):
    x, y = iris
    clf = te.EvoClassifier(**{**TINY, **params})      # __init__ only stores them
    with pytest.raises(ValueError, match=match):
        clf.fit(x, y)


def test_a_single_class_is_refused(iris):
    x, _ = iris
    with pytest.raises(ValueError, match="one class only"):
        te.EvoClassifier(**TINY).fit(x, np.full(len(x), "a"))


# ------------------------------------------------------------------ regressor
def _linear_problem(n=300, outputs=1, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 3))
    y = 2 * x[:, 0] - x[:, 1] + 0.1 * rng.normal(size=n) + 5.0
    return x, (y if outputs == 1 else np.stack([y, -0.5 * y], axis=1))


def test_regressor_learns_a_linear_function():
    x, y = _linear_problem()
    reg = te.EvoRegressor(generations=3, population_size=3, random_state=0).fit(x[:200], y[:200])
    assert reg.n_outputs_ == 1 and reg.predict(x[200:]).shape == (100,)
    assert reg.score(x[200:], y[200:]) > 0.5


@pytest.mark.parametrize("outputs", [1, 2])
def test_regressor_predicts_in_the_shape_of_y(outputs):
    x, y = _linear_problem(n=80, outputs=outputs)
    column = y.reshape(len(y), -1)
    reg = te.EvoRegressor(**TINY).fit(x, column)
    assert reg.n_outputs_ == outputs and reg.predict(x).shape == (80, outputs)
    assert np.all(np.isfinite(reg.predict(x)))


# ------------------------------------------------------------------ scikit-learn's checks
@parametrize_with_checks([te.EvoClassifier(**TINY), te.EvoRegressor(**TINY)],
                         expected_failed_checks=lambda e: EXPECTED_FAILED)
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


def test_the_docs_list_every_expected_failure():
    text = (ROOT / "docs/sklearn.md").read_text()
    assert [name for name in EXPECTED_FAILED if f"`{name}`" not in text] == []


def test_a_failed_refit_leaves_the_fitted_estimator_as_it_was():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((60, 3))
    y = np.array(["a", "b"])[np.arange(60) % 2]
    clf = te.EvoClassifier(**TINY).fit(X, y)
    before = clf.predict(X)
    with pytest.raises(ValueError):
        clf.set_params(settings={"no_such_setting": 1}).fit(X, np.array(["x", "y", "z"])[
            np.arange(60) % 3])
    assert list(clf.classes_) == ["a", "b"]
    np.testing.assert_array_equal(clf.predict(X), before)
