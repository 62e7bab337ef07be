"""Tampered checkpoints and saved models (issue #22 items 8 and 14)."""

import json
import shutil
import zipfile

import numpy as np
import pytest

import tinyevo as te
from tinyevo.app.checkpoint import load_checkpoint
from tinyevo.layers import Layer

QUICK = dict(generations=1, population_size=2, batches_per_generation=1, seed=0,
             standardize=False)     # vertex 1 is a Dense layer, which the tests edit


def _data():
    x = np.random.default_rng(0).standard_normal((60, 4)).astype(np.float32)
    return x, np.arange(60) % 3


@pytest.fixture(scope="module")
def originals(tmp_path_factory):
    """One finished run (its checkpoint) and its best model saved with save_model."""
    root = tmp_path_factory.mktemp("originals")
    population = te.fit(*_data(), mdir=root / "run", **QUICK)
    te.save_model(population.best(), root / "model")
    return root


@pytest.fixture
def run(originals, tmp_path):
    return shutil.copytree(originals / "run", tmp_path / "run")


@pytest.fixture
def model(originals, tmp_path):
    return shutil.copytree(originals / "model", tmp_path / "model")


def _edit(path, change):
    doc = json.loads(path.read_text())
    change(doc)
    path.write_text(json.dumps(doc))


def _set(*keys, value=None, delete=False):
    """A change that sets (or deletes) the field at ``keys`` of a JSON document."""
    def change(doc):
        for key in keys[:-1]:
            doc = doc[key]
        if delete:
            del doc[keys[-1]]
        else:
            doc[keys[-1]] = value
    return change


def _snapshot(folder):
    """Every path under ``folder`` with the bytes of its files."""
    return {p.relative_to(folder): p.read_bytes() if p.is_file() else None
            for p in sorted(folder.rglob("*"))}


def _refuse_to_build_layers(monkeypatch):
    """Building any layer fails the test: the checks must come first."""
    def built(self, *args, **kwargs):
        raise AssertionError(f"a {type(self).__name__} was built before the file was checked")
    monkeypatch.setattr(Layer, "__init__", built)


MEMBER_LAYER = ("members", 0, "model", "vertices", 1, "layer")
MODEL_LAYER = ("spec", "vertices", 1, "layer")


# ---------------------------------------------------------------------- item 8: sizes

@pytest.mark.parametrize("nout, match", [
    (10**12, r"checkpoint/state\.json is damaged: field members\[0\]\.model\.vertices\[1\]\."
             r"layer\.nout: expected an integer from 1 to 16,777,216, found 1000000000000"),
    (1000, r"checkpoint/members\.npz is damaged: array '0/1/weight' has shape \(\d+, 4\), "
           r"expected \(1000, 4\) as the Dense of .*state\.json field members\[0\]\.model\."
           r"vertices\[1\]\.layer"),
])
def test_a_declared_size_in_a_checkpoint_is_checked_before_anything_is_built(
        run, monkeypatch, nout, match):
    _edit(run / "checkpoint" / "state.json", _set(*MEMBER_LAYER, "nout", value=nout))
    _refuse_to_build_layers(monkeypatch)
    with pytest.raises(ValueError, match=match):
        load_checkpoint(run)


@pytest.mark.parametrize("nout, match", [
    (10**12, r"model\.json does not describe a valid model: field spec\.vertices\[1\]\.layer"
             r"\.nout: expected an integer from 1 to 16,777,216, found 1000000000000"),
    (1000, r"weights\.npz does not match model\.json: array '1/weight' has shape \(\d+, 4\), "
           r"expected \(1000, 4\) as the Dense of .*model\.json field spec\.vertices\[1\]"),
])
def test_a_declared_size_in_a_saved_model_is_checked_before_anything_is_built(
        model, monkeypatch, nout, match):
    _edit(model / "model.json", _set(*MODEL_LAYER, "nout", value=nout))
    _refuse_to_build_layers(monkeypatch)
    with pytest.raises(ValueError, match=match):
        te.load_model(model)


def test_an_npz_header_that_declares_more_than_it_holds_is_refused(model):
    """The arrays' own sizes: NumPy allocates what a .npy header declares before reading."""
    path = model / "weights.npz"
    with zipfile.ZipFile(path, "w") as zf, zf.open("1/weight.npy", "w") as f:
        header = {"descr": "<f4", "fortran_order": False, "shape": (10**12, 4)}
        np.lib.format.write_array_header_1_0(f, header)
        f.write(b"\0" * 64)
    with pytest.raises(ValueError, match=r"weights\.npz: .*'1/weight\.npy' declares shape "
                                         r"\(1000000000000, 4\)"):
        te.load_model(model)


# ---------------------------------------------------------------------- item 14: checkpoints

@pytest.mark.parametrize("change, field, expected", [
    (_set("members", 0, "fitness", value="high"), r"members\[0\]\.fitness",
     "null or a number within a float's range, found 'high'"),
    (_set("members", 0, "fitness", value=10**400), r"members\[0\]\.fitness",
     "null or a number within a float's range, found 1000000"),
    (_set("state", "rng", delete=True), r"state\.rng", r"a value \(the field is required\)"),
    (_set("generation", value="abc"), "generation", "an integer >= 1, found 'abc'"),
    (_set("members", 0, "model", "vertices", 1, "dtype", value="object"),
     r"members\[0\]\.model\.vertices\[1\]\.dtype", r"one of \['float16', 'float32', "),
], ids=["fitness high", "fitness 10**400", "rng removed", "generation abc",
        "layer dtype object"])
def test_a_tampered_checkpoint_is_refused_naming_file_and_field(run, change, field, expected):
    _edit(run / "checkpoint" / "state.json", change)
    match = (rf"checkpoint/state\.json is damaged: field {field}: expected {expected}.*; "
             r"restore the checkpoint from a copy, or remove its folder")
    with pytest.raises(ValueError, match=match):
        load_checkpoint(run)                            # a reader, as `tinyevo show`
    with pytest.raises(ValueError, match=match):
        te.fit(*_data(), mdir=run, **{**QUICK, "generations": 2})      # resuming the run


def test_a_deeply_nested_checkpoint_is_refused(run):
    (run / "checkpoint" / "state.json").write_text('{"format": "tinyevo.checkpoint", "x": '
                                                   + "[" * 100_000 + "]" * 100_000 + "}")
    with pytest.raises(ValueError, match=r"state\.json: JSON nested too deeply to read"):
        load_checkpoint(run)


# ---------------------------------------------------------------------- item 14: saved models

@pytest.mark.parametrize("change, field, expected", [
    (_set("spec", "vertices", 1, "dtype", value="complex64"), r"spec\.vertices\[1\]\.dtype",
     r"one of \['float16', 'float32', 'float64'\], found 'complex64'"),
    (_set("spec", "vertices", 1, "dtype", value="object"), r"spec\.vertices\[1\]\.dtype",
     r"one of \['float16', 'float32', 'float64'\], found 'object'"),
    (_set(*MODEL_LAYER, "dtype", value="object"), r"spec\.vertices\[1\]\.layer\.dtype",
     r"no such field \(allowed here: "),
], ids=["dtype complex64", "dtype object", "dtype inside the layer spec"])
def test_a_tampered_model_is_refused_naming_file_and_field(model, change, field, expected):
    _edit(model / "model.json", change)
    with pytest.raises(ValueError, match=rf"model\.json does not describe a valid model: field "
                                         rf"{field}: expected {expected}.*save the model again"):
        te.load_model(model)


@pytest.mark.parametrize("depth, match", [
    (200, r"model\.json does not describe a valid model: JSON nested deeper than 64 levels"),
    (100_000, r"model\.json: JSON nested too deeply to read"),
])
def test_deeply_nested_model_json_is_refused(model, depth, match):
    _edit(model / "model.json", _set("spec", "extra", value=0))
    text = (model / "model.json").read_text().replace('"extra": 0',
                                                      '"extra": ' + "[" * depth + "]" * depth)
    (model / "model.json").write_text(text)
    with pytest.raises(ValueError, match=match):
        te.load_model(model)


# ---------------------------------------------------------------------- what still loads

def test_a_valid_model_and_checkpoint_still_load_and_resume(originals, run, model):
    x, y = _data()
    best = te.load_model(model)
    population, state = load_checkpoint(run)
    assert population.generation == 1 and len(population.members) == 2
    assert state["kind"] == "dense" and len(population.hall_of_fame) >= 1
    expected = max(population.members, key=lambda c: c.fitness).graph()(x)
    np.testing.assert_array_equal(best(x), expected)
    assert te.fit(x, y, mdir=run, **{**QUICK, "generations": 2}).generation == 2


@pytest.mark.parametrize("stray", ["empty", "half written"])
def test_a_stray_best_new_beside_a_valid_best_is_skipped_and_left_alone(model, stray):
    x, _ = _data()
    expected = te.load_model(model)(x)
    new = model.parent / ".model.new"
    new.mkdir()
    if stray == "half written":
        shutil.copy(model / "model.json", new / "model.json")
        (new / "weights.npz").write_bytes((model / "weights.npz").read_bytes()[:100])
    before = _snapshot(model.parent)
    np.testing.assert_array_equal(te.load_model(model)(x), expected)
    assert _snapshot(model.parent) == before


def test_a_stray_checkpoint_new_beside_a_valid_checkpoint_is_skipped_and_left_alone(run):
    shutil.copytree(run / "checkpoint", run / ".checkpoint.new")
    (run / ".checkpoint.new" / "members.npz").write_bytes(b"incomplete")
    before = _snapshot(run)
    assert load_checkpoint(run)[0].generation == 1
    assert _snapshot(run) == before
