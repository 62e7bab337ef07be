"""FitConfig: settings as keywords or a config, each checked, and what fit refuses to ignore."""

import numpy as np
import pytest
from evolution_cases import fit_summary

import tinyevo as te

pytest.importorskip("sklearn")

TINY = dict(population_size=3, batches_per_generation=2, batch_size=16, widths=(4, 8),
            seed=5)




def _dense(n=60):
    rng = np.random.default_rng(0)
    y = np.arange(n) % 3
    x = rng.standard_normal((n, 4)).astype(np.float32)
    x[np.arange(n), y] += 3.0
    return x, y


def _given_with_strategy(**kwargs):
    from tinyevo.app import defaults

    strategy = defaults.default_strategy(3, defaults.default_mutation("conv2d", 10),
                                         defaults.default_crossover())
    return dict(strategy=strategy, **kwargs)


@pytest.mark.parametrize("data, extra, match", [
    ("digits", lambda: _given_with_strategy(mutation=lambda g: g), "mutation= would be ignored"),
    ("digits", lambda: _given_with_strategy(crossover=lambda p: p), "crossover= would be"),
    ("digits", lambda: _given_with_strategy(elites=1), "elites= would be ignored"),
    ("dense", lambda: dict(widths=(4, 8)), "widths= sizes the conv blocks"),
    ("digits", lambda: dict(widths=(4, 8), search_space=__import__(
        "tinyevo.app.defaults").app.defaults.default_search_space("conv2d", 10)),
     "search_space= replaces it"),
    ("dense", lambda: dict(augment=True), "augment=True shifts images"),
    ("conv1d", lambda: dict(augment=True), r"\(N, C, L\)"),
    ("digits", lambda: dict(valid=None, valid_fraction=0.2), "valid_fraction= would be"),
    ("digits", lambda: dict(valid=None, valid_max=100), "valid_max= would be ignored"),
], ids=["mutation+strategy", "crossover+strategy", "elites+strategy", "widths+dense",
        "widths+search_space", "augment+dense", "augment+conv1d", "valid_fraction+valid",
        "valid_max+valid"])
def test_an_argument_the_run_would_ignore_is_refused_before_any_work(digits, tmp_path, data,
                                                                     extra, match):
    x, y = {"digits": digits, "dense": _dense(), "conv1d": (digits[0][:, :, 0],
                                                            digits[1])}[data]
    kwargs = extra()
    if "valid" in kwargs:
        kwargs["valid"] = (x[:30], y[:30])
    with pytest.raises(ValueError, match=match):
        te.fit(x, y, generations=1, mdir=tmp_path / "run", **kwargs)
    assert not (tmp_path / "run").exists()


def test_persist_itself_as_a_callback_is_refused_before_any_work(digits, tmp_path):
    from tinyevo.app import persist

    x, y = digits
    with pytest.raises(TypeError, match=r"pass persist\(mdir\)"):
        te.fit(x, y, generations=1, callbacks=[persist], mdir=tmp_path / "run", **TINY)
    assert not (tmp_path / "run").exists()


def test_the_defaults_given_explicitly_are_honoured_where_they_apply(digits):
    x, y = digits
    settings = {**TINY, "seed": 2}
    # the same default strategy, given by hand with the run's population size and elites
    from tinyevo.app import defaults
    strategy = defaults.default_strategy(3, defaults.default_mutation("conv2d", 10),
                                         defaults.default_crossover(), 2)
    mine = te.fit(x, y, generations=2, strategy=strategy, **settings)
    assert fit_summary(mine) == fit_summary(te.fit(x, y, generations=2, elites=2, **settings))
    # augment shifts image batches: another run than without
    shifted = te.fit(x, y, generations=1, augment=True, **settings)
    assert fit_summary(shifted)[0] != fit_summary(te.fit(x, y, generations=1, **settings))[0]


def test_settings_come_as_keywords_or_a_config_and_unknown_names_are_refused(digits):
    from tinyevo.app import FitConfig

    x, y = digits
    by_keywords = te.fit(x, y, generations=1, **TINY)
    by_config = te.fit(x, y, generations=1, config=FitConfig(**TINY))
    assert fit_summary(by_keywords) == fit_summary(by_config)
    # a keyword replaces the config's field
    other = te.fit(x, y, generations=1, config=FitConfig(**{**TINY, "seed": 9}), seed=5)
    assert fit_summary(other) == fit_summary(by_keywords)
    with pytest.raises(TypeError, match="did you mean batch_size"):
        te.fit(x, y, generations=1, batchsize=8)
    with pytest.raises(TypeError, match="config must be a FitConfig"):
        te.fit(x, y, generations=1, config={"seed": 1})
    with pytest.raises(ValueError, match="widths must be None or two ints"):
        FitConfig(widths=(8, 4))
    assert "validation" in FitConfig.doc("valid_fraction")


def test_default_budget_is_one_pass_at_most_50_batches():
    from tinyevo.app.config import FitConfig

    assert FitConfig().batches_at(1, 942) == 30                # digits: one pass, as before
    assert FitConfig().batches_at(1, 58000) == 50              # MNIST: capped
    assert FitConfig().batches_at(11, 58000) == 100            # + 10 % of that per generation


def test_a_number_too_large_for_a_float_is_refused_with_the_setting_named():
    from tinyevo.app.config import FitConfig
    with pytest.raises(ValueError, match="final_training must be"):
        FitConfig(final_training=10**400)
