"""MNIST in a fixed time: the net ``tinyevo fit`` evolves against a hand-written CNN.

For each seed, three arms get the same wall-clock budget T. They run one after another, never
side by side, because they share the cores. Each is scored on the 10,000 MNIST test images.

evolved       ``tinyevo fit --data mnist:DIR --time-limit T --seed S --workers W --dir RUN
              --no-progress`` run in a subprocess exactly as a user runs it, with a fresh run
              directory each time. Its wall time is the whole command's: start-up, data
              loading, evolution, the final test and the export. "within" means that the
              command ended within T + max(10 s, 3 % of T). The test accuracy is the one that
              fit reports (from RUN/result.json, or from its last lines of output). The exported
              RUN/best is also scored again here as a check.
warm          ``tinyevo fit ... --init INIT`` (a warm start; not a default arm): the run starts
              from the hand-written graph CNN below, untrained, with the very weights the
              graph-cnn arm starts from (saved to INIT), and evolves for T as the evolved arm
              does. With graph-cnn it answers: does evolution improve the user's own net over
              training that net alone for the same time? With --pretrain P both arms start
              instead from the net trained for P first (a user's trained net), and the
              graph-cnn arm trains it on for T with a fresh Adam(1e-3).
graph-cnn     the warm arm's net trained alone, as tinyevo-cnn is (not a default arm). A graph
              cannot flatten conv features (its sizes would be tied to the image's), so this
              net ends in a third conv block and global pooling instead:
              Conv(1->32)-BN-relu-MaxPool -> Conv(32->64)-BN-relu-MaxPool ->
              Conv(64->64)-BN-relu -> GlobalPool -> Dense(64->10), 3x3 convs (5.7 M
              multiply-adds a sample, under fit's MNIST ceiling of 6.3 M).
tinyevo-cnn   a hand-written CNN built from tinyevo's own layers. It is trained in this process
              with tinyevo's default threads.
torch-cnn     the same net in PyTorch, using as many threads as tinyevo's BLAS (2 on 2 cores).
              This arm is skipped when PyTorch is not installed.

The hand-written net is the standard small MNIST CNN that a user would write before trying
anything clever:

    Conv(1->32, 3x3, same)-BN-relu-MaxPool(2) -> Conv(32->64, 3x3, same)-BN-relu-MaxPool(2)
    -> Flatten -> Dense(3136->128, relu) -> Dense(128->10)

Evolution is worth its search only if it beats this net in the same time. The PyTorch copy of
the net separates the method from the framework: the gap between the two CNN arms comes only
from tinyevo's speed per step.

Both CNNs use Adam(1e-3) and batches of 64 drawn from shuffled epochs
(numpy.random.default_rng(seed)). tinyevo.seed(seed) or torch.manual_seed(seed) sets their
initial weights. Each trains for T seconds, counted from its first batch, and checks the clock
after every batch. Loading the data, building the net and the final test are not counted.

    python benchmarks/bench_mnist.py ~/data/mnist                    # 10 min per arm, seeds 0 1 2
    python benchmarks/bench_mnist.py ~/data/mnist --time-limit 15s --seeds 0 --only tinyevo-cnn
    python benchmarks/bench_mnist.py ~/data/mnist --seeds 0 1 --only warm,graph-cnn
    python benchmarks/bench_mnist.py ~/data/mnist --seeds 0 --only warm,graph-cnn --pretrain 10m
    python benchmarks/bench_mnist.py DIR --time-limit 30m --out mnist.json --keep-runs runs/
"""

from __future__ import annotations

import argparse
import collections
import functools
import importlib.metadata
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import tinyevo  # first: it sets OpenBLAS's thread wait before NumPy loads OpenBLAS

# isort: split
import numpy as np

from tinyevo.app.config import VALID_FRACTION, VALID_MAX
from tinyevo.app.data import split_validation
from tinyevo.cli import parse_duration
from tinyevo.layers import BatchNorm, Conv, Dense, Flatten, GlobalPool, MaxPool, Sequential
from tinyevo.losses import logit_cross_entropy
from tinyevo.optimizers import Adam

ARMS = ("evolved", "warm", "tinyevo-cnn", "graph-cnn", "torch-cnn")
DEFAULT_ARMS = ("evolved", "tinyevo-cnn", "torch-cnn")
FIT_ARMS = ("evolved", "warm")       # the arms that run the tinyevo fit command
BATCH = 64
LEARNING_RATE = 1e-3
EVAL_BATCH = 1000


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    data_dir = str(Path(args.dir).expanduser())
    if args.keep_runs and set(FIT_ARMS) & set(args.only):
        taken = [d for s in args.seeds for a in FIT_ARMS if a in args.only
                 if (d := _kept_run_dir(args.keep_runs, s, a)).exists()]
        if taken:
            sys.exit(f"bench_mnist: {taken[0]} exists; the evolved arm needs a fresh run "
                     "directory (fit would resume it)")
        Path(args.keep_runs).expanduser().mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    data = tinyevo.load_dataset(f"mnist:{data_dir}")
    (x, _), (x_test, _) = data
    print(f"MNIST: {len(x)} training and {len(x_test)} test images, loaded in "
          f"{time.perf_counter() - t:.1f} s (not counted in any arm's time)")
    report = {"config": _config(args, data_dir), "runs": []}
    print(f"time limit {args.time_limit:g} s per arm; seeds {args.seeds}; arms "
          f"{', '.join(args.only)}; {report['config']['threads']}")
    for seed in args.seeds:
        rows = []
        start = None            # with --pretrain: the trained graph CNN both warm arms start from
        if args.pretrain and {"warm", "graph-cnn"} & set(args.only):
            start, row = pretrained_graph_cnn(data, args.pretrain, seed)
            report["runs"].append({"arm": "pretrained", "seed": seed, **row})
        for arm in args.only:
            print(f"\n--- seed {seed}: {arm}", flush=True)
            if arm in FIT_ARMS:
                row = run_evolved(data_dir, data, args.time_limit, seed, args.workers,
                                  args.keep_runs, warm=arm == "warm", start=start)
            elif arm == "graph-cnn":
                build = graph_cnn if start is None else functools.partial(tinyevo.load_model,
                                                                          start)
                row = run_tinyevo_cnn(data, args.time_limit, seed, build)
            elif arm == "tinyevo-cnn":
                row = run_tinyevo_cnn(data, args.time_limit, seed)
            else:
                row = run_torch_cnn(data, args.time_limit, seed)
            rows.append({"arm": arm, "seed": seed, **row})
            report["runs"].append(rows[-1])
            _write(args.out, report)   # after every run: a long benchmark keeps what it did
        print(f"\nseed {seed}, time limit {args.time_limit:g} s")
        print(_table(rows))
    report["summary"] = summarise(report["runs"])
    _write(args.out, report)
    print(f"\nsummary over seeds {args.seeds}: median [min, max]")
    print(_summary_table(report["summary"]))
    if args.out:
        print(f"results: {args.out}")
    return 0


# ---------------------------------------------------------------------------- the three arms

def run_evolved(data_dir: str, data, seconds: float, seed: int, workers: int,
                keep_runs: str | None = None, warm: bool = False,
                start: Path | None = None) -> dict:
    """Run ``tinyevo fit`` as a user would, and read back what it reports; with ``warm``,
    starting from the hand-written graph CNN (``--init``): ``start``, a saved trained one,
    else the untrained net as the graph-cnn arm initialises it."""
    arm = "warm" if warm else "evolved"
    with tempfile.TemporaryDirectory(prefix="bench_mnist-") as tmp:
        run_dir = _kept_run_dir(keep_runs, seed, arm) if keep_runs else Path(tmp) / "run"
        cmd = [sys.executable, "-m", "tinyevo.cli", "fit", "--data", f"mnist:{data_dir}",
               "--time-limit", str(seconds), "--seed", str(seed), "--workers", str(workers),
               "--dir", str(run_dir), "--no-progress"]
        if warm and start is None:
            tinyevo.seed(seed)
            start = tinyevo.save_model(graph_cnn(), Path(tmp) / "init")
        if warm:
            cmd += ["--init", str(start)]
        print("$ " + " ".join(cmd), flush=True)
        returncode, wall, output = _run_echoed(cmd, kill_after=2 * seconds + 300)
        if keep_runs:
            run_dir.with_suffix(".log").write_text(output)
        row = {"wall_s": wall, "returncode": returncode,
               "within_limit": wall <= seconds + allowed_overrun(seconds)}
        row.update(read_fit_result(run_dir, output))
        row["rescored_test_accuracy"] = _rescore(run_dir / "best", data[1])
    if row.get("test_samples") not in (None, len(data[1][1])):
        print(f"note: fit tested on {row['test_samples']} samples, not {len(data[1][1])}")
    if returncode != 0:
        row["output_tail"] = output.splitlines()[-20:]
    return row


def run_tinyevo_cnn(data, seconds: float, seed: int, build=None) -> dict:
    """Train :func:`tinyevo_cnn` (or what ``build`` makes) for ``seconds`` in this process,
    then test it."""
    tinyevo.seed(seed)
    model = (build or tinyevo_cnn)()
    row = {"nparams": model.nparams() if hasattr(model, "nparams") else model.parameter_count()}
    row.update(train_and_test(model, *data, seconds, seed))
    return row


def pretrained_graph_cnn(data, seconds: float, seed: int) -> tuple[Path, dict]:
    """:func:`graph_cnn` trained for ``seconds`` as the graph-cnn arm trains it, but on the
    training images less those the warm arm's ``fit`` holds out to validate on; saved in a
    temporary folder (removed at exit): where ``--pretrain`` starts both warm arms."""
    import atexit
    import shutil

    (x, y), test = data
    # Not on the samples the warm arm's fit validates on (its seeded split of the training
    # images): a net that had seen them would validate too well, and bias its selection.
    train, _ = split_validation(x, y, VALID_FRACTION, seed, VALID_MAX)
    tinyevo.seed(seed)
    model = graph_cnn()
    print(f"pretraining the graph CNN for {seconds:g} s (counted in no arm)", flush=True)
    row = train_and_test(model, train, test, seconds, seed)
    print(f"pretrained: test accuracy {row['test_accuracy']:.2%} after {row['epochs']:.2f} "
          "epochs", flush=True)
    folder = Path(tempfile.mkdtemp(prefix="bench_mnist-start-"))
    atexit.register(shutil.rmtree, folder, True)
    return tinyevo.save_model(model, folder / "start"), row


def train_and_test(model, train, test, seconds: float, seed: int) -> dict:
    """Train ``model`` on ``train`` with Adam(1e-3) for ``seconds`` (:func:`train_for`), then
    its accuracy on ``test``."""
    opt = Adam(LEARNING_RATE)

    def step(xb, yb):
        logits, backprop = model.forward(xb, train=True)
        loss, dlogits = logit_cross_entropy(logits, yb)
        backprop(dlogits, need_dx=False)
        opt.update(model)
        return loss

    row = train_for(step, *train, seconds, seed)
    row["test_accuracy"] = accuracy(model, *test)
    return row


def run_torch_cnn(data, seconds: float, seed: int) -> dict:
    """:func:`run_tinyevo_cnn` with the same net in PyTorch; skipped without PyTorch."""
    try:
        import torch
    except ImportError:
        print("torch-cnn skipped: PyTorch is not installed")
        return {"skipped": "PyTorch is not installed"}
    (x, y), (x_test, y_test) = data
    torch.set_num_threads(_blas_threads())
    torch.manual_seed(seed)
    net = torch_cnn()
    opt = torch.optim.Adam(net.parameters(), lr=LEARNING_RATE)
    lossf = torch.nn.CrossEntropyLoss()

    def step(xb, yb):
        opt.zero_grad()
        loss = lossf(net(torch.from_numpy(xb)), torch.from_numpy(yb))
        loss.backward()
        opt.step()
        return loss.detach()

    def predict(xb):
        with torch.no_grad():
            return net(torch.from_numpy(xb)).numpy()

    row = {"nparams": sum(p.numel() for p in net.parameters())}
    net.train()
    row.update(train_for(step, x, y, seconds, seed))
    net.eval()
    row["test_accuracy"] = accuracy(predict, x_test, y_test)
    return row


def tinyevo_cnn() -> Sequential:
    """The hand-written net from tinyevo's layers (the module docstring says why this one)."""
    return Sequential(
        Conv(1, 32, (3, 3), padding="same"), BatchNorm(32, "relu"), MaxPool(2),
        Conv(32, 64, (3, 3), padding="same"), BatchNorm(64, "relu"), MaxPool(2),
        Flatten(), Dense(64 * 7 * 7, 128, "relu"), Dense(128, 10),
    )


def graph_cnn() -> tinyevo.CompGraph:
    """The warm arm's hand-written net, a graph (what ``fit(initial=...)`` takes; the module
    docstring says why it differs from :func:`tinyevo_cnn`)."""
    layers = [Conv(1, 32, (3, 3), padding="same"), BatchNorm(32, "relu"), MaxPool(2),
              Conv(32, 64, (3, 3), padding="same"), BatchNorm(64, "relu"), MaxPool(2),
              Conv(64, 64, (3, 3), padding="same"), BatchNorm(64, "relu"), GlobalPool(),
              Dense(64, 10)]
    node = inp = tinyevo.input_vertex("image", 1, "conv2d")
    for i, layer in enumerate(layers):
        node = tinyevo.vertex(layer, node, name=f"cnn{i}")
    return tinyevo.CompGraph(inp, node)


def torch_cnn():
    """:func:`tinyevo_cnn` in PyTorch."""
    from torch import nn

    return nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(64 * 7 * 7, 128), nn.ReLU(), nn.Linear(128, 10),
    )


# ---------------------------------------------------------------------------- shared parts

def train_for(step, x: np.ndarray, y: np.ndarray, seconds: float, seed: int) -> dict:
    """Call ``step(x_batch, y_batch)`` on shuffled epochs until ``seconds`` have passed,
    checking the clock after every batch. Both CNN arms draw the same batches for a seed."""
    rng = np.random.default_rng(seed)
    losses = collections.deque(maxlen=100)
    steps = samples = 0
    start = time.perf_counter()
    while True:
        order = rng.permutation(len(x))
        for i in range(0, len(x), BATCH):
            batch = order[i:i + BATCH]
            losses.append(step(x[batch], y[batch]))
            steps += 1
            samples += len(batch)
            elapsed = time.perf_counter() - start
            if elapsed >= seconds:
                return {"train_s": elapsed, "steps": steps, "epochs": samples / len(x),
                        "ms_per_step": 1e3 * elapsed / steps,
                        "train_loss_last100": float(np.mean([float(v) for v in losses]))}


def accuracy(predict, x: np.ndarray, y: np.ndarray) -> float:
    """Share of ``argmax(predict(x_batch))`` equal to ``y``, in batches of :data:`EVAL_BATCH`."""
    right = 0
    for i in range(0, len(x), EVAL_BATCH):
        logits = tinyevo.backend.to_numpy(predict(x[i:i + EVAL_BATCH]))
        right += int((logits.argmax(axis=1) == y[i:i + EVAL_BATCH]).sum())
    return right / len(x)


def allowed_overrun(seconds: float) -> float:
    """How far past its time limit the whole ``tinyevo fit`` command may end."""
    return max(10.0, 0.03 * seconds)


_FIELDS = {  # what fit prints at the end, one pattern per field so that one change loses one
    "generation": (r"^generation (\d+), [\d.]+ s this session", int),
    "seconds": (r"^generation \d+, ([\d.]+) s this session", float),
    "test_accuracy": (r"test accuracy ([\d.]+) ?%", lambda s: float(s) / 100),
    "test_samples": (r"on ([\d,]+) held-out samples", lambda s: int(s.replace(",", ""))),
    "validation_fitness": (r"validation fitness ([\d.]+)", float),
    "nparams": (r"([\d,]+) parameters", lambda s: int(s.replace(",", ""))),
    "nvertices": (r"(\d+) vertices", int),
}


def read_fit_result(run_dir: Path, output: str) -> dict:
    """What ``tinyevo fit`` reports: RUN/result.json where it exists, else its printed lines.

    The printed accuracy is a percentage with two decimals; result.json holds a fraction
    (a value above 1 is read as a percentage)."""
    path = Path(run_dir) / "result.json"
    if path.is_file():
        result = {k: v for k, v in json.loads(path.read_text()).items() if k in _FIELDS}
        if (result.get("test_accuracy") or 0) > 1:
            result["test_accuracy"] /= 100
        return {"source": "result.json", **result}
    found = {"source": "stdout"}
    for name, (pattern, convert) in _FIELDS.items():
        matches = re.findall(pattern, output, flags=re.MULTILINE)
        found[name] = convert(matches[-1]) if matches else None
    return found


def summarise(runs: list[dict]) -> dict:
    """Per arm: median, min and max of each number over the seeds that ran."""
    summary = {}
    for arm in ARMS:
        done = [r for r in runs if r["arm"] == arm and "skipped" not in r]
        if not done:
            continue
        fields = ("test_accuracy", "generation", "epochs", "steps", "nparams", "wall_s",
                  "train_s")
        summary[arm] = {"seeds": [r["seed"] for r in done]}
        for f in fields:
            values = [r[f] for r in done if r.get(f) is not None]
            if values:
                summary[arm][f] = {"median": statistics.median(values), "min": min(values),
                                   "max": max(values)}
        if arm in FIT_ARMS:
            summary[arm]["within_limit"] = sum(bool(r.get("within_limit")) for r in done)
            summary[arm]["failed"] = sum(r.get("returncode") != 0 for r in done)
    return summary


# ---------------------------------------------------------------------------- helpers

def _run_echoed(cmd: list[str], kill_after: float) -> tuple[int, float, str]:
    """Run ``cmd``, echoing its output as it comes; (return code, wall seconds, output)."""
    lines = []
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    watchdog = threading.Timer(kill_after, proc.kill)   # a hung fit must not hang the benchmark
    watchdog.start()
    try:
        for line in proc.stdout:
            print("  | " + line, end="", flush=True)
            lines.append(line)
        returncode = proc.wait()
    finally:
        watchdog.cancel()
    wall = time.perf_counter() - start
    return returncode, wall, "".join(lines)


def _rescore(model_dir: Path, test) -> float | None:
    """The exported best model's accuracy on the test images, or None where it cannot load."""
    try:
        graph = tinyevo.load_model(model_dir)
    except (OSError, ValueError, RuntimeError) as err:
        print(f"cannot rescore {model_dir}: {err}")
        return None
    return accuracy(graph, *test)


def _kept_run_dir(keep_runs: str, seed: int, arm: str = "evolved") -> Path:
    return Path(keep_runs).expanduser() / f"{arm}-seed{seed}"


def _blas_threads() -> int:
    try:
        from threadpoolctl import threadpool_info
        return max(i.get("num_threads", 1) for i in threadpool_info()) or os.cpu_count() or 1
    except (ImportError, ValueError):
        return os.cpu_count() or 1


def _config(args: argparse.Namespace, data_dir: str) -> dict:
    try:  # the version only: importing torch here would load its thread pools before our arms
        torch_version = importlib.metadata.version("torch")
    except importlib.metadata.PackageNotFoundError:
        torch_version = None
    return {
        "data": data_dir, "time_limit_s": args.time_limit, "seeds": args.seeds,
        "arms": args.only, "workers": args.workers, "batch": BATCH,
        "learning_rate": LEARNING_RATE,
        "allowed_overrun_s": allowed_overrun(args.time_limit),
        "threads": f"{os.cpu_count()} CPUs, BLAS {_blas_threads()} threads, tinyevo "
                   f"{tinyevo.backend.num_threads()} threads",
        "python": platform.python_version(), "tinyevo": tinyevo.__version__,
        "numpy": np.__version__, "torch": torch_version, "machine": platform.platform(),
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
    }


def _table(rows: list[dict]) -> str:
    lines = [f"{'arm':<12} {'test acc':>9} {'wall s':>8} {'gens/epochs':>12} {'steps':>7} "
             f"{'params':>9}  note"]
    for r in rows:
        if "skipped" in r:
            lines.append(f"{r['arm']:<12} {'-':>9} {'-':>8} {'-':>12} {'-':>7} {'-':>9}  "
                         f"skipped: {r['skipped']}")
            continue
        if r["arm"] in FIT_ARMS:
            amount, note = _fmt(r.get("generation"), "d", " gens"), _evolved_note(r)
            wall = r["wall_s"]
        else:
            amount, note = _fmt(r.get("epochs"), ".2f", " ep"), f"{r['ms_per_step']:.1f} ms/step"
            wall = r["train_s"]
        lines.append(f"{r['arm']:<12} {_fmt(r.get('test_accuracy'), '.2%'):>9} {wall:>8.1f} "
                     f"{amount:>12} {_fmt(r.get('steps'), 'd'):>7} "
                     f"{_fmt(r.get('nparams'), ',d'):>9}  {note}")
    return "\n".join(lines)


def _evolved_note(r: dict) -> str:
    notes = ["within limit" if r["within_limit"] else "OVER the limit", f"from {r['source']}"]
    if r["returncode"] != 0:
        notes.insert(0, f"exit code {r['returncode']}")
    if r.get("rescored_test_accuracy") is not None:
        notes.append(f"rescored {r['rescored_test_accuracy']:.2%}")
    return ", ".join(notes)


def _summary_table(summary: dict) -> str:
    def cell(stats, spec):
        if stats is None:
            return "-"
        return f"{stats['median']:{spec}} [{stats['min']:{spec}}, {stats['max']:{spec}}]"

    lines = [f"{'arm':<12} {'test acc':>24} {'gens/epochs':>22} {'wall s':>20}"]
    for arm, s in summary.items():
        amount = (cell(s.get("generation"), ".0f") if arm in FIT_ARMS
                  else cell(s.get("epochs"), ".2f"))
        wall = cell(s.get("wall_s" if arm in FIT_ARMS else "train_s"), ".0f")
        line = f"{arm:<12} {cell(s.get('test_accuracy'), '.2%'):>24} {amount:>22} {wall:>20}"
        if arm in FIT_ARMS:
            line += f"  within limit {s['within_limit']}/{len(s['seeds'])}"
            if s["failed"]:
                line += f", {s['failed']} failed"
        lines.append(line)
    return "\n".join(lines)


def _fmt(value, spec: str, suffix: str = "") -> str:
    return "-" if value is None else f"{value:{spec}}{suffix}"


def _write(out: str | None, report: dict) -> None:
    if out:
        Path(out).write_text(json.dumps(report, indent=1) + "\n")


def _arms(text: str) -> list[str]:
    arms = [a.strip() for a in text.split(",") if a.strip()]
    unknown = [a for a in arms if a not in ARMS]
    if unknown or not arms:
        raise argparse.ArgumentTypeError(f"unknown arm(s) {unknown}: choose from {','.join(ARMS)}")
    return arms


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("dir", metavar="DIR", help="folder with the four gzipped MNIST IDX files")
    p.add_argument("--time-limit", type=parse_duration, default=600.0,
                   help="wall-clock budget per arm and seed, e.g. 90s, 10m (default 10m)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--only", type=_arms, default=list(DEFAULT_ARMS),
                   help=f"comma-separated arms to run, of {','.join(ARMS)} (default "
                        f"{','.join(DEFAULT_ARMS)})")
    p.add_argument("--workers", type=int, default=2, help="tinyevo fit --workers (default 2)")
    p.add_argument("--pretrain", type=parse_duration, default=None, metavar="TIME",
                   help="start the warm and graph-cnn arms from the graph CNN trained this long "
                        "first (counted in neither arm), instead of from its initial weights")
    p.add_argument("--out", default=None, help="write all results to this JSON file")
    p.add_argument("--keep-runs", default=None, metavar="DIR",
                   help="keep fit's run directories as DIR/ARM-seedS (default: temporary)")
    return p


if __name__ == "__main__":
    sys.exit(main())
