"""Careless and hostile input to the public entry points: each gets a clear error before any
work is done, or is read as the user meant it (issue #22). One test per case, so none regresses."""

import numpy as np
import pytest

import tinyevo as te
from tinyevo.cli import main

pytest.importorskip("sklearn")


def _data(n=60, classes=3):
    rng = np.random.default_rng(0)
    y = np.arange(n) % classes
    x = rng.standard_normal((n, 4)).astype(np.float32)
    x[np.arange(n), y] += 3.0
    return x, y


QUICK = dict(generations=1, population_size=2, batches_per_generation=1, seed=0)


def test_a_column_of_labels_is_labels_not_one_hot():
    x, y = _data()
    population = te.fit(x, y[:, None], **QUICK)
    assert population.best().graph().vertices[-1].nout == 3     # three classes, not one


@pytest.mark.parametrize("labels, match", [
    (np.zeros((60, 3)), "all zero"),
    (np.zeros(60, dtype=int), "one class"),
    (np.zeros((60, 1), dtype=int), "one class"),
])
def test_labels_that_name_no_classes_or_one_are_refused(labels, match):
    x, _ = _data()
    with pytest.raises(ValueError, match=match):
        te.fit(x, labels, **QUICK)


def test_one_hot_float_labels_from_an_npz_run_end_to_end(tmp_path, capsys):
    x, y = _data(90)
    x = x.reshape(90, 1, 2, 2)
    onehot = np.eye(3, dtype=np.float32)[y]
    path = tmp_path / "onehot.npz"
    np.savez(path, x_train=x[:75], y_train=onehot[:75], x_test=x[75:], y_test=onehot[75:])
    code = main(["fit", "--data", str(path), "--generations", "1", "--population", "2",
                 "--dir", str(tmp_path / "run"), "--workers", "1", "--no-progress",
                 "--no-plots"])
    assert code == 0, capsys.readouterr()
    assert (tmp_path / "run" / "best" / "model.json").is_file()


def test_evaluate_takes_one_hot_and_column_labels():
    x, y = _data()
    best = te.fit(x, y, **QUICK).best()
    plain = best.evaluate(x, y)
    assert best.evaluate(x, np.eye(3)[y]) == plain == best.evaluate(x, y[:, None])
    with pytest.raises(ValueError, match="shape"):
        best.evaluate(x, np.zeros((60, 3, 1)))


@pytest.mark.parametrize("bad, match", [
    (dict(time_limit="5m"), "time_limit must be .*seconds.*'5m'"),
    (dict(valid_fraction="0.3"), "valid_fraction must be in \\(0, 1\\)"),
    (dict(seed="abc"), "seed must be an int >= 0"),
    (dict(seed=-1), "seed must be an int >= 0"),
    (dict(seed=1.7), "seed must be an int >= 0"),
    (dict(batches_per_generation=0), "batches_per_generation must be None or an int >= 1"),
    (dict(batches_per_generation=-3), "batches_per_generation"),
    (dict(budget_growth=-5), "budget_growth must be >= 0"),
    (dict(target_fitness=5.0), "target_fitness must be None or a fitness the run can reach"),
    (dict(time_limit=float("nan")), "time_limit"),
    (dict(population_size=True), "population_size"),
])
def test_bad_arguments_get_a_clear_error_before_any_work(bad, match):
    x, y = _data()
    with pytest.raises(ValueError, match=match):
        te.fit(x, y, **{**QUICK, **bad})


def test_callbacks_that_are_not_callables_get_a_clear_error():
    x, y = _data()
    with pytest.raises(TypeError, match="callbacks must be a callable"):
        te.fit(x, y, callbacks=5, **QUICK)


def test_numpy_integers_are_accepted_for_counts():
    x, y = _data()
    population = te.fit(x, y, generations=np.int64(1), population_size=np.int32(2),
                        batches_per_generation=np.int64(1), seed=np.int64(0))
    assert population.generation == 1 and len(population) == 2


def test_an_mdir_that_cannot_hold_checkpoints_is_refused_before_training(tmp_path):
    x, y = _data()
    a_file = tmp_path / "file"
    a_file.write_text("not a folder")
    with pytest.raises(ValueError, match="is a file, not a folder"):
        te.fit(x, y, mdir=a_file, **QUICK)
    assert a_file.read_text() == "not a folder"
    read_only = tmp_path / "ro"
    read_only.mkdir()
    read_only.chmod(0o500)
    try:
        probe = read_only / "probe"
        try:
            probe.write_text("")
            writable = True                       # root ignores the mode bits
        except OSError:
            writable = False
        if not writable:
            with pytest.raises(ValueError, match="cannot write checkpoints"):
                te.fit(x, y, mdir=read_only, **QUICK)
    finally:
        read_only.chmod(0o700)


def test_os_errors_are_one_line_and_exit_1(tmp_path, capsys):
    a_file = tmp_path / "file"
    a_file.write_text("x")
    assert main(["fit", "--data", f"mnist:{a_file}", "--generations", "1",
                 "--dir", str(tmp_path / "r")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("tinyevo: error:") and "Traceback" not in err


def _a_finished_run(tmp_path):
    """The run directory of a one-generation ``tinyevo fit`` on a small .npz."""
    run = tmp_path / "run"
    x, y = _data(90)
    np.savez(tmp_path / "d.npz", x=x.reshape(90, 1, 2, 2), y=y)
    assert main(["fit", "--data", str(tmp_path / "d.npz"), "--generations", "1",
                 "--population", "2", "--dir", str(run), "--workers", "1", "--no-progress",
                 "--no-plots"]) == 0
    return run


def test_show_into_a_closed_pipe_exits_quietly(tmp_path):
    import subprocess
    import sys

    run = _a_finished_run(tmp_path)
    show = subprocess.Popen([sys.executable, "-m", "tinyevo.cli", "show", str(run)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    show.stdout.close()                       # the reader is gone before show prints
    _, err = show.communicate(timeout=60)
    assert show.returncode == 0 and b"BrokenPipeError" not in err


def test_show_reads_a_run_without_changing_it(tmp_path, capsys):
    # Regression (#22 item 1): show went through recover_dir, which swapped a stray
    # .checkpoint.new in and deleted the good checkpoint (and crashed a live run's swap).
    import shutil

    run = _a_finished_run(tmp_path)
    shutil.copytree(run / "checkpoint", run / ".checkpoint.new")
    (run / ".checkpoint.new" / "members.npz").write_bytes(b"incomplete")
    before = sorted((p.relative_to(run), p.stat().st_mtime_ns) for p in run.rglob("*"))
    main(["show", str(run)])
    capsys.readouterr()
    assert sorted((p.relative_to(run), p.stat().st_mtime_ns) for p in run.rglob("*")) == before
