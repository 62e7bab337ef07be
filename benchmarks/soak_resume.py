"""Soak test of resume: kill ``tinyevo fit`` with SIGKILL again and again, and check that the
run still ends exactly where an uninterrupted one ends. Run by hand, not in CI.

1. reference   ``tinyevo fit --data digits --generations G --population P --seed S --workers W
               --dir REF --no-progress``, uninterrupted, watched to time its phases.
2. killed      the same command on a fresh directory, SIGKILLed (its whole process group) at
               N random moments, and started again after each kill (fit resumes on its own when
               the directory holds a checkpoint); after the last kill it runs to the end. Kill k
               is aimed at generation about k*G/N, so the kills spread over the run, and each is
               one of (drawn with a seeded RNG):
                 moment            a random delay into the generation (startup included where
                                   the process has just started), up to 1.2 generation times;
                 plot-data         when the first plot data file of a generation is replaced;
                 plotting          a random delay after that, up to the callbacks' time;
                 checkpoint-write  a random delay after the checkpoint's staging folder appears,
                                   up to the time a checkpoint takes to write;
                 checkpoint-swap   when ``.checkpoint.new``/``.old`` appears, or the swapped-in
                                   ``checkpoint/`` is seen;
                 export            the last N//10 kills: a random moment during the test
                                   evaluation and export after the last generation.
               The phase a kill landed in is read from what the kill left (a staging folder, a
               ``.tmp`` file), else from what the process had written and printed so far.
               Meanwhile a thread runs ``tinyevo show DIR`` on the live directory over and over;
               every failure counts, except "no checkpoint yet" before the first one.
3. compare     the killed run's final checkpoint with the reference's, exactly (bit for bit):
               every member's fitness, generation, optimiser, structure and arrays, the hall of
               fame likewise, the raw ``members.npz``/``optimizers.npz`` (optimiser moments
               included), ``state.json`` (random generator state included) but for its
               wall-clock fields, every row of the plot data but for its wall-clock column
               (``eval_time``), the exported ``best/`` model, ``best.onnx`` and ``result.json``
               (but for ``seconds``). Last, the directory must hold what the reference's holds,
               plus at most the ``.NAME.*.tmp`` files that killed atomic writes leave (documented
               in tinyevo/app/io.py).

Exit status 0 only when everything matched, every process exited as expected and no ``show``
failed. On a 2-core machine the defaults take a few minutes.

    python benchmarks/soak_resume.py                                 # G=8, P=4, 20 kills
    python benchmarks/soak_resume.py --kills 3 --generations 4       # a quick try
    nice -n 19 python benchmarks/soak_resume.py --out soak.json --keep runs/soak
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import tinyevo as te  # first: it sets OpenBLAS's thread wait before NumPy loads OpenBLAS

# isort: split
import numpy as np

from tinyevo.app.callbacks import history
from tinyevo.app.checkpoint import load_checkpoint
from tinyevo.app.io import complete_dir, read_json, read_npz

REPO = Path(__file__).resolve().parent.parent
POLL_S = 0.002                    # how often the run directory is scanned
JUST_AFTER_S = 0.1                # a kill this soon after a checkpoint counts as at its end
MODES = {"moment": 0.4, "plot-data": 0.1, "plotting": 0.15, "checkpoint-write": 0.2,
         "checkpoint-swap": 0.15}
NOT_YET = ("holds no checkpoint yet", "no run directory at")   # show before the first generation
IN_USE = "in use by another run"
WALL_CLOCK_COLUMNS = {"eval_time"}                 # plot data measured with a clock
WALL_CLOCK_STATE = {"elapsed", "last_seconds"}     # likewise in the checkpoint's state
TMP_NAME = re.compile(r"^\..+\.[0-9a-f]{8}\.tmp$")  # what a killed atomic_open leaves
GENERATION_LINE = re.compile(r"^generation\s+(\d+): best .*\((\d+(?:\.\d+)?) s\)")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    rng = random.Random(args.seed if args.kill_seed is None else args.kill_seed)
    t_start = time.monotonic()
    report: dict[str, Any] = {"config": _config(args)}
    with _root(args.keep) as root:
        ref_dir, run_dir = root / "reference", root / "killed"
        print(f"reference: $ {' '.join(_fit_command(args, ref_dir))}", flush=True)
        ref = run_reference(_fit_command(args, ref_dir), ref_dir)
        report["reference"] = ref
        _write(args.out, report)
        if ref["returncode"] != 0:
            print(f"the reference run failed (exit {ref['returncode']}):\n{ref['stderr']}")
            return 1
        print(f"reference: {ref['seconds']:.1f} s (startup {ref['startup_s']:.1f} s, "
              f"generations {_range(ref['generation_s'].values())} s, callbacks "
              f"{ref['callbacks_s']:.2f} s, checkpoint write {ref['write_s']:.2f} s, export "
              f"{ref['export_s']:.1f} s)\n", flush=True)
        print(f"killed run: the same command on {run_dir}, {args.kills} kills", flush=True)
        shows = ShowLoop(run_dir)
        shows.start()
        try:
            soak = run_killed(args, _fit_command(args, run_dir), run_dir, ref, rng, report)
        finally:
            shows.stop()
        report["killed"] = soak
        report["show"] = shows.summary()
        print("\ncomparing the killed run with the reference ...", flush=True)
        try:
            diffs, checked = compare_runs(ref_dir, run_dir)
        except Exception as err:  # a run whose results cannot be read back fails the soak
            diffs, checked = [f"cannot compare: {type(err).__name__}: {err}"], {}
        report["compare"] = {"matched": not diffs, "differences": diffs, "checked": checked}
        report["directory"] = check_directory(ref_dir, run_dir)
    report["total_s"] = time.monotonic() - t_start
    report["ok"] = bool(report["compare"]["matched"] and soak["final_returncode"] == 0
                        and not soak["failures"] and not report["show"]["failures"]
                        and not report["directory"]["surprises"])
    _write(args.out, report)
    print(_summary(report))
    if args.out:
        print(f"results: {args.out}")
    return 0 if report["ok"] else 1


# ----------------------------------------------------------------------------- the two runs

def run_reference(cmd: list[str], mdir: Path) -> dict:
    """Run ``cmd`` uninterrupted; time its startup, generations, callbacks, checkpoint writes
    and export from its output and from what it writes."""
    fit, watch = Fit(cmd), Watch(mdir)
    while fit.proc.poll() is None:
        watch.poll(fit.elapsed())
        time.sleep(POLL_S)
    seconds = fit.elapsed()
    fit.finish()
    gens = {int(m[1]): (t, float(m[2])) for t, line in fit.lines
            if (m := GENERATION_LINE.match(line))}
    callbacks, writes = [], []
    plotted = staged = None
    for t, event in watch.events:
        if event == "plotdata" and plotted is None:
            plotted = t
        elif event == "staging":
            staged = t
            if plotted is not None:
                callbacks.append(t - plotted)
        elif event == "checkpoint":
            if staged is not None:
                writes.append(t - staged)
            plotted = staged = None
    return {"command": cmd, "returncode": fit.proc.returncode, "stderr": fit.stderr_text(),
            "seconds": seconds, "startup_s": fit.started_at() or 2.0,
            "generation_s": {g: s for g, (_, s) in sorted(gens.items())},
            "callbacks_s": statistics.median(callbacks) if callbacks else 0.5,
            "write_s": statistics.median(writes) if writes else 0.2,
            "export_s": seconds - max(t for t, _ in gens.values()) if gens else 5.0}


def run_killed(args: argparse.Namespace, cmd: list[str], mdir: Path, ref: dict,
               rng: random.Random, report: dict) -> dict:
    """Start ``cmd`` and SIGKILL it ``args.kills`` times, restarting it after each kill, then
    let it run to the end."""
    target = args.generations
    nexport = args.kills // 10 if args.kills >= 10 else int(args.kills >= 3)
    ninside = args.kills - nexport
    limit = max(120.0, 5 * ref["seconds"])          # a process running longer than this hangs
    kills: list[dict] = []
    exits: list[dict] = []
    failures: list[dict] = []
    processes = 0
    while len(kills) < args.kills:
        k = len(kills)
        before = _checkpoint_generation(mdir)
        if k >= ninside or before >= target:
            plan = {"mode": "export", "arm": target}
        else:
            plan = {"mode": rng.choices(list(MODES), weights=list(MODES.values()))[0],
                    "arm": k * target // ninside}
        plan["u"] = rng.random()                    # where in the mode's window to kill
        residue0 = _residue(mdir)
        fit, watch = Fit(cmd), Watch(mdir)
        processes += 1
        try:
            outcome = _kill_by_plan(fit, watch, plan, before, ref, limit)
        finally:
            if fit.proc.poll() is None:
                fit.kill()
            fit.finish()
        after = _checkpoint_generation(mdir)
        if outcome is None:                         # it exited before the kill came
            rc = fit.proc.returncode
            exits.append({"process": processes, "plan": plan["mode"], "returncode": rc,
                          "generations": [before, after], "seconds": fit.elapsed()})
            if rc != 0:
                failures.append(_failure(processes, fit, "exited"))
                print(f"  process {processes} failed (exit {rc}): {fit.stderr_tail()}",
                      flush=True)
            if len(failures) >= 3 or len(exits) > 3 * args.kills:
                print("  giving up: too many failures or exits before the kill", flush=True)
                break
            continue
        if outcome["hung"]:
            failures.append(_failure(processes, fit, f"hung for {limit:.0f} s"))
            break
        residue = sorted(set(_residue(mdir)) - set(residue0))
        phase = _phase(residue, outcome, fit, after >= target)
        kill = {"kill": k + 1, "process": processes, "mode": plan["mode"],
                "at_s": round(outcome["at_s"], 3), "phase": phase,
                "generations": [before, after], "left_behind": residue,
                "last_output": fit.lines[-1][1] if fit.lines else ""}
        kills.append(kill)
        if IN_USE in fit.stderr_text():
            failures.append(_failure(processes, fit, "lock refused"))
        print(f"  kill {k + 1:2d}: {plan['mode']:<16} at {outcome['at_s']:6.2f} s  "
              f"checkpoint {before} -> {after}  {phase}", flush=True)
        report["killed"] = {"kills": kills, "exits_before_kill": exits, "failures": failures}
        _write(args.out, report)
    print("  running it to the end ...", flush=True)
    final = Fit(cmd)
    processes += 1
    try:
        rc = final.proc.wait(timeout=limit)
    except subprocess.TimeoutExpired:
        final.kill()
        rc = final.proc.returncode
        failures.append(_failure(processes, final, f"hung for {limit:.0f} s"))
    final.finish()
    if rc != 0:
        failures.append(_failure(processes, final, "the final run failed"))
    return {"kills": kills, "exits_before_kill": exits, "failures": failures,
            "processes": processes, "resumes": processes - 1, "final_returncode": rc,
            "final_seconds": final.elapsed(),
            "final_stdout_tail": [ln for _, ln in final.lines][-6:]}


def _kill_by_plan(fit: Fit, watch: Watch, plan: dict, generation: int, ref: dict,
                  limit: float) -> dict | None:
    """Watch ``fit`` until its plan says kill; kill it. None when it exits first."""
    mode, u = plan["mode"], plan["u"]
    armed = 0.0 if generation >= plan["arm"] else None   # since when the plan applies
    due = None                                           # when to kill
    if armed is not None:
        due = _due_at_arming(mode, u, 0.0, True, generation, ref)
    while fit.proc.poll() is None:
        t = fit.elapsed()
        if t > limit:
            fit.kill()
            return {"hung": True, "at_s": t}
        events = watch.poll(t)
        if "checkpoint" in events:
            generation = max(generation, _checkpoint_generation(mdir=watch.mdir))
            if armed is None and generation >= plan["arm"]:
                armed = t
                due = _due_at_arming(mode, u, t, False, generation, ref)
                events = []                              # the plan's events come after arming
        if armed is not None and due is None:
            due = _due_on_event(mode, u, t, events, ref)
        if due is not None and t >= due:
            outcome = {"hung": False, "at_s": t, "events": list(watch.events),
                       "lock": _lock_pid(watch.mdir)}
            fit.kill()
            return outcome
        time.sleep(POLL_S)
    return None


def _due_at_arming(mode: str, u: float, t: float, at_start: bool, generation: int,
                   ref: dict) -> float | None:
    """When to kill, for the modes timed from the moment the plan applies (else None)."""
    nxt = ref["generation_s"].get(generation + 1, max(ref["generation_s"].values(), default=5.0))
    startup = ref["startup_s"] if at_start else 0.0
    if mode == "moment":
        low = 0.2 if at_start else 0.0
        return t + low + u * (startup + 1.2 * nxt - low)
    if mode == "export":
        low = 0.2 if at_start else 0.0
        return t + low + u * (startup + 0.9 * ref["export_s"] - low)
    return None


def _due_on_event(mode: str, u: float, t: float, events: list[str], ref: dict) -> float | None:
    """When to kill, for the modes timed from something fit writes (else None)."""
    if mode == "plot-data" and "plotdata" in events:
        return t
    if mode == "plotting" and "plotdata" in events:
        return t + u * ref["callbacks_s"]
    if mode == "checkpoint-write" and "staging" in events:
        return t + u * ref["write_s"]
    if mode == "checkpoint-swap" and ("swap" in events or "checkpoint" in events):
        return t
    return None


def _phase(residue: list[str], outcome: dict, fit: Fit, searched: bool) -> str:
    """Where in fit a kill landed: from what it left half-written, else from what it had done."""
    for prefix, phase in ((".checkpoint.partial-", "checkpoint: writing the staging folder"),
                          (".checkpoint.new", "checkpoint: swapping it in"),
                          (".checkpoint.old", "checkpoint: removing the previous one"),
                          ("plotdata/.", "callbacks: writing plot data"),
                          (".multiplot.png.", "callbacks: writing the plot image"),
                          (".best.onnx.", "export: writing best.onnx"),
                          (".best", "export: saving best/"),
                          (".result.json.", "export: writing result.json")):
        if any(r.startswith(prefix) for r in residue):
            return phase
    if fit.started_at() is None:
        return "startup: imports and data"
    if outcome["events"]:
        seen, last = outcome["events"][-1]
        if last == "checkpoint":
            if outcome["at_s"] - seen < JUST_AFTER_S:
                return "checkpoint: just swapped in"
            return "export: test evaluation" if searched else "training"
        return {"plotdata": "callbacks: drawing the plots",
                "plot-image": "callbacks: plots done, checkpoint not begun",
                "staging": "checkpoint: writing", "swap": "checkpoint: swapping",
                "export": "export"}[last]
    # Nothing written yet by this process. fit holds the lock from its start to its return
    # (the test evaluation and export come after).
    if outcome["lock"] == fit.proc.pid:
        return "startup: loading the checkpoint" if searched else "training"
    if outcome["lock"] is None and searched:
        return "export: test evaluation"
    return "startup: taking the lock"


# -------------------------------------------------------------------------- the processes

class Fit:
    """One ``tinyevo fit`` process, in its own process group; its output, timestamped."""

    def __init__(self, cmd: list[str]) -> None:
        self.t0 = time.monotonic()
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True, env=_env(), start_new_session=True)
        self.lines: list[tuple[float, str]] = []
        self.stderr: list[str] = []
        self._readers = [threading.Thread(target=self._read, args=(self.proc.stdout, True)),
                         threading.Thread(target=self._read, args=(self.proc.stderr, False))]
        for r in self._readers:
            r.start()

    def _read(self, stream: Any, timestamped: bool) -> None:
        for line in stream:
            if timestamped:
                self.lines.append((self.elapsed(), line.rstrip("\n")))
            else:
                self.stderr.append(line)

    def elapsed(self) -> float:
        return time.monotonic() - self.t0

    def started_at(self) -> float | None:
        """When fit printed its first line (the data are loaded then), or None."""
        return next((t for t, line in self.lines if line.startswith("tinyevo fit:")), None)

    def kill(self) -> None:
        """SIGKILL the process and any workers it started."""
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait()

    def finish(self) -> None:
        self.proc.wait()
        for r in self._readers:
            r.join()

    def stderr_text(self) -> str:
        return "".join(self.stderr)

    def stderr_tail(self) -> str:
        return "".join(self.stderr[-8:]).strip()


class Watch:
    """Scans a run directory and logs ``(seconds, event)`` for what fit writes there."""

    def __init__(self, mdir: Path) -> None:
        self.mdir = mdir
        self.prev = _scan(mdir)
        self.events: list[tuple[float, str]] = []

    def poll(self, t: float) -> list[str]:
        """The events since the last scan, in the order fit causes them."""
        now = _scan(self.mdir)
        new = [e for e, changed in _EVENTS if changed(self.prev, now)]
        self.prev = now
        self.events += [(t, e) for e in new]
        return new


def _changed(where: str, match: Any) -> Any:
    def changed(prev: dict, now: dict) -> bool:
        a, b = prev[where], now[where]
        return any(match(n) and a.get(n) != ino for n, ino in b.items())
    return changed


_EVENTS = (  # (event, test on two scans): a name that appeared or was replaced
    ("plotdata", _changed("plot", lambda n: True)),
    ("plot-image", _changed("top", lambda n: n.endswith(".png") or ".png." in n)),
    ("staging", _changed("top", lambda n: n.startswith(".checkpoint.partial-"))),
    ("swap", _changed("top", lambda n: n in (".checkpoint.new", ".checkpoint.old"))),
    ("checkpoint", _changed("top", lambda n: n == "checkpoint")),
    ("export", _changed("top", lambda n: n.startswith((".best", ".result.json", "best"))
                        or n == "result.json")),
)


def _scan(mdir: Path) -> dict[str, dict[str, int]]:
    return {"top": _inodes(mdir), "plot": _inodes(mdir / "plotdata")}


def _inodes(folder: Path) -> dict[str, int]:
    try:
        with os.scandir(folder) as it:
            return {e.name: e.inode() for e in it}
    except (FileNotFoundError, NotADirectoryError):
        return {}


class ShowLoop(threading.Thread):
    """Runs ``tinyevo show DIR`` back to back until stopped; counts runs and failures."""

    def __init__(self, mdir: Path) -> None:
        super().__init__(daemon=True)
        self.mdir = mdir
        self.runs = self.ok = self.not_yet = 0
        self.failures: list[dict] = []
        self.seconds: list[float] = []
        self._halt = threading.Event()

    def run(self) -> None:
        cmd = [sys.executable, "-m", "tinyevo.cli", "show", str(self.mdir)]
        while not self._halt.is_set():
            t = time.monotonic()
            try:
                r = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=_env())
                rc, err = r.returncode, r.stderr
            except subprocess.TimeoutExpired:
                rc, err = None, "timed out after 120 s"
            self.runs += 1
            self.seconds.append(time.monotonic() - t)
            if rc == 0:
                self.ok += 1
            elif rc is not None and any(s in err for s in NOT_YET):
                self.not_yet += 1
            else:
                self.failures.append({"run": self.runs, "returncode": rc,
                                      "stderr": err.strip()[-2000:]})
                print(f"  show failed (exit {rc}): {err.strip()[-300:]}", flush=True)
            self._halt.wait(0.05)

    def stop(self) -> None:
        self._halt.set()
        self.join()

    def summary(self) -> dict:
        return {"runs": self.runs, "ok": self.ok, "before_first_checkpoint": self.not_yet,
                "failures": self.failures,
                "median_s": statistics.median(self.seconds) if self.seconds else None}


# ------------------------------------------------------------------------------ comparing

def compare_runs(ref: Path, run: Path) -> tuple[list[str], dict]:
    """Every difference between the two runs' results (empty when they are the same), and
    what was compared."""
    diffs: list[str] = []
    checked: dict[str, Any] = {}
    a, b = load_checkpoint(ref), load_checkpoint(run)
    if a is None or b is None:
        return [f"no checkpoint in the {'reference' if a is None else 'killed'} run"], checked
    (pa, sa), (pb, sb) = a, b
    if pa.generation != pb.generation:
        diffs.append(f"checkpoint generation {pa.generation} vs {pb.generation}")
    n = _compare_candidates(f"generation {pa.generation}, member", pa.members, pb.members, diffs)
    m = _compare_candidates("hall of fame entry", pa.hall_of_fame.members,
                            pb.hall_of_fame.members, diffs)
    checked.update(generation=pa.generation, members=len(pa.members),
                   hall_of_fame=len(pa.hall_of_fame.members), model_arrays=n + m)
    _compare_json("checkpoint state", _without(sa, WALL_CLOCK_STATE),
                  _without(sb, WALL_CLOCK_STATE), diffs)
    fa, fb = complete_dir(ref / "checkpoint"), complete_dir(run / "checkpoint")
    for name in ("members.npz", "optimizers.npz"):
        checked[name] = _compare_arrays(f"checkpoint/{name}", read_npz(fa / name),
                                        read_npz(fb / name), diffs)
    _compare_json("checkpoint/state.json", _without(read_json(fa / "state.json"),
                                                    WALL_CLOCK_STATE | {"tinyevo"}),
                  _without(read_json(fb / "state.json"), WALL_CLOCK_STATE | {"tinyevo"}), diffs)
    checked["plot_rows"] = _compare_history(history(ref), history(run), diffs)
    checked.update(_compare_exports(ref, run, diffs))
    return diffs, checked


def _compare_candidates(label: str, xs: list, ys: list, diffs: list[str]) -> int:
    if len(xs) != len(ys):
        diffs.append(f"{label}s: {len(xs)} vs {len(ys)}")
    narrays = 0
    for i, (x, y) in enumerate(zip(xs, ys)):
        where = f"{label} {i}"
        for attr in ("fitness", "generation"):
            if not _same(getattr(x, attr, None), getattr(y, attr, None)):
                diffs.append(f"{where}: {attr} {getattr(x, attr, None)!r} vs "
                             f"{getattr(y, attr, None)!r}")
        ox, oy = x.opt(), y.opt()
        _compare_json(f"{where}: optimiser", None if ox is None else ox.to_spec(),
                      None if oy is None else oy.to_spec(), diffs)
        gx, gy = x.graph(), y.graph()
        _compare_json(f"{where}: model structure", gx.to_spec(), gy.to_spec(), diffs)
        narrays += _compare_arrays(f"{where} (fitness {getattr(x, 'fitness', None)!r})",
                                   gx.arrays(), gy.arrays(), diffs)
    return narrays


def _compare_arrays(where: str, xs: dict, ys: dict, diffs: list[str]) -> int:
    """Bit-for-bit comparison of two dicts of arrays; returns how many were compared."""
    for k in sorted(set(xs) ^ set(ys)):
        diffs.append(f"{where}: array {k!r} only in the {'reference' if k in xs else 'killed'} "
                     "run")
    common = sorted(set(xs) & set(ys))
    for k in common:
        a, b = te.backend.to_numpy(xs[k]), te.backend.to_numpy(ys[k])
        if a.dtype != b.dtype or a.shape != b.shape:
            diffs.append(f"{where}: array {k!r} is {a.dtype}{a.shape} vs {b.dtype}{b.shape}")
        elif a.tobytes() != b.tobytes():
            ndiff = int(np.count_nonzero(a != b)) if a.dtype.kind in "fiub" else -1
            worst = (float(np.nanmax(np.abs(a.astype(np.float64) - b.astype(np.float64))))
                     if a.dtype.kind in "fiu" and a.size else float("nan"))
            diffs.append(f"{where}: array {k!r} {a.dtype}{a.shape} differs in {ndiff} of "
                         f"{a.size} elements (largest difference {worst:.3g})")
    return len(common)


def _compare_history(xs: dict, ys: dict, diffs: list[str]) -> int:
    """Every row of every plot data file, but for the wall-clock columns."""
    nrows = 0
    for name in sorted(set(xs) | set(ys)):
        rx, ry = xs.get(name), ys.get(name)
        if rx is None or ry is None:
            which = "killed" if rx is None else "reference"
            diffs.append(f"plotdata/{name}.csv only in the {which} run")
            continue
        if len(rx) != len(ry):
            diffs.append(f"plotdata/{name}.csv: {len(rx)} rows vs {len(ry)}")
        for j, (x, y) in enumerate(zip(rx, ry)):
            nrows += 1
            for col in sorted((set(x) | set(y)) - WALL_CLOCK_COLUMNS):
                if not _same(x.get(col), y.get(col)):
                    member = f", member {x['member']}" if "member" in x else ""
                    diffs.append(f"plotdata/{name}.csv row {j + 1} (generation "
                                 f"{x.get('generation')}{member}): {col} {x.get(col)!r} vs "
                                 f"{y.get(col)!r}")
    return nrows


def _compare_exports(ref: Path, run: Path, diffs: list[str]) -> dict:
    """The exported model, its ONNX file and result.json (but for its wall time)."""
    checked: dict[str, Any] = {}
    have = [(ref / "best").is_dir(), (run / "best").is_dir()]
    if all(have):
        ga, gb = te.load_model(ref / "best"), te.load_model(run / "best")
        _compare_json("best/: model structure", ga.to_spec(), gb.to_spec(), diffs)
        checked["best_arrays"] = _compare_arrays("best/", ga.arrays(), gb.arrays(), diffs)
    elif any(have):
        diffs.append(f"best/ only in the {'reference' if have[0] else 'killed'} run")
    onnx = [(ref / "best.onnx").is_file(), (run / "best.onnx").is_file()]
    if all(onnx):
        checked["best_onnx_bytes"] = (ref / "best.onnx").stat().st_size
        if (ref / "best.onnx").read_bytes() != (run / "best.onnx").read_bytes():
            diffs.append("best.onnx: the two files differ")
    elif any(onnx):
        diffs.append(f"best.onnx only in the {'reference' if onnx[0] else 'killed'} run")
    results = [(ref / "result.json").is_file(), (run / "result.json").is_file()]
    if all(results):
        checked["result_json"] = True
        _compare_json("result.json", _without(read_json(ref / "result.json"), {"seconds"}),
                      _without(read_json(run / "result.json"), {"seconds"}), diffs)
    elif any(results):
        diffs.append(f"result.json only in the {'reference' if results[0] else 'killed'} run")
    return checked


def _compare_json(where: str, x: Any, y: Any, diffs: list[str], limit: int = 5) -> None:
    """Differences between two JSON-like values, named by their path (at most ``limit``)."""
    found: list[str] = []

    def walk(path: str, a: Any, b: Any) -> None:
        if len(found) >= limit:
            return
        if isinstance(a, dict) and isinstance(b, dict):
            for k in sorted(set(a) | set(b), key=str):
                if k not in a or k not in b:
                    found.append(f"{path}/{k}: only in the {'reference' if k in a else 'killed'}"
                                 " run")
                else:
                    walk(f"{path}/{k}", a[k], b[k])
        elif isinstance(a, list | tuple) and isinstance(b, list | tuple) and len(a) == len(b):
            for i, (p, q) in enumerate(zip(a, b)):
                walk(f"{path}/{i}", p, q)
        elif not _same(a, b):
            found.append(f"{path}: {_short(a)} vs {_short(b)}")

    walk("", x, y)
    diffs.extend(f"{where}: {f}" for f in found)


def check_directory(ref: Path, run: Path) -> dict:
    """The killed run's files against the reference's: the same, plus at most temporary files
    that killed atomic writes left."""
    a, b = _listing(ref), _listing(run)
    left = sorted(p for p in b - a if TMP_NAME.match(Path(p).name))
    surprises = sorted((b - a - set(left)) | (a - b))
    return {"files": len(b), "left_by_kills": left, "surprises": surprises}


# ------------------------------------------------------------------------------ helpers

def _fit_command(args: argparse.Namespace, mdir: Path) -> list[str]:
    return [sys.executable, "-m", "tinyevo.cli", "fit", "--data", "digits", "--generations",
            str(args.generations), "--population", str(args.population), "--seed",
            str(args.seed), "--workers", str(args.workers), "--dir", str(mdir), "--no-progress"]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _checkpoint_generation(mdir: Path) -> int:
    """The generation of the newest complete checkpoint in ``mdir``; 0 when there is none."""
    for _ in range(5):
        folder = complete_dir(mdir / "checkpoint")
        if folder is None:
            return 0
        try:
            return int(read_json(folder / "state.json")["generation"])
        except (OSError, ValueError, KeyError):
            time.sleep(0.01)                 # swapped away while being read: read again
    return 0


def _residue(mdir: Path) -> list[str]:
    """The hidden names in ``mdir`` and ``mdir/plotdata`` (but the lock): what writes in
    flight look like."""
    top = [n for n in _inodes(mdir) if n.startswith(".") and n != ".lock"]
    plot = [f"plotdata/{n}" for n in _inodes(mdir / "plotdata") if n.startswith(".")]
    return top + plot


def _lock_pid(mdir: Path) -> int | None:
    try:
        return json.loads((mdir / ".lock").read_text()).get("pid")
    except (OSError, ValueError, AttributeError):
        return None


def _listing(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


def _failure(process: int, fit: Fit, what: str) -> dict:
    return {"process": process, "what": what, "returncode": fit.proc.returncode,
            "stderr": fit.stderr_text()[-2000:],
            "stdout_tail": [ln for _, ln in fit.lines][-5:]}


def _same(a: Any, b: Any) -> bool:
    """Equal, with NaN equal to NaN (a diverged candidate's fitness)."""
    if isinstance(a, float) and isinstance(b, float) and a != a and b != b:
        return True
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(_same(p, q) for p, q in zip(a, b))
    return type(a) is type(b) and a == b


def _without(doc: Any, keys: set[str]) -> Any:
    """``doc`` without ``keys`` at any depth."""
    if isinstance(doc, dict):
        return {k: _without(v, keys) for k, v in doc.items() if k not in keys}
    if isinstance(doc, list):
        return [_without(v, keys) for v in doc]
    return doc


def _short(x: Any) -> str:
    s = repr(x)
    return s if len(s) <= 80 else s[:77] + "..."


def _range(values: Any) -> str:
    v = list(values)
    return f"{min(v):.1f}-{max(v):.1f}" if v else "-"


@contextmanager
def _root(keep: str | None):
    if keep:
        root = Path(keep).expanduser()
        for name in ("reference", "killed"):
            if (root / name).exists():
                sys.exit(f"soak_resume: {root / name} exists; give a new --keep folder (fit "
                         "would resume it)")
        root.mkdir(parents=True, exist_ok=True)
        yield root
    else:
        tmp = tempfile.mkdtemp(prefix="soak_resume-")
        try:
            yield Path(tmp)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


def _summary(report: dict) -> str:
    soak, show, cmp_ = report["killed"], report["show"], report["compare"]
    kills = soak["kills"]
    phases: dict[str, int] = {}
    for k in kills:
        phases[k["phase"]] = phases.get(k["phase"], 0) + 1
    lines = ["", f"kills: {len(kills)} (resumes {soak['resumes']}; "
             f"{len(soak['exits_before_kill'])} processes ended before their kill came)"]
    lines += [f"  {n:3d}  {p}" for p, n in sorted(phases.items(), key=lambda x: -x[1])]
    lines.append(f"final run: exit {soak['final_returncode']}, {soak['final_seconds']:.1f} s")
    for f in soak["failures"]:
        lines.append(f"FAILURE process {f['process']}: {f['what']} (exit {f['returncode']}): "
                     f"{f['stderr'].strip()[-300:]}")
    c = cmp_["checked"]
    if cmp_["matched"]:
        lines.append(f"compared with the uninterrupted run: all equal, bit for bit (generation "
                     f"{c.get('generation')}: {c.get('members')} members and "
                     f"{c.get('hall_of_fame')} hall-of-fame entries with "
                     f"{c.get('model_arrays')} model arrays; members.npz "
                     f"{c.get('members.npz')} and optimizers.npz {c.get('optimizers.npz')} "
                     f"arrays; {c.get('plot_rows')} plot data rows; best/ "
                     f"{c.get('best_arrays', 'absent')} arrays, best.onnx, result.json)")
    else:
        lines.append(f"compared with the uninterrupted run: {len(cmp_['differences'])} "
                     "DIFFERENCES")
        lines += [f"  {d}" for d in cmp_["differences"][:40]]
    d = report["directory"]
    lines.append(f"directory: {d['files']} entries; {len(d['left_by_kills'])} temporary files "
                 f"left by killed writes; surprises: {d['surprises'] or 'none'}")
    lines.append(f"show: {show['runs']} runs, {show['ok']} ok, "
                 f"{show['before_first_checkpoint']} before the first checkpoint, "
                 f"{len(show['failures'])} failures")
    lines.append(f"total {report['total_s']:.0f} s; {'OK' if report['ok'] else 'FAILED'}")
    return "\n".join(lines)


def _config(args: argparse.Namespace) -> dict:
    return {"generations": args.generations, "population": args.population,
            "kills": args.kills, "workers": args.workers, "seed": args.seed,
            "kill_seed": args.seed if args.kill_seed is None else args.kill_seed,
            "python": platform.python_version(), "tinyevo": te.__version__,
            "numpy": np.__version__, "machine": platform.platform(),
            "cpus": os.cpu_count(), "started": time.strftime("%Y-%m-%d %H:%M:%S")}


def _write(out: str | None, report: dict) -> None:
    if out:
        Path(out).write_text(json.dumps(report, indent=1, default=str) + "\n")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--generations", type=int, default=8, help="fit --generations (default 8)")
    p.add_argument("--population", type=int, default=4, help="fit --population (default 4)")
    p.add_argument("--kills", type=int, default=20, help="SIGKILLs to make (default 20)")
    p.add_argument("--workers", type=int, default=1, help="fit --workers (default 1)")
    p.add_argument("--seed", type=int, default=0, help="fit --seed, and the kills' (default 0)")
    p.add_argument("--kill-seed", type=int, default=None,
                   help="seed of the kill moments (default: --seed)")
    p.add_argument("--out", default=None, metavar="FILE.json", help="write the report here")
    p.add_argument("--keep", default=None, metavar="DIR",
                   help="keep both runs as DIR/reference and DIR/killed (default: temporary)")
    return p


if __name__ == "__main__":
    sys.exit(main())
