"""fit with objectives: a Pareto front of accuracy against size (and latency), on a slice of the
bundled digits with tiny settings; its checkpoint, resume, export, plot and command."""

import numpy as np
import pytest

import tinyevo as te
from tinyevo.app import FitConfig, PlotPareto, export_front, history, load_model
from tinyevo.app.checkpoint import load_checkpoint
from tinyevo.cli import main
from tinyevo.evolution import Objective, Objectives, nondominated_sort, objective_point

pytest.importorskip("sklearn")

TINY = dict(population_size=6, batches_per_generation=3, batch_size=16, widths=(4, 8), seed=5)
AP = ("accuracy", "params")



def _front(population):
    return [(c.fitness.values, c.generation) for c in population.pareto_front]


def test_fit_with_objectives_returns_the_front_of_every_evaluation(digits):
    x, y = digits
    seen = []
    population = te.fit(x, y, generations=3, objectives=AP, callbacks=[
        lambda p: seen.extend(objective_point(c.fitness) for c in p)], **TINY)
    front = population.pareto_front
    assert len(front) >= 1 and front.names == AP
    assert all(isinstance(c.fitness, Objectives) for c in population)
    points = [objective_point(c.fitness) for c in front]
    assert set(points) == {seen[i] for i in nondominated_sort(seen)[0]}
    assert points == sorted(points, reverse=True)             # most accurate first
    for c in front:
        assert c.fitness["params"] == c.graph().nparams()
        assert 0 <= c.fitness["accuracy"] <= 1
        assert c.fitness["accuracy"] <= float(c.fitness) <= c.fitness["accuracy"] + 1e-3
    # the scalar fitness still drives the hall of fame and best()
    assert population.hall_of_fame.best().fitness >= population.best().fitness


def test_without_objectives_there_is_no_front(digits, tmp_path):
    x, y = digits
    population = te.fit(x, y, generations=1, mdir=tmp_path, **TINY)
    assert population.pareto_front is None
    assert load_checkpoint(tmp_path)[0].pareto_front is None
    assert te.app.read_json(tmp_path / "checkpoint" / "state.json")["version"] == 2
    assert not isinstance(population.best().fitness, Objectives)


def test_the_front_survives_resume_exactly(digits, tmp_path):
    x, y = digits
    straight = te.fit(x, y, generations=4, objectives=AP, mdir=tmp_path / "straight", **TINY)
    te.fit(x, y, generations=2, objectives=AP, mdir=tmp_path / "resumed", **TINY)
    saved = load_checkpoint(tmp_path / "resumed")[0]
    assert saved.pareto_front is not None and all(
        isinstance(c.fitness, Objectives) for c in [*saved, *saved.pareto_front])
    # objectives left out: the checkpoint's
    resumed = te.fit(x, y, generations=4, mdir=tmp_path / "resumed", **TINY)
    assert _front(resumed) == _front(straight)
    assert [c.fitness.values for c in resumed] == [c.fitness.values for c in straight]
    for a, b in zip(straight.pareto_front, resumed.pareto_front):
        arrays = b.graph().arrays()
        assert all(np.array_equal(v, arrays[k]) for k, v in a.graph().arrays().items())
    with pytest.raises(ValueError, match="objectives"):
        te.fit(x, y, generations=5, objectives=("accuracy", "latency"),
               mdir=tmp_path / "resumed", **TINY)


def test_ctrl_c_returns_the_checkpointed_front(digits, tmp_path):
    x, y = digits

    def interrupt(population):
        if population.generation == 3:
            raise KeyboardInterrupt

    population = te.fit(x, y, generations=5, objectives=AP, callbacks=[interrupt],
                        mdir=tmp_path, **TINY)
    saved = load_checkpoint(tmp_path)[0]
    assert population.generation == saved.generation == 2
    assert _front(population) == _front(saved)


def test_latency_and_a_user_objective_are_measured_in_worker_processes(digits):
    x, y = digits
    population = te.fit(x, y, generations=2, executor=2, objectives=(
        "accuracy", "latency", Objective("depth", _depth, "min")), **TINY)
    for c in population:
        assert c.fitness["latency"] > 0 and c.fitness["depth"] == len(c.graph().vertices)


def _depth(candidate):
    return len(candidate.graph().vertices)


def test_each_member_of_the_front_is_saved_and_exported(digits, tmp_path):
    pytest.importorskip("onnx")
    x, y = digits
    population = te.fit(x, y, generations=2, objectives=AP, **TINY)
    rows = export_front(population.pareto_front, tmp_path / "front", x.shape[1:], (x, y))
    assert len(rows) == len(population.pareto_front)
    for row, c in zip(rows, population.pareto_front):
        model = load_model(tmp_path / "front" / row["model"])
        np.testing.assert_array_equal(model(x[:5]), c.graph()(x[:5]))
        assert (tmp_path / "front" / row["onnx"]).is_file()
        assert row["test_accuracy"] == c.evaluate(x, y) and row["params"] == row["nparams"]
    table = te.app.read_json(tmp_path / "front" / "front.json")
    assert table["objectives"] == list(AP) and table["members"] == rows


def test_the_plot_draws_the_front_and_records_it(digits, tmp_path):
    pytest.importorskip("matplotlib")
    x, y = digits
    te.fit(x, y, generations=2, objectives=AP, mdir=tmp_path,
           callbacks=[PlotPareto(tmp_path)], **TINY)
    assert (tmp_path / "pareto.png").is_file()
    rows = history(tmp_path)["pareto"]
    assert list(rows[0]) == ["generation", "member", "fitness", "accuracy", "params"]
    assert len(rows) == 2 * TINY["population_size"]
    # a run without objectives: nothing to draw or write
    plot = PlotPareto(tmp_path / "plain")
    te.fit(x, y, generations=1, callbacks=[plot], **TINY)
    assert not (tmp_path / "plain" / "pareto.png").exists() and plot.npanels == 0


@pytest.mark.parametrize("objectives, match", [
    (("accuracy",), "at least two"),
    (("params", "latency"), "accuracy, r2 or loss"),
    (("accuracy", "accuracy"), "at least two different"),
    (("accuracy", "speed"), "each one of"),
    (3, "list of objectives"),
    (("accuracy", Objective("fitness", _depth)), "column of the front's table"),
])
def test_bad_objectives_are_refused(objectives, match):
    with pytest.raises(ValueError, match=match):
        FitConfig(objectives=objectives)


def test_objectives_settings():
    assert FitConfig(objectives="accuracy, params").objectives == AP
    assert FitConfig(objectives="accuracy,params,").objectives == AP      # a trailing comma
    assert FitConfig(objectives=()).objectives == ()
    depth = Objective("depth", _depth, "min")
    config = FitConfig(objectives=("loss", depth))
    assert config.objectives == ("loss", depth)
    assert config.to_json()["objectives"] == ["loss", "depth"]


def test_the_command_writes_and_shows_the_front(tmp_path, capsys):
    rng = np.random.default_rng(0)
    y = np.arange(120) % 3
    x = rng.standard_normal((120, 1, 6, 6)).astype(np.float32) * 0.3
    x[:, 0, 1, y + 1] += 2.0
    np.savez(tmp_path / "toy.npz", x_train=x[:90], y_train=y[:90], x_test=x[90:],
             y_test=y[90:])
    run = tmp_path / "run"
    code = main(["fit", "--data", str(tmp_path / "toy.npz"), "--generations", "2",
                 "--population", "4", "--dir", str(run), "--workers", "1", "--no-progress",
                 "--no-plots", "--objectives", "accuracy,params"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "Pareto front:" in out and "test accuracy" in out
    table = te.app.read_json(run / "front" / "front.json")
    assert len(table["members"]) >= 1 and (run / "front" / "00" / "model.json").is_file()
    assert te.app.read_json(run / "result.json")["pareto_front"] == table["members"]
    assert main(["show", str(run)]) == 0
    out = capsys.readouterr().out
    assert "Pareto front:" in out and "(accuracy, params)" in out
    assert main(["fit", "--objectives", "accuracy,speed", "--dir", str(run)]) == 1
    assert "objectives" in capsys.readouterr().err


@pytest.mark.parametrize("edit, match", [
    (lambda d: d["members"][0]["objectives"].update(senses=["max", "up"]), "senses"),
    (lambda d: d["members"][0]["objectives"].update(values=[0.5]), "values"),
    (lambda d: d["pareto_front"]["members"][0]["objectives"].update(names=["a", "a"]),
     "must differ"),
    (lambda d: d["pareto_front"].update(size=3), "size"),
    (lambda d: d["members"][0].pop("objectives"), "the same objectives"),
    (lambda d: d["members"][0]["objectives"].update(names=["params", "accuracy"]),
     "the same objectives"),
])
def test_an_edited_objectives_checkpoint_is_refused(digits, tmp_path, edit, match):
    x, y = digits
    te.fit(x, y, generations=1, objectives=AP, mdir=tmp_path, **TINY)
    path = tmp_path / "checkpoint" / "state.json"
    doc = te.app.read_json(path)
    assert doc["version"] == 3
    edit(doc)
    te.app.write_json(path, doc)
    with pytest.raises(ValueError, match=match):
        load_checkpoint(tmp_path)


def test_the_final_model_gets_objectives_and_joins_the_front(digits, tmp_path):
    x, y = digits
    population = te.fit(x, y, time_limit=5.0, final_training=0.5, objectives=AP,
                        mdir=tmp_path, **TINY)
    final = population.final
    if final is None:                # validated clearly worse: not kept (accept_final)
        pytest.skip("the final training's model was not kept in this run")
    assert isinstance(final.fitness, Objectives)
    assert final.fitness["params"] == final.graph().nparams()
    assert final.fitness["accuracy"] <= float(final.fitness) <= final.fitness["accuracy"] + 1e-3
    point = objective_point(final.fitness)
    front = [objective_point(c.fitness) for c in population.pareto_front]
    assert point in front or any(te.evolution.dominates(p, point) or p == point for p in front)
    assert _front(load_checkpoint(tmp_path)[0]) == _front(population)


def test_stored_settings_read_a_run_without_changing_it(digits, tmp_path):
    from tinyevo.app.checkpoint import stored_settings

    assert stored_settings(tmp_path) is None                     # no checkpoint yet
    x, y = digits
    te.fit(x, y, generations=1, objectives=AP, mdir=tmp_path, **TINY)
    before = sorted(p.name for p in tmp_path.rglob("*"))
    assert stored_settings(tmp_path)["objectives"] == list(AP)
    assert sorted(p.name for p in tmp_path.rglob("*")) == before
