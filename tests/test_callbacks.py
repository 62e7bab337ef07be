"""Plot callbacks: data kept on disk across callback objects, PNGs, replaced generations."""

import math
import sys

import numpy as np
import pytest

from tinyevo.app import CbAll, MultiPlot, PlotFitness, ScatterOpt, ScatterPop, history
from tinyevo.app.callbacks import eval_time, fitness_value
from tinyevo.evolution import CandidateModel, CandidateOptModel, FittedCandidate, Population
from tinyevo.graph import CompGraph, input_vertex, vertex
from tinyevo.layers import Dense, Sequential
from tinyevo.optimizers import SGD, Adam

pytest.importorskip("matplotlib")

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def tiny_graph(width):
    inp = input_vertex("in", 3, "dense")
    hidden = vertex(Dense(3, width, "relu"), inp)
    return CompGraph(inp, vertex(Dense(width, 2), hidden))


def population(generation, fitnesses, lrs=None, times=None):
    """Members with hand-set fitness, as Population.evaluate would leave them."""
    members = []
    for i, f in enumerate(fitnesses):
        if lrs is None:
            cand = CandidateModel(tiny_graph(2 + i))
        else:
            optcls = Adam if i % 2 == 0 else SGD
            cand = CandidateOptModel(optcls(lrs[i]), Sequential(Dense(3, 2 + i), Dense(2 + i, 2)))
        fitted = FittedCandidate(cand, f, generation)
        if times is not None:
            fitted.eval_time = times[i]
        members.append(fitted)
    return Population(members, generation)


def assert_png(path):
    assert path.is_file() and path.stat().st_size > 1000
    assert path.read_bytes()[:8] == PNG_MAGIC


def test_plot_fitness_records_best_and_mean_and_draws(tmp_path):
    cb = PlotFitness(tmp_path)
    cb(population(1, [0.2, 0.4, 0.6]))
    cb(population(2, [0.5, 0.9]))
    assert_png(tmp_path / "fitness.png")
    rows = history(tmp_path)["fitness"]
    assert [r["generation"] for r in rows] == [1, 2]
    assert rows[0]["best"] == pytest.approx(0.6) and rows[0]["mean"] == pytest.approx(0.4)
    assert rows[1] == {"generation": 2, "best": 0.9, "mean": 0.7, "size": 2, "nvalid": 2}
    assert (tmp_path / "plotdata" / "fitness.csv").read_text().startswith(
        "generation,best,mean,size,nvalid\n")


def test_resume_continues_the_curves_in_a_new_object(tmp_path):
    PlotFitness(tmp_path).record(population(1, [0.1, 0.3]))
    ScatterPop(tmp_path).record(population(1, [0.1, 0.3]))
    ScatterOpt(tmp_path).record(population(1, [0.1, 0.3], lrs=[1e-3, 1e-2]))

    fit, pop, opt = PlotFitness(tmp_path), ScatterPop(tmp_path), ScatterOpt(tmp_path)
    assert [r["generation"] for r in fit.rows] == [1]
    assert len(pop.rows) == 2 and len(opt.rows) == 2
    fit(population(2, [0.5]))
    pop(population(2, [0.5]))
    opt(population(2, [0.5], lrs=[1e-4]))

    again = history(tmp_path)
    assert [r["best"] for r in again["fitness"]] == [0.3, 0.5]
    assert [(r["generation"], r["member"]) for r in again["population"]] == [(1, 0), (1, 1),
                                                                             (2, 0)]
    assert [r["learning_rate"] for r in again["optimizer"]] == [1e-3, 1e-2, 1e-4]
    assert [r["optimizer"] for r in again["optimizer"]] == ["Adam", "SGD", "Adam"]


def test_a_generation_recorded_twice_replaces_its_rows(tmp_path):
    cb = PlotFitness(tmp_path)
    for gen, fits in [(1, [0.1]), (2, [0.2]), (3, [0.3])]:
        cb.record(population(gen, fits))  # record() keeps the data without drawing
    # A crash mid-generation 3, resume from the checkpoint of generation 2: 3 comes again.
    resumed = PlotFitness(tmp_path)
    resumed(population(3, [0.35]))
    assert_png(tmp_path / "fitness.png")
    assert [(r["generation"], r["best"]) for r in history(tmp_path)["fitness"]] == [
        (1, 0.1), (2, 0.2), (3, 0.35)]
    # Resuming from an older generation drops the later history too: no stale points.
    resumed.record(population(2, [0.25, 0.15]))
    assert [(r["generation"], r["best"]) for r in history(tmp_path)["fitness"]] == [
        (1, 0.1), (2, 0.25)]

    ScatterPop(tmp_path).record(population(1, [0.1, 0.2, 0.3]))
    ScatterPop(tmp_path).record(population(1, [0.4, 0.5]))
    assert [r["fitness"] for r in history(tmp_path)["population"]] == [0.4, 0.5]


def test_invalid_fitness_is_recorded_as_nan_and_left_out_of_the_statistics(tmp_path):
    fits = [float("nan"), 0.5, math.inf, None, "broken", np.float32(0.25), -math.inf]
    plots = [PlotFitness(tmp_path), ScatterPop(tmp_path), ScatterOpt(tmp_path, defaultopt=Adam())]
    for cb in plots:
        cb(population(1, fits))
    row = history(tmp_path)["fitness"][0]
    assert (row["best"], row["mean"], row["size"], row["nvalid"]) == (0.5, 0.375, 7, 2)
    recorded = [r["fitness"] for r in history(tmp_path)["population"]]
    assert sum(math.isfinite(v) for v in recorded) == 2 and len(recorded) == 7
    for name in ("fitness", "population", "optimizer"):
        assert_png(tmp_path / f"{name}.png")

    PlotFitness(tmp_path, name="allbad")(population(1, [math.nan, None]))
    row = history(tmp_path)["allbad"][0]
    assert math.isnan(row["best"]) and math.isnan(row["mean"]) and row["nvalid"] == 0
    assert_png(tmp_path / "allbad.png")


def test_time_fitness_tuples_and_eval_time():
    timed = FittedCandidate(CandidateModel(tiny_graph(2)), (0.25, 0.75), 1)
    assert fitness_value(timed) == 0.75 and eval_time(timed) == 0.25
    plain = FittedCandidate(CandidateModel(tiny_graph(2)), 0.5, 1)
    assert eval_time(plain) is None
    plain.eval_time = 1.5
    assert eval_time(plain) == 1.5
    assert math.isnan(fitness_value(CandidateModel(tiny_graph(2))))  # not evaluated yet


def test_scatter_pop_size_and_time_panels(tmp_path):
    cb = ScatterPop(tmp_path)
    cb(population(1, [0.1, 0.2]))
    assert cb.npanels == 1  # no member knows its evaluation time
    first = cb.rows[0]
    assert first["nparams"] == tiny_graph(2).nparams() and first["nvertices"] == 3
    assert math.isnan(first["eval_time"])
    cb(population(2, [0.3, 0.4], times=[0.5, 1.25]))
    assert cb.npanels == 2
    assert [r["eval_time"] for r in cb.rows[2:]] == [0.5, 1.25]
    assert_png(tmp_path / "population.png")

    custom = ScatterPop(tmp_path, name="custom", timeof=lambda c: 2.0)
    custom(population(1, [0.1]))
    assert custom.rows[0]["eval_time"] == 2.0


def test_scatter_opt_colours_by_optimiser_and_uses_defaultopt(tmp_path):
    cb = ScatterOpt(tmp_path)
    cb(population(1, [0.3, 0.6, 0.9], lrs=[1e-3, 1e-1, 0.0]))  # lr 0 has no log10: left out
    assert [r["optimizer"] for r in cb.rows] == ["Adam", "SGD", "Adam"]
    assert_png(tmp_path / "optimizer.png")

    without = ScatterOpt(tmp_path, name="noopt")
    without(population(1, [0.3]))  # a CandidateModel carries no optimiser
    assert without.rows[0]["optimizer"] == "" and math.isnan(without.rows[0]["learning_rate"])
    assert_png(tmp_path / "noopt.png")
    default = ScatterOpt(tmp_path, name="default", defaultopt=SGD(0.05))
    default(population(1, [0.3]))
    assert (default.rows[0]["optimizer"], default.rows[0]["learning_rate"]) == ("SGD", 0.05)


def test_multiplot_draws_one_figure_and_records_every_plot(tmp_path):
    fit, pop, opt = PlotFitness(tmp_path), ScatterPop(tmp_path), ScatterOpt(tmp_path)
    multi = MultiPlot(fit, pop, opt)
    assert multi.path == tmp_path / "multiplot.png"
    multi(population(1, [0.2, 0.4], lrs=[1e-3, 1e-2], times=[0.1, 0.2]))
    multi(population(2, [0.5, 0.7], lrs=[3e-3, 2e-2], times=[0.1, 0.3]))
    assert multi.npanels == 4
    assert_png(multi.path)
    assert not (tmp_path / "fitness.png").exists()  # only the combined figure is drawn
    assert set(history(tmp_path)) == {"fitness", "population", "optimizer"}
    assert len(history(tmp_path)["population"]) == 4

    elsewhere = tmp_path / "figs" / "all.png"
    MultiPlot(PlotFitness(tmp_path), path=elsewhere)(population(3, [0.8]))
    assert_png(elsewhere)
    with pytest.raises(TypeError, match="CbAll"):
        MultiPlot(fit, print)
    with pytest.raises(ValueError, match="at least one"):
        MultiPlot()


def test_cball_calls_each_in_order(tmp_path):
    seen = []
    plot = PlotFitness(tmp_path)
    cb = CbAll(lambda p: seen.append(("a", p.generation)), plot,
               lambda p: seen.append(("b", p.generation)))
    cb(population(4, [0.5]))
    assert seen == [("a", 4), ("b", 4)]
    assert history(tmp_path)["fitness"][0]["generation"] == 4
    CbAll()(population(1, [0.1]))  # no callbacks: nothing happens
    with pytest.raises(TypeError, match="callables"):
        CbAll(plot, "not a callback")


def test_cball_takes_persist_made_for_a_folder_and_refuses_persist_itself(tmp_path):
    # docs/callbacks.md showed CbAll(persist, plots): persist is a factory of callbacks, so
    # that called persist(population), made a callback and dropped it, writing nothing.
    from tinyevo.app import load_checkpoint, persist

    with pytest.raises(TypeError, match=r"persist\(mdir\)"):
        CbAll(persist, PlotFitness(tmp_path))
    CbAll(persist(tmp_path / "copy"), PlotFitness(tmp_path))(population(3, [0.5, 0.2]))
    saved, _ = load_checkpoint(tmp_path / "copy")
    assert saved.generation == 3 and [c.fitness for c in saved] == [0.5, 0.2]
    with pytest.raises(TypeError, match="persist"):
        persist(population(1, [0.1]))              # a population where a folder belongs


def test_a_callback_that_returns_a_function_is_an_error_not_a_silent_no_op():
    def factory(population):              # a callback maker passed where a callback belongs
        return lambda p: None

    with pytest.raises(TypeError, match="returned"):
        CbAll(factory)(population(1, [0.1]))


def test_bad_input_and_damaged_files_are_reported(tmp_path):
    with pytest.raises(TypeError, match="Population"):
        PlotFitness(tmp_path)([0.1, 0.2])
    with pytest.raises(ValueError, match="plain file name"):
        PlotFitness(tmp_path, name="a/b")
    data = tmp_path / "plotdata"
    data.mkdir()
    (data / "fitness.csv").write_text("something,else\n1,2\n")
    with pytest.raises(ValueError, match="expected the columns"):
        PlotFitness(tmp_path)
    (data / "fitness.csv").write_text("generation,best,mean,size,nvalid\n1,0.5,oops,2,2\n")
    with pytest.raises(ValueError, match="line 2"):
        PlotFitness(tmp_path)
    assert history(tmp_path / "nothing-here") == {}


def test_no_temporary_files_are_left(tmp_path):
    cb = MultiPlot(PlotFitness(tmp_path), ScatterPop(tmp_path))
    cb(population(1, [0.1, 0.2]))
    leftovers = [p.name for p in tmp_path.rglob("*") if p.name.endswith(".tmp")]
    assert leftovers == []


def test_importing_the_app_does_not_import_matplotlib():
    import subprocess

    code = "import sys, tinyevo.app; print('matplotlib' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_missing_matplotlib_says_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # makes `import matplotlib` fail
    with pytest.raises(ImportError, match=r"pip install 'tinyevo\[app\]'"):
        PlotFitness(tmp_path)
    assert history(tmp_path) == {}
