"""MNIST: the Pareto front of a multi-objective ``tinyevo fit`` against the single-objective run.

For each seed, two runs of the command, one after the other, with the same time limit:

single   ``tinyevo fit --data mnist:DIR --time-limit T --seed S --workers W``
front    the same with ``--objectives OBJ`` (default ``accuracy,params``)

Each is scored on the 10,000 test images: the single run's best model (``result.json``), and
every member of the front (``front/front.json``; the command tests each). The question (issue
#24): does the front hold a model within 0.3 % of the single run's test accuracy with at most
half its parameters?

    python benchmarks/bench_pareto_mnist.py DIR                       # 10 min a run, seed 0
    python benchmarks/bench_pareto_mnist.py DIR --only front --objectives loss,params
    python benchmarks/bench_pareto_mnist.py DIR --time-limit 30s --out pareto.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_mnist  # noqa: E402  (sets tinyevo up before NumPy)

from tinyevo.cli import parse_duration  # noqa: E402

ACCURACY_GAP = 0.003    # the front's model may be this much less accurate (a fraction) ...
PARAMS_SHARE = 0.5      # ... with at most this share of the single run's parameters


def run(data_dir: str, seconds: float, seed: int, workers: int, run_dir: Path,
        objectives: str | None) -> dict:
    """One ``tinyevo fit`` command into ``run_dir``; what it reports, and its front if any."""
    cmd = [sys.executable, "-m", "tinyevo.cli", "fit", "--data", f"mnist:{data_dir}",
           "--time-limit", str(seconds), "--seed", str(seed), "--workers", str(workers),
           "--dir", str(run_dir), "--no-progress"]
    if objectives:
        cmd += ["--objectives", objectives]
    print("$ " + " ".join(cmd), flush=True)
    returncode, wall, output = bench_mnist._run_echoed(cmd, kill_after=2 * seconds + 300)
    run_dir.with_suffix(".log").write_text(output)
    row = {"returncode": returncode, "wall_s": wall, "objectives": objectives,
           **bench_mnist.read_fit_result(run_dir, output)}
    table = run_dir / "front" / "front.json"
    if table.is_file():
        row["front"] = [{k: m.get(k) for k in ("accuracy", "loss", "params", "test_accuracy",
                                               "generation")}
                        for m in json.loads(table.read_text())["members"]]
    return row


def compare(single: dict, front: dict) -> dict:
    """The front's members that meet the target against ``single``'s model, and the closest."""
    acc, params = single["test_accuracy"], single["nparams"]
    members = front.get("front") or []
    small = [m for m in members if m["params"] <= PARAMS_SHARE * params
             and m.get("test_accuracy") is not None]
    best_small = max(small, key=lambda m: m["test_accuracy"], default=None)
    return {"single_test_accuracy": acc, "single_params": params,
            "target_accuracy": acc - ACCURACY_GAP, "params_at_most": PARAMS_SHARE * params,
            "best_small": best_small,
            "met": best_small is not None and best_small["test_accuracy"] >= acc - ACCURACY_GAP}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("dir", metavar="DIR", help="folder with the four gzipped MNIST IDX files")
    p.add_argument("--time-limit", type=parse_duration, default=600.0)
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--objectives", default="accuracy,params")
    p.add_argument("--only", choices=("single", "front"), default=None)
    p.add_argument("--runs", default="runs/bench_pareto", help="where the run folders go")
    p.add_argument("--out", default=None, help="write the results to this JSON file")
    args = p.parse_args(argv)
    report = []
    for seed in args.seeds:
        rows = {}
        for arm in ("single", "front"):
            if args.only in (None, arm):
                run_dir = Path(args.runs) / f"{arm}-{seed}"
                rows[arm] = run(args.dir, args.time_limit, seed, args.workers, run_dir,
                                args.objectives if arm == "front" else None)
        if len(rows) == 2:
            rows["compare"] = compare(rows["single"], rows["front"])
            print(json.dumps(rows["compare"], indent=1))
        report.append({"seed": seed, **rows})
        if args.out:
            Path(args.out).write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
