"""Tables in CSV files (tinyevo.app.tables), `tinyevo fit --data FILE.csv --target COLUMN`, and
`tinyevo predict` (tinyevo.app.predict): good files, each bad file's message, a tiny run end to
end, and predict's answers, errors and hands-off run directory."""

import hashlib
import json
import shutil

import numpy as np
import pytest

import tinyevo as te
from tinyevo.app import predict as predict_module
from tinyevo.app.predict import load_run_data, predict
from tinyevo.app.tables import read_columns, read_features, read_table, table_text, write_table
from tinyevo.cli import main
from tinyevo.layers import Dense

SPECIES = ("setosa", "versicolor", "virginica")


def write(tmp_path, text, name="t.csv"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def tree_digest(folder):
    """Every file and folder under ``folder`` with its content's hash."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            if p.is_file() else "dir" for p in sorted(folder.rglob("*"))}


# ---------------------------------------------------------------------------- reading

def test_a_table_with_quotes_blank_lines_and_text_labels(tmp_path):
    path = write(tmp_path, '\ufeff"width, cm",kind, height\n'
                           '1.5,"cat, big", 2\n'
                           '\n'
                           '"-3e-1",dog,4\n'
                           '2,"cat, big",5\n'
                           '\n')
    before = path.read_bytes()
    table = read_table(path, "kind")
    assert table.feature_names == ("width, cm", "height") and table.target == "kind"
    assert table.x.dtype == np.float32 and table.x.shape == (3, 2)
    np.testing.assert_array_equal(table.x, np.float32([[1.5, 2], [-0.3, 4], [2, 5]]))
    assert table.classes == ("cat, big", "dog") and table.y.dtype == np.int64
    assert [table.classes[i] for i in table.y] == ["cat, big", "dog", "cat, big"]
    assert path.read_bytes() == before                   # reading never changes the file


def test_numeric_targets_stay_floats_and_tsv_and_semicolons_read(tmp_path):
    tsv = write(tmp_path, "a\tb\ty\n1\t2\t0\n3\t4\t1\n", "t.tsv")
    table = read_table(tsv, "y")
    assert table.classes is None and table.y.dtype == np.float64
    np.testing.assert_array_equal(table.y, [0.0, 1.0])
    semi = write(tmp_path, "a;b;y\n1.5;2;0.25\n3;4;-1\n")
    np.testing.assert_array_equal(read_table(semi, "y").x, np.float32([[1.5, 2], [3, 4]]))
    assert read_columns(semi) == ("a", "b", "y")


def test_the_split_holds_out_a_quarter_of_each_class(tmp_path):
    rows = "".join(f"{i},{'ab'[i % 2]}\n" for i in range(40))
    table = read_table(write(tmp_path, "f,label\n" + rows), "label")
    (x, y), (x_test, y_test) = table.split()
    assert len(y_test) == 10 and np.bincount(y_test).tolist() == [5, 5]
    assert sorted(np.concatenate([x, x_test])[:, 0].tolist()) == list(range(40))


BAD_FILES = [
    ("", "t", "empty"),
    ("a,b,t\n", "t", "no data rows"),
    ("area,rooms,price\n1,2,0\n", "prise", "did you mean 'price'"),
    ("a,b,T\n1,2,0\n", "t", "the columns are 'a', 'b', 'T'; did you mean 'T'"),
    ("a,a,t\n1,2,0\n", "t", "'a' appear more than once"),
    ("a,color,t\n1,2,0\n1,red,1\n", "t", "column 'color' is not numeric: line 3 holds 'red'"),
    ("a,b,t\n1,,0\n", "t", "missing value in column 'b' (a feature) at line 2"),
    ("a,b,t\n1,2,0\nNA,3,1\n", "t", "missing value in column 'a'"),
    ("a,b,t\n1,2,0\n1,2,\n", "t", "missing value in column 't' (the target) at line 3"),
    ("a,b,t\n1,2,0\n1,2\n", "t", "line 3 has 2 cells, the header 3"),
    ("t\n1\n2\n", "t", "no features"),
    ("1,2,3\n4,5,6\n", "3", "holds only numbers"),
    (",a,t\n0,1,2\n", "t", "no name in the header"),
    ("a,b,t\n1,inf,0\n", "t", "not a finite number"),
    ("a;b;t\n1,5;2;0\n", "t", "decimal commas"),
]


@pytest.mark.parametrize("text, target, message", BAD_FILES)
def test_bad_tables_say_what_is_wrong(tmp_path, text, target, message):
    with pytest.raises(ValueError, match="t.csv") as err:
        read_table(write(tmp_path, text), target)
    assert message in str(err.value)


def test_every_non_numeric_column_is_named(tmp_path):
    path = write(tmp_path, "a,city,color,t\n1,Paris,red,x\n")
    message = r"'city'.*line 2 holds 'Paris'.*'color' \(line 2: 'red'\)"
    with pytest.raises(ValueError, match=message):
        read_table(path, "t")


def test_a_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file"):
        read_table(tmp_path / "nope.csv", "t")


def test_features_by_name_ignore_other_columns(tmp_path):
    path = write(tmp_path, "b,label,a\n2,cat,1\n4,,3\n")    # the unread column may be empty
    np.testing.assert_array_equal(read_features(path, ["a", "b"]), np.float32([[1, 2], [3, 4]]))
    with pytest.raises(ValueError, match=r"missing column\(s\) 'c'"):
        read_features(path, ["a", "c"])


def test_written_tables_read_back(tmp_path):
    out = tmp_path / "out.csv"
    write_table(out, ["x", "label, text"], [np.float32([0.1, 1 / 3]), ["a,b", 'say "hi"']])
    assert out.read_text().splitlines()[1] == '0.1,"a,b"'
    table = read_table(out, "label, text")
    assert table.classes == ("a,b", 'say "hi"') and table.x[1, 0] == np.float32(1 / 3)
    with pytest.raises(ValueError, match="differ in length"):
        table_text(["a", "b"], [[1], [1, 2]])


# ---------------------------------------------------------------------------- the command

def flowers_csv(path, n=120, seed=0):
    """Four features, a text label in the middle column, three classes one feature apart."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 4)) * 0.3
    x[np.arange(n), np.arange(n) % 3] += 2.0
    lines = ["a,b,species,c,d"] + [f"{r[0]:.4f},{r[1]:.4f},{SPECIES[i % 3]},{r[2]:.4f},"
                                   f"{r[3]:.4f}" for i, r in enumerate(x)]
    path.write_text("\n".join(lines) + "\n")
    return path


FIT = ["--generations", "1", "--population", "2", "--workers", "1", "--no-progress",
       "--no-plots"]


@pytest.fixture(scope="module")
def flowers_run(tmp_path_factory):
    """A finished one-generation run on a CSV file: (data file, run directory)."""
    folder = tmp_path_factory.mktemp("flowers")
    data, run = flowers_csv(folder / "flowers.csv"), folder / "run"
    assert main(["fit", "--data", str(data), "--target", "species", "--dir", str(run)] + FIT) == 0
    return data, run


def test_fit_on_a_table_stores_what_predict_needs(flowers_run):
    data, run = flowers_run
    assert json.loads((run / "data.json").read_text()) == {
        "format": "csv", "features": ["a", "b", "c", "d"], "target": "species",
        "classes": list(SPECIES), "sample_shape": [4]}
    assert (run / "best" / "model.json").is_file()
    result = json.loads((run / "result.json").read_text())
    assert result["test_samples"] == 30


def test_predict_gives_the_best_models_labels_and_probabilities(flowers_run, tmp_path, capsys):
    data, run = flowers_run
    before = tree_digest(run)
    out = tmp_path / "predictions.csv"
    assert main(["predict", str(run), str(data), "-o", str(out)]) == 0
    assert "120 predictions" in capsys.readouterr().err
    got = read_table(out, "prediction")
    assert got.feature_names == ("p_setosa", "p_versicolor", "p_virginica")
    logits = te.load_model(run / "best")(read_table(data, "species").x)
    p = np.exp(logits - logits.max(1, keepdims=True))
    np.testing.assert_allclose(got.x, p / p.sum(1, keepdims=True), rtol=1e-5)
    assert [got.classes[i] for i in got.y] == [SPECIES[i] for i in logits.argmax(1)]
    assert main(["predict", str(run), str(data)]) == 0          # standard output
    assert capsys.readouterr().out == out.read_text()
    assert tree_digest(run) == before                           # the run is left as it was


def test_predict_reads_npz_samples_of_the_training_shape(flowers_run, tmp_path):
    data, run = flowers_run
    x = read_table(data, "species").x[:7]
    np.savez(tmp_path / "new.npz", x_test=x)
    header, columns = predict(run, tmp_path / "new.npz")
    assert header[0] == "prediction" and len(columns[0]) == 7
    np.savez(tmp_path / "wide.npz", x=np.zeros((7, 5)))
    with pytest.raises(ValueError, match=r"samples of shape \(4,\).*\(5,\)"):
        predict(run, tmp_path / "wide.npz")


def test_predict_errors(flowers_run, tmp_path, capsys):
    data, run = flowers_run
    partial = write(tmp_path, "a,b,c\n1,2,3\n", "partial.csv")
    with pytest.raises(ValueError, match=r"missing column\(s\) 'd'"):
        predict(run, partial)
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    (unfinished / "data.json").write_text((run / "data.json").read_text())
    with pytest.raises(FileNotFoundError, match="run tinyevo fit to the end first"):
        predict(unfinished, data)
    assert main(["predict", str(run), str(data), "-o", str(run / "p.csv")]) == 1
    assert "lies in the run directory" in capsys.readouterr().err
    assert not (run / "p.csv").exists()


def test_fit_refuses_a_mismatched_target_or_a_table_without_one(flowers_run, tmp_path, capsys):
    data, run = flowers_run
    assert main(["fit", "--data", "digits", "--target", "species", "--dir",
                 str(tmp_path / "r")] + FIT) == 1
    assert "needs --data FILE.csv" in capsys.readouterr().err
    assert main(["fit", "--data", str(data), "--dir", str(tmp_path / "r")] + FIT) == 1
    err = capsys.readouterr().err
    assert "needs --target COLUMN" in err and "species" in err
    assert not (tmp_path / "r").exists()


def test_a_table_without_target_lists_its_columns(flowers_run, tmp_path):
    data, _ = flowers_run
    with pytest.raises(ValueError, match="its columns are a, b, species, c, d"):
        load_run_data(str(data), None)


def test_resuming_on_other_columns_is_refused(flowers_run, tmp_path, capsys):
    data, run = flowers_run
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    other = write(tmp_path, data.read_text().replace("a,b,species", "a,e,species"), "other.csv")
    assert main(["fit", "--data", str(other), "--target", "species", "--dir", str(copy)]
                + FIT) == 1
    assert "is a run on other data" in capsys.readouterr().err
    assert tree_digest(copy) == tree_digest(run)


def test_arrays_runs_store_only_the_sample_shape(tmp_path):
    np.savez(tmp_path / "d.npz", x=np.zeros((8, 1, 2, 3)), y=np.arange(8) % 2)
    _, _, info = load_run_data(str(tmp_path / "d.npz"), None)
    assert info == {"sample_shape": [1, 2, 3]}


# ---------------------------------------------------------------------------- hand-made runs

def hand_made_run(folder, nout, info):
    """A run directory with a small dense model saved as its best, and its data.json."""
    inp = te.input_vertex("in", 3, "dense")
    graph = te.CompGraph(inp, te.vertex(Dense(3, nout), inp, name="out"))
    te.save_model(graph, folder / "best")
    (folder / "data.json").write_text(json.dumps(info))
    return graph


@pytest.mark.parametrize("nout, header", [(1, ["prediction"]),
                                          (2, ["prediction_0", "prediction_1"])])
def test_regression_runs_predict_each_output(tmp_path, monkeypatch, nout, header):
    graph = hand_made_run(tmp_path, nout, {"format": "csv", "features": ["u", "v", "w"],
                                           "target": "price", "classes": None,
                                           "sample_shape": [3]})
    monkeypatch.setattr(predict_module, "stored_settings", lambda mdir: {"task": "regression"})
    data = write(tmp_path, "w,v,u,price\n1,2,3,9\n-1,0.5,2,8\n", "new.csv")
    got_header, columns = predict(tmp_path, data)
    expected = graph(np.float32([[3, 2, 1], [2, 0.5, -1]]))
    assert got_header == header
    np.testing.assert_allclose(np.stack(columns, axis=1), expected, rtol=1e-6)


def test_a_run_without_class_names_predicts_class_indices(tmp_path):
    graph = hand_made_run(tmp_path, 4, {"sample_shape": [3]})
    x = np.random.default_rng(0).standard_normal((5, 3)).astype(np.float32)
    np.savez(tmp_path / "new.npz", x=x)
    with pytest.raises(ValueError, match="cannot tell whether its model is a classifier"):
        predict(tmp_path, tmp_path / "new.npz")            # best/ alone does not say
    (tmp_path / "result.json").write_text(json.dumps({"task": "classification"}))
    header, columns = predict(tmp_path, tmp_path / "new.npz")
    assert header == ["prediction", "p_0", "p_1", "p_2", "p_3"]
    np.testing.assert_array_equal(columns[0], graph(x).argmax(1))
    with pytest.raises(ValueError, match="not on a table"):
        predict(tmp_path, write(tmp_path, "a,b,c\n1,2,3\n"))


def test_a_numeric_target_runs_a_regression_end_to_end(tmp_path, capsys):
    """--task regression on a CSV: R² reported, and predict gives the model's raw-unit output."""
    rng = np.random.default_rng(1)
    x = rng.standard_normal((200, 3))
    price = 1000 + 200 * x[:, 0] - 100 * x[:, 2] + rng.normal(scale=5, size=200)
    lines = ["size,age,rooms,price"] + [f"{a:.4f},{b:.4f},{c:.4f},{p:.0f}"
                                        for (a, b, c), p in zip(x, price)]
    data = write(tmp_path, "\n".join(lines) + "\n", "houses.csv")
    run = tmp_path / "run"
    settings = ["--generations", "3", "--population", "3", "--workers", "1", "--no-progress",
                "--no-plots", "--batches-per-generation", "20"]
    # whole-dollar prices: the task must be said
    assert main(["fit", "--data", str(data), "--target", "price", "--dir",
                 str(tmp_path / "asked")] + settings) == 1
    assert "task='regression'" in capsys.readouterr().err
    assert main(["fit", "--data", str(data), "--target", "price", "--task", "regression",
                 "--dir", str(run)] + settings) == 0
    assert "test R²" in capsys.readouterr().out
    result = json.loads((run / "result.json").read_text())
    assert result["task"] == "regression" and result["test_r2"] > 0.5
    header, columns = predict(run, data)
    assert header == ["prediction"]
    expected = te.load_model(run / "best")(read_table(data, "price").x)[:, 0]
    np.testing.assert_allclose(np.asarray(columns[0], dtype=np.float64), expected, rtol=1e-5)


def test_numeric_class_labels_with_gaps_map_back_and_text_is_no_regression(tmp_path):
    rng = np.random.default_rng(2)
    x = rng.standard_normal((90, 2))
    label = np.array([-1, 3, 7])[np.arange(90) % 3]
    x[:, 0] += label
    lines = ["a,b,grade"] + [f"{p:.4f},{q:.4f},{g}" for (p, q), g in zip(x, label)]
    data = write(tmp_path, "\n".join(lines) + "\n", "grades.csv")
    run = tmp_path / "run"
    assert main(["fit", "--data", str(data), "--target", "grade", "--dir", str(run)] + FIT) == 0
    assert json.loads((run / "data.json").read_text())["classes"] == [-1, 3, 7]
    assert read_table(data, "grade").classes is None        # numbers, mapped only for the run
    header, columns = predict(run, data)
    assert header == ["prediction", "p_-1", "p_3", "p_7"]
    assert set(columns[0].tolist()) <= {-1, 3, 7}
    flowers = flowers_csv(tmp_path / "flowers.csv")
    assert main(["fit", "--data", str(flowers), "--target", "species", "--task", "regression",
                 "--dir", str(tmp_path / "r2")] + FIT) == 1


def test_predict_refuses_values_float32_cannot_hold(flowers_run, tmp_path):
    _, run = flowers_run
    np.savez(tmp_path / "big.npz", x=np.full((2, 4), 1e39))
    with pytest.raises(ValueError, match="too large for float32"):
        predict(run, tmp_path / "big.npz")
