"""The tinyevo command: options, a tiny fit run from an .npz file, and show."""

import argparse

import numpy as np
import pytest

from tinyevo.cli import main, parse_duration

pytest.importorskip("sklearn")


@pytest.mark.parametrize("text, seconds", [("90", 90), ("90s", 90), ("5m", 300),
                                           ("1h30m", 5400), ("0.5h", 1800)])
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "5 minutes", "m5", "-3s"])
def test_bad_durations(text):
    with pytest.raises(argparse.ArgumentTypeError):
        parse_duration(text)


@pytest.fixture
def npz(tmp_path):
    rng = np.random.default_rng(0)
    y = np.arange(120) % 3
    x = rng.standard_normal((120, 1, 6, 6)).astype(np.float32) * 0.3
    x[:, 0, 1, y + 1] += 2.0                      # a learnable class signal
    path = tmp_path / "toy.npz"
    np.savez(path, x_train=x[:90], y_train=y[:90], x_test=x[90:], y_test=y[90:])
    return path


def test_fit_then_show(npz, tmp_path, capsys):
    run = tmp_path / "run"
    code = main(["fit", "--data", str(npz), "--generations", "2", "--population", "2",
                 "--dir", str(run), "--workers", "1", "--no-progress", "--no-plots"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "test accuracy" in out and "generation 2" in out
    assert (run / "best" / "model.json").is_file() and (run / "checkpoint").is_dir()
    code = main(["show", str(run)])
    out = capsys.readouterr().out
    assert code == 0 and "generation 2" in out and "parameters" in out


def test_fit_resumes_a_run(npz, tmp_path, capsys):
    run = tmp_path / "run"
    args = ["fit", "--data", str(npz), "--population", "2", "--dir", str(run), "--workers", "1",
            "--no-progress", "--no-plots"]
    assert main(args + ["--generations", "1"]) == 0
    assert main(args + ["--generations", "2"]) == 0
    out = capsys.readouterr().out
    assert "(resuming)" in out and "generation 2" in out


def test_errors_are_one_line_and_exit_1(tmp_path, capsys):
    assert main(["fit", "--data", f"mnist:{tmp_path / 'nope'}", "--generations", "1",
                 "--dir", str(tmp_path / "r")]) == 1
    assert "tinyevo: error:" in capsys.readouterr().err
    assert main(["show", str(tmp_path / "missing")]) == 1


def test_help_and_usage_errors(capsys):
    with pytest.raises(SystemExit) as e:
        main(["fit", "--help"])
    assert e.value.code == 0 and "--time-limit" in capsys.readouterr().out
    with pytest.raises(SystemExit) as e:
        main(["fit", "--population", "zero"])
    assert e.value.code == 2
    assert main([]) == 2


def test_fit_exports_the_best_model_ever_evaluated(npz, tmp_path, capsys):
    import json

    import tinyevo as te
    from tinyevo.app.checkpoint import load_checkpoint

    run = tmp_path / "run"
    code = main(["fit", "--data", str(npz), "--generations", "3", "--population", "3",
                 "--dir", str(run), "--workers", "1", "--no-progress", "--no-plots"])
    out = capsys.readouterr().out
    assert code == 0, out
    population, _ = load_checkpoint(run)
    best = population.hall_of_fame.best()
    result = json.loads((run / "result.json").read_text())
    assert result["validation_fitness"] == best.fitness
    assert result["best_generation"] == best.generation and result["generation"] == 3
    exported = te.load_model(run / "best").arrays()
    assert all(np.array_equal(a, exported[k]) for k, a in best.graph().arrays().items())
    # Progress without a terminal: a line per finished candidate (the last of each
    # generation at least) and per generation, with the time left where there is a limit.
    assert "generation    3: candidate 3/3 trained fitness" in out
    assert "best ever" in out
    assert main(["show", str(run)]) == 0
    assert "hall of fame" in capsys.readouterr().out


def test_progress_lines_give_the_time_left(npz, tmp_path, capsys):
    code = main(["fit", "--data", str(npz), "--time-limit", "1h", "--generations", "1",
                 "--population", "2", "--dir", str(tmp_path / "r"), "--workers", "1",
                 "--no-progress", "--no-plots"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "candidate 2/2 trained" in out and " s left" in out


def _flag(name):
    return "--population" if name == "population_size" else "--" + name.replace("_", "-")


def test_every_setting_has_a_flag_whose_help_is_its_doc(capsys):
    from dataclasses import fields

    from tinyevo.app import FitConfig

    with pytest.raises(SystemExit):
        main(["fit", "--help"])
    out = "".join(capsys.readouterr().out.split())       # help wraps lines (and at hyphens)
    for f in fields(FitConfig):
        assert _flag(f.name) in out
        if f.name not in ("seed", "candidate_time_limit"):    # the command's own words
            assert "".join(FitConfig.doc(f.name).split()) in out, f.name


def test_the_flags_make_the_runs_config_and_a_resume_keeps_what_it_leaves_out(npz, tmp_path):
    from tinyevo.app.checkpoint import load_checkpoint

    run = tmp_path / "run"
    common = ["fit", "--data", str(npz), "--dir", str(run), "--workers", "1", "--no-progress",
              "--no-plots", "--batch-size", "8", "--batches-per-generation", "2",
              "--lr-schedule", "cosine", "--augment", "--candidate-time-limit", "1m"]
    assert main(common + ["--generations", "1", "--population", "3", "--seed", "3",
                          "--widths", "4", "8"]) == 0
    config = load_checkpoint(run)[1]["config"]
    assert (config["population_size"], config["seed"], config["widths"]) == (3, 3, [4, 8])
    assert (config["batch_size"], config["batches_per_generation"], config["lr_schedule"],
            config["augment"], config["candidate_time_limit"]) == (8, 2, "cosine", True, 60.0)
    # population, seed and widths left out: the run's own (a new run's seed would be 0)
    assert main(common + ["--generations", "2"]) == 0
    assert load_checkpoint(run)[0].generation == 2


def test_a_bad_setting_is_refused_before_the_data_is_loaded(tmp_path, capsys):
    assert main(["fit", "--data", f"mnist:{tmp_path / 'nope'}", "--generations", "1",
                 "--batch-size", "0", "--dir", str(tmp_path / "r")]) == 1
    err = capsys.readouterr().err
    assert "batch_size must be an int >= 1, got 0" in err and "mnist" not in err
