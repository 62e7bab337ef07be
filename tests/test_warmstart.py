"""Warm start: ``fit(..., initial=[...])`` seeds generation 1 with the user's own models."""

from __future__ import annotations

import numpy as np
import pytest

import tinyevo as te

TINY = dict(population_size=3, batches_per_generation=2, batch_size=16, widths=(4, 8), seed=5)


def small_cnn(nclasses: int = 10) -> te.CompGraph:
    inp = te.input_vertex("image", 1, "conv2d")
    conv = te.vertex(te.layers.Conv(1, 6, 3, padding="same", activation="relu"), inp,
                     name="conv")
    pool = te.vertex(te.layers.GlobalPool(), conv, name="pool")
    return te.CompGraph(inp, te.vertex(te.layers.Dense(6, nclasses), pool, name="out",
                                       shielded=True))


def arrays_of(graph: te.CompGraph) -> dict:
    return {k: np.array(te.backend.to_numpy(a)) for k, a in graph.arrays().items()}


def test_generation_one_starts_from_the_given_weights(digits):
    x, y = digits
    mine = small_cnn()
    before = arrays_of(mine)
    population = te.app.fitting.initial_population(
        te.app.defaults.default_search_space("conv2d", 10), 1, "conv2d", 3, initial=[mine])
    assert len(population.members) == 3
    first = arrays_of(population.members[0].graph())
    assert first.keys() == before.keys()
    assert all(np.array_equal(first[k], before[k]) for k in before)

    # in fit: one member of generation 1 is the given model, trained on from its weights (2
    # batches move them a little), and the user's own object is left as it was
    fitted = te.fit(x, y, generations=1, initial=[mine], **TINY)
    names = {v.name for v in mine.vertices}
    ours = [c for c in fitted.members if {v.name for v in c.graph().vertices} == names]
    assert len(ours) == 1
    key = next(k for k in before if k.endswith("weight") and before[k].ndim == 4)
    trained = arrays_of(ours[0].graph())[key]
    assert not np.array_equal(trained, before[key])
    assert np.corrcoef(trained.ravel(), before[key].ravel())[0, 1] > 0.9
    assert all(np.array_equal(a, before[k]) for k, a in arrays_of(mine).items())


def test_initial_from_a_saved_model_folder(digits, tmp_path):
    x, y = digits
    te.save_model(small_cnn(), tmp_path / "mine")
    fitted = te.fit(x, y, generations=1, initial=[tmp_path / "mine"], **TINY)
    assert any("conv" in {v.name for v in c.graph().vertices} for c in fitted.members)


def test_vertex_names_the_search_adds_never_repeat_the_given_ones(digits):
    x, y = digits
    inp = te.input_vertex("image", 1, "conv2d")
    conv = te.vertex(te.layers.Conv(1, 6, 3, padding="same", activation="relu"), inp,
                     name="conv_40")
    pool = te.vertex(te.layers.GlobalPool(), conv, name="pool_41")
    mine = te.CompGraph(inp, te.vertex(te.layers.Dense(6, 10), pool, name="out_42"))
    fitted = te.fit(x, y, generations=3, initial=[mine], **TINY)
    for c in fitted.members:
        names = [v.name for v in c.graph().vertices]
        assert len(names) == len(set(names))


@pytest.mark.parametrize("model, message", [
    (small_cnn(nclasses=3), r"outputs of shape \(3,\).*needs \(10,\)"),
    ("no/such/folder", "cannot load a model"),
    (42, "must be a CompGraph"),
])
def test_initial_models_that_do_not_fit_the_data_are_refused_before_training(digits, model,
                                                                             message):
    x, y = digits
    with pytest.raises(ValueError, match=message):
        te.fit(x, y, generations=1, initial=[model], **TINY)


def test_initial_for_other_data_kinds_or_too_many_is_refused(digits):
    x, y = digits
    inp = te.input_vertex("x", 64)
    dense = te.CompGraph(inp, te.vertex(te.layers.Dense(64, 10), inp, name="out"))
    with pytest.raises(ValueError, match="takes dense data with 64"):
        te.fit(x, y, generations=1, initial=[dense], **TINY)
    with pytest.raises(ValueError, match="gives 4 models for a population of 3"):
        te.fit(x, y, generations=1, initial=[small_cnn() for _ in range(4)], **TINY)


def test_resume_with_the_same_initial_goes_on_and_with_others_is_refused(digits, tmp_path):
    x, y = digits
    mine = small_cnn()
    te.fit(x, y, generations=1, initial=[mine], mdir=tmp_path, **TINY)
    again = te.fit(x, y, generations=2, initial=[mine], mdir=tmp_path, **TINY)
    assert again.generation == 2
    plain = te.fit(x, y, generations=3, mdir=tmp_path, **TINY)      # initial= not needed
    assert plain.generation == 3
    with pytest.raises(ValueError, match="other initial models"):
        te.fit(x, y, generations=4, initial=[small_cnn()], mdir=tmp_path, **TINY)
