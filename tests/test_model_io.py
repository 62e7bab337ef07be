"""save_model / load_model: exact round trips, atomic replacement, clear errors, no pickle."""

import json
import zipfile

import numpy as np
import pytest

import tinyevo as te
from tinyevo.app.model_io import MODEL_VERSION, load_model, save_model
from tinyevo.layers import (
    BatchNorm,
    Conv,
    Dense,
    Dropout,
    Flatten,
    GlobalPool,
    MaxPool,
    MeanPool,
    Sequential,
)


def conv_graph():
    inp = te.input_vertex("image", 2, "conv2d")
    c1 = te.vertex(Conv(2, 4, 3, stride=2, padding="same", activation="gelu"), inp, name="c1")
    bn = te.vertex(BatchNorm(4, "relu"), c1, name="bn")
    p1 = te.vertex(MaxPool((2, 2), stride=1, padding=((0, 1), (1, 0))), bn, name="pool")
    c2 = te.vertex(Conv(4, 4, (3, 3), dilation=2, padding="same", activation="swish"), p1,
                   name="c2")
    res = te.add(p1, c2, name="res")
    cat = te.concat(res, te.vertex(MeanPool(3, stride=1, padding=1), bn, name="mean"),
                    name="cat")
    gp = te.vertex(GlobalPool("max"), cat, name="gp")
    gate = te.mul(gp, te.vertex(Dense(8, 8, "sigmoid"), gp, name="gate"), name="gated")
    drop = te.vertex(Dropout(0.2), gate, name="drop")
    out = te.vertex(Dense(8, 3), drop, name="out", shielded=True)
    graph = te.CompGraph(inp, out)
    rng = np.random.default_rng(3)
    for layer in graph.layers():
        for name, a in layer.arrays().items():
            a[...] = rng.uniform(0.5, 1.5, a.shape) if name == "running_var" else \
                rng.normal(0, 0.5, a.shape)
    return graph


def images(n=5, seed=0):
    return np.random.default_rng(seed).standard_normal((n, 2, 9, 8)).astype(np.float32)


def test_graph_round_trip_is_exact(tmp_path):
    graph = conv_graph()
    te.track_values(graph)
    y, back = graph.forward(images(), train=True)           # train once: neuron values, BN stats
    back(np.ones_like(y))
    folder = save_model(graph, tmp_path / "best")
    assert sorted(p.name for p in folder.iterdir()) == ["model.json", "weights.npz"]
    loaded = load_model(folder)
    assert isinstance(loaded, te.CompGraph)
    x = images(seed=1)
    np.testing.assert_array_equal(loaded(x), graph(x))
    assert [v.name for v in loaded.vertices] == [v.name for v in graph.vertices]
    assert loaded["out"].shielded and not loaded["c1"].shielded
    assert loaded.to_spec() == graph.to_spec()
    for a, b in zip(graph.layers(), loaded.layers()):
        assert a.arrays().keys() == b.arrays().keys()
        if a.neuron_value is not None:
            np.testing.assert_array_equal(a.neuron_value, b.neuron_value)
    # The loaded graph trains on its own arrays.
    _, back2 = loaded.forward(x, train=True)
    back2(np.ones((5, 3), np.float32))


def test_float64_and_sequential_round_trips(tmp_path):
    te.backend.set_floatx(np.float64)
    model = Sequential(Conv(1, 3, (3,), padding=1, activation="elu", dtype=np.float64),
                       BatchNorm(3, "tanh", dtype=np.float64), MaxPool(2), Flatten(),
                       Dense(9, 2, "softplus", dtype=np.float64))
    te.backend.set_floatx(np.float32)
    model[1].state["running_mean"][...] = [0.1, -0.2, 0.3]
    save_model(model, tmp_path / "seq")
    loaded = load_model(tmp_path / "seq" / "model.json")      # the file works as well
    assert isinstance(loaded, Sequential) and len(loaded) == 5
    assert loaded[0].dtype == np.float64 and loaded[4].dtype == np.float64
    x = np.random.default_rng(0).standard_normal((4, 1, 6))
    np.testing.assert_array_equal(loaded(x), model(x))


def test_candidate_and_overwrite(tmp_path):
    first, second = conv_graph(), conv_graph()
    for layer in second.layers():
        for a in layer.params.values():
            a *= 2
    save_model(te.CandidateModel(first), tmp_path / "m")
    save_model(second, tmp_path / "m")                          # replaces the previous save
    x = images()
    np.testing.assert_array_equal(load_model(tmp_path / "m")(x), second(x))
    assert [p.name for p in tmp_path.iterdir()] == ["m"]       # no staging folders left


def test_files_are_plain_json_and_arrays(tmp_path):
    save_model(conv_graph(), tmp_path / "m")
    header = json.loads((tmp_path / "m" / "model.json").read_text())
    assert header["format"] == "tinyevo.model" and header["version"] == MODEL_VERSION
    assert header["type"] == "CompGraph" and header["tinyevo"] == te.__version__
    with np.load(tmp_path / "m" / "weights.npz", allow_pickle=False) as npz:
        assert "1/weight" in npz.files and npz["1/weight"].shape == (4, 2, 3, 3)


def test_interrupted_swap_still_loads(tmp_path):
    """A crash between the renames of atomic_dir leaves only .NAME.new: load reads it."""
    graph = conv_graph()
    save_model(graph, tmp_path / "m")
    (tmp_path / "m").rename(tmp_path / ".m.new")
    np.testing.assert_array_equal(load_model(tmp_path / "m")(images()), graph(images()))


# ---------------------------------------------------------------------- errors

@pytest.fixture
def saved(tmp_path):
    return save_model(conv_graph(), tmp_path / "m")


def edit_header(folder, **changes):
    path = folder / "model.json"
    header = json.loads(path.read_text())
    header.update(changes)
    path.write_text(json.dumps(header))


def test_missing_things(tmp_path, saved):
    with pytest.raises(FileNotFoundError, match="no saved model"):
        load_model(tmp_path / "nowhere")
    (saved / "weights.npz").unlink()
    with pytest.raises(FileNotFoundError, match="weights.npz is missing"):
        load_model(saved)


def test_malformed_json(saved):
    (saved / "model.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_model(saved)


@pytest.mark.parametrize("changes,message", [
    ({"format": "something else"}, "not a tinyevo model"),
    ({"version": MODEL_VERSION + 1}, "upgrade tinyevo"),
    ({"version": "one"}, "no valid format version"),
    ({"type": "Transformer"}, "model type"),
    ({"spec": {"format": "tinyevo.CompGraph", "vertices": [{"op": "input"}]}},
     "does not describe a valid model"),
])
def test_bad_headers(saved, changes, message):
    edit_header(saved, **changes)
    with pytest.raises(ValueError, match=message):
        load_model(saved)


def test_weights_that_do_not_match(saved):
    arrays = dict(np.load(saved / "weights.npz"))
    del arrays["1/bias"]
    np.savez(saved / "weights.npz", **arrays)
    with pytest.raises(ValueError, match=r"arrays missing for \['bias'\]"):
        load_model(saved)
    weight = arrays.pop("1/weight")                    # no arrays at all for vertex 1
    np.savez(saved / "weights.npz", **arrays)
    with pytest.raises(ValueError, match=r"missing arrays \['1/bias', '1/weight'\]"):
        load_model(saved)
    arrays["1/weight"] = weight
    arrays["1/bias"] = np.zeros(4, np.float32)
    arrays["99/weight"] = np.zeros(1, np.float32)
    np.savez(saved / "weights.npz", **arrays)
    with pytest.raises(ValueError, match="unexpected arrays"):
        load_model(saved)
    del arrays["99/weight"]
    arrays["1/bias"] = np.zeros(5, np.float32)
    np.savez(saved / "weights.npz", **arrays)
    with pytest.raises(ValueError, match="shape"):
        load_model(saved)


def test_pickled_or_damaged_weights_are_refused(saved):
    np.savez(saved / "weights.npz", **{"1/weight": np.array([object()], dtype=object)})
    with pytest.raises(ValueError, match="not a readable .npz"):
        load_model(saved)
    (saved / "weights.npz").write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(ValueError, match="not a readable .npz"):
        load_model(saved)
    with zipfile.ZipFile(saved / "weights.npz", "w") as zf:
        with zf.open("1/weight.npy", "w") as f:
            np.lib.format.write_array(f, np.zeros((4, 2, 3, 3), np.int64))
    with pytest.raises(ValueError, match="expected floating point"):
        load_model(saved)


def test_save_refuses_unsafe_destinations(tmp_path):
    graph = conv_graph()
    (tmp_path / "a_file").write_text("x")
    with pytest.raises(FileExistsError, match="is a file"):
        save_model(graph, tmp_path / "a_file")
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="other files"):
        save_model(graph, tmp_path / "docs")
    assert (tmp_path / "docs" / "notes.txt").read_text() == "keep me"
    with pytest.raises(TypeError, match="CompGraph"):
        save_model({"not": "a model"}, tmp_path / "m")
    assert te.change_nout(graph, {graph["c1"]: 2}, select=False)
    with pytest.raises(ValueError, match="select_neurons"):
        save_model(graph, tmp_path / "m")


def test_round_trip_on_each_backend(xp, tmp_path):
    """Saved from the current backend, loaded onto it; the files are host arrays."""
    inp = te.input_vertex("in", 3, "dense")
    h = te.vertex(Dense(3, 5, "relu"), inp, name="h")
    graph = te.CompGraph(inp, te.vertex(BatchNorm(5, "tanh"), h, name="bn"))
    save_model(graph, tmp_path / "m")
    loaded = load_model(tmp_path / "m")
    x = xp.asarray(np.random.default_rng(0).standard_normal((4, 3)), dtype=np.float32)
    assert type(loaded(x)) is type(graph(x))
    np.testing.assert_array_equal(te.backend.to_numpy(loaded(x)), te.backend.to_numpy(graph(x)))
