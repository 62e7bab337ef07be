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


def test_values_that_overflow_float32_are_refused_before_training():
    x, y = _data()
    x = x.astype(np.float64)
    x[3, 1] = 1e300                            # finite in float64, inf once cast to float32
    with pytest.raises(ValueError, match="too large for float32"):
        te.fit(x, y, **QUICK)


def test_validation_labels_outside_the_training_classes_are_refused():
    x, y = _data()
    with pytest.raises(ValueError, match="validation label 7 is not a class"):
        te.fit(x, y, valid=(x[:10], np.full(10, 7)), **QUICK)


def test_a_huge_label_is_refused_before_a_huge_model_is_built():
    x, y = _data()
    y = y.copy()
    y[0] = 10**9
    with pytest.raises(ValueError, match="largest is 1000000000"):
        te.fit(x, y, **QUICK)


class _Killed(BaseException):
    """A kill -9 stand-in: nothing in fit catches it."""


def test_a_kill_between_the_checkpoint_and_the_plots_loses_no_history(tmp_path, monkeypatch):
    # Regression (#22 item 6): fit wrote the checkpoint, then ran the callbacks; a run killed
    # between the two resumed after that generation, whose plot rows were lost for good.
    pytest.importorskip("matplotlib")
    import sys

    from tinyevo.app import PlotFitness, history

    fit_module = sys.modules["tinyevo.app.fitting"]
    x, y = _data()
    settings = dict(population_size=2, batches_per_generation=1, seed=0)
    te.fit(x, y, generations=3, mdir=tmp_path / "straight",
           callbacks=[PlotFitness(tmp_path / "straight")], **settings)
    save = fit_module.save_checkpoint

    def save_then_die(mdir, population, *args, **kwargs):
        save(mdir, population, *args, **kwargs)
        if population.generation == 2:
            raise _Killed

    run = tmp_path / "killed"
    monkeypatch.setattr(fit_module, "save_checkpoint", save_then_die)
    with pytest.raises(_Killed):
        te.fit(x, y, generations=3, mdir=run, callbacks=[PlotFitness(run)], **settings)
    monkeypatch.setattr(fit_module, "save_checkpoint", save)
    te.fit(x, y, generations=3, mdir=run, callbacks=[PlotFitness(run)], **settings)
    assert history(run)["fitness"] == history(tmp_path / "straight")["fitness"]
    assert [r["generation"] for r in history(run)["fitness"]] == [1, 2, 3]


def test_two_fits_cannot_own_one_run_directory(tmp_path):
    # Regression (#22 item 1): nothing stopped a second fit from writing into a live run.
    import json
    import subprocess
    import sys

    from tinyevo.app.runlock import LOCK_NAME, RunLocked, run_lock

    x, y = _data()
    with run_lock(tmp_path):
        with pytest.raises(RunLocked, match=f"pid {__import__('os').getpid()}"):
            te.fit(x, y, mdir=tmp_path, **QUICK)
    assert not (tmp_path / "checkpoint").exists()          # refused before any work
    assert not (tmp_path / LOCK_NAME).exists()             # released
    # A lock left by a process that is gone (kill -9) is stale: the next fit takes it over.
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    (tmp_path / LOCK_NAME).write_text(json.dumps({
        "host": __import__("socket").gethostname(), "pid": int(gone.stdout), "started": 1}))
    population = te.fit(x, y, mdir=tmp_path, **QUICK)
    assert population.generation == 1 and not (tmp_path / LOCK_NAME).exists()


def test_the_command_says_when_a_run_directory_is_in_use(tmp_path, capsys):
    from tinyevo.app.runlock import run_lock

    with run_lock(tmp_path):
        code = main(["fit", "--data", "digits", "--generations", "1", "--dir", str(tmp_path),
                     "--no-progress"])
    assert code != 0
    err = capsys.readouterr().err
    assert "in use by another run" in err and "Traceback" not in err


def test_worker_processes_terminate_a_candidate_stuck_past_its_time_limit(monkeypatch):
    # Regression (#22 item 10): candidate_time_limit was checked only between batches, so a
    # candidate stuck inside one ran on; in worker processes fit now sets the evaluator's
    # hard timeout (the pool terminates a worker past it: tests/test_executors.py).
    import sys

    fit_module = sys.modules["tinyevo.app.fitting"]
    made = []
    real = fit_module.make_evaluator

    def spy(executor, **kwargs):
        made.append(kwargs)
        return real(executor, **kwargs)

    monkeypatch.setattr(fit_module, "make_evaluator", spy)
    x, y = _data()
    te.fit(x, y, candidate_time_limit=3.0, **QUICK)
    assert made[-1]["timeout"] == 2 * 3.0 + fit_module.CANDIDATE_KILL_GRACE
    te.fit(x, y, **QUICK)
    assert made[-1]["timeout"] is None
    with pytest.raises(ValueError, match="candidate_time_limit must be"):
        te.fit(x, y, candidate_time_limit=-1, **QUICK)


def test_the_owner_sets_a_damaged_stray_checkpoint_new_aside_instead_of_swapping_it_in(
        tmp_path):
    # Regression (#22 item 1): fit's recovery swapped any .checkpoint.new in, deleting the good
    # checkpoint it replaced.
    from tinyevo.app.checkpoint import load_checkpoint

    x, y = _data()
    te.fit(x, y, mdir=tmp_path, **QUICK)
    stray = tmp_path / ".checkpoint.new"
    stray.mkdir()
    (stray / "state.json").write_text("{")
    population = te.fit(x, y, mdir=tmp_path, **{**QUICK, "generations": 2})
    assert population.generation == 2 and load_checkpoint(tmp_path)[0].generation == 2
    aside = list(tmp_path.glob(".checkpoint.new.damaged-*"))
    assert len(aside) == 1 and (aside[0] / "state.json").read_text() == "{"
