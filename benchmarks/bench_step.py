"""Reference training step: tinyevo vs PyTorch on the CPU, same net, same thread count.

    python benchmarks/bench_step.py              # ms per step and ratios: 3x32x32, 1x8x8, 1x28x28
    python benchmarks/bench_step.py --breakdown [3 32]   # per layer, both frameworks
    pytest benchmarks/bench_step.py --benchmark-enable

Net: Conv(3->32, 3x3, same)-BN-relu-MaxPool(2) -> Conv(32->64, 3x3, same)-BN-relu-MaxPool(2)
-> GlobalPool(mean) -> Dense(64->128, relu) -> Dense(128->10); batch 64, float32, Adam.
"""

from __future__ import annotations

import os
import statistics
import sys
import time

import tinyevo  # first: it sets OpenBLAS's thread wait before NumPy loads OpenBLAS

# isort: split
import numpy as np

from tinyevo.layers import BatchNorm, Conv, Dense, GlobalPool, MaxPool, Sequential
from tinyevo.losses import logit_cross_entropy
from tinyevo.optimizers import Adam

BATCH = 64
# The inputs compared: CIFAR-shaped (the reference), digits-shaped, MNIST-shaped.
SHAPES = ((3, 32), (1, 8), (1, 28))


def tinyevo_net(cin: int) -> Sequential:
    return Sequential(
        Conv(cin, 32, (3, 3), padding="same"), BatchNorm(32, "relu"), MaxPool(2),
        Conv(32, 64, (3, 3), padding="same"), BatchNorm(64, "relu"), MaxPool(2),
        GlobalPool("mean"), Dense(64, 128, "relu"), Dense(128, 10),
    )


def data(cin: int, hw: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((BATCH, cin, hw, hw), dtype=np.float32)
    y = rng.integers(0, 10, BATCH)
    return x, y


def tinyevo_step(model: Sequential, opt: Adam, x, y):
    def step():
        out, back = model.forward(x, train=True)
        _, dlogits = logit_cross_entropy(out, y)
        back(dlogits, need_dx=False)
        opt.update(model)
    return step


def torch_net(cin: int):
    from torch import nn

    return nn.Sequential(
        nn.Conv2d(cin, 32, 3, padding="same"), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding="same"), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(2),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10),
    )


def torch_step(cin: int, x, y, device: str = "cpu"):
    import torch
    from torch import nn

    net = torch_net(cin).to(device)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    xt, yt = torch.from_numpy(x).to(device), torch.from_numpy(y).to(device)
    lossf = nn.CrossEntropyLoss()

    def step():
        opt.zero_grad(set_to_none=False)
        lossf(net(xt), yt).backward()
        opt.step()
    return step


def median_time(step, repeats: int, warmup: int = 3) -> float:
    for _ in range(warmup):
        step()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        step()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def compare(cin: int, hw: int, repeats: int = 30) -> dict:
    """Interleave the two frameworks in rounds so that machine noise hits both alike."""
    tinyevo.seed(0)
    x, y = data(cin, hw)
    ours = tinyevo_step(tinyevo_net(cin), Adam(), x, y)
    result = {"shape": f"{cin}x{hw}x{hw}", "tinyevo_ms": None, "torch_ms": None, "ratio": None}
    try:
        import torch
        torch.set_num_threads(_threads())
        theirs = torch_step(cin, x, y)
    except ImportError:
        theirs = None
    t_ours, t_theirs = [], []
    for _ in range(3):
        t_ours.append(median_time(ours, repeats // 3))
        if theirs is not None:
            t_theirs.append(median_time(theirs, repeats // 3))
    result["tinyevo_ms"] = 1e3 * min(t_ours)
    if theirs is not None:
        result["torch_ms"] = 1e3 * min(t_theirs)
        result["ratio"] = result["tinyevo_ms"] / result["torch_ms"]
    return result


def _threads() -> int:
    try:
        from threadpoolctl import threadpool_info
        return max(i.get("num_threads", 1) for i in threadpool_info()) or os.cpu_count()
    except ImportError:
        return os.cpu_count() or 1


# ---------------------------------------------------------------- where the time goes

def breakdown(cin: int, hw: int, repeats: int = 30) -> list[tuple[str, float, float | None]]:
    """Per layer, forward + backward (input and parameter gradients) milliseconds of each
    framework (medians), rounds interleaved; then the floor that BLAS sets: the three matrix
    products of the second convolution (forward, weight and column gradients) alone."""
    tinyevo.seed(0)
    x, y = data(cin, hw)
    ours = list(tinyevo_net(cin).layers())
    try:
        import torch
        torch.set_num_threads(_threads())
        theirs = _torch_stages(torch_net(cin))
    except ImportError:
        torch, theirs = None, None
    t_ours, t_theirs = [[] for _ in ours], [[] for _ in ours]
    # Rounds of several steps each, not alternating steps: PyTorch's OpenMP threads spin a
    # while after its last call, taking the cores from the BLAS threads that follow.
    for _ in range(3):
        for _ in range(repeats // 3):
            _time_ours(ours, x, y, t_ours)
        for _ in range(repeats // 3 if theirs is not None else 0):
            _time_torch(theirs, torch.from_numpy(x), torch.from_numpy(y), t_theirs)
    rows = [(repr(layer), 1e3 * statistics.median(a),
             1e3 * statistics.median(b) if theirs is not None else None)
            for layer, a, b in zip(ours, t_ours, t_theirs)]
    rows.append(("conv2's 3 matrix products alone (NumPy/OpenBLAS)", _gemm_floor(hw), None))
    return rows


def _time_ours(layers: list, x, y, times: list) -> None:
    h, backs = x, []
    for i, layer in enumerate(layers):
        t = time.perf_counter()
        h, back = layer.forward(h, train=True)
        times[i].append(time.perf_counter() - t)
        backs.append(back)
    _, d = logit_cross_entropy(h, y)
    for i in reversed(range(len(layers))):
        t = time.perf_counter()
        d = backs[i](d, need_dx=i > 0)
        times[i][-1] += time.perf_counter() - t


def _torch_stages(net) -> list:
    """PyTorch's modules grouped as tinyevo's layers (BatchNorm with its ReLU, Flatten with the
    pooling, Linear with its ReLU)."""
    mods, stages = list(net), []
    for m in mods:
        name = type(m).__name__
        if name in ("ReLU", "Flatten") and stages:
            stages[-1].append(m)
        else:
            stages.append([m])
    return stages


def _time_torch(stages: list, x, y, times: list) -> None:
    import torch

    h, outs, ins = x, [], []
    for i, stage in enumerate(stages):
        hi = h.detach().requires_grad_(i > 0)
        t = time.perf_counter()
        o = hi
        for m in stage:
            o = m(o)
        times[i].append(time.perf_counter() - t)
        ins.append(hi)
        outs.append(o)
        h = o
    g = torch.autograd.grad(torch.nn.functional.cross_entropy(h, y), outs[-1])[0]
    for i in reversed(range(len(stages))):
        params = [p for m in stages[i] for p in m.parameters()]
        wrt = ([ins[i]] if i > 0 else []) + params
        t = time.perf_counter()
        grads = torch.autograd.grad(outs[i], wrt, g) if wrt else ()
        times[i][-1] += time.perf_counter() - t
        g = grads[0] if i > 0 else None


def _gemm_floor(hw: int, repeats: int = 20) -> float:
    rng = np.random.default_rng(0)
    m = BATCH * (hw // 2) ** 2
    col = rng.standard_normal((m, 9 * 32), dtype=np.float32)
    w = rng.standard_normal((9 * 32, 64), dtype=np.float32)
    dz = rng.standard_normal((m, 64), dtype=np.float32)
    return 1e3 * median_time(lambda: (col @ w, dz.T @ col, dz @ w.T), repeats)


# ---------------------------------------------------------------- pytest-benchmark entry points

def test_step_3x32x32(benchmark):
    tinyevo.seed(0)
    x, y = data(3, 32)
    benchmark(tinyevo_step(tinyevo_net(3), Adam(), x, y))


def test_step_1x8x8(benchmark):
    tinyevo.seed(0)
    x, y = data(1, 8)
    benchmark(tinyevo_step(tinyevo_net(1), Adam(), x, y))


def test_step_1x28x28(benchmark):
    tinyevo.seed(0)
    x, y = data(1, 28)
    benchmark(tinyevo_step(tinyevo_net(1), Adam(), x, y))


def test_torch_step_3x32x32(benchmark):
    torch = __import__("pytest").importorskip("torch")
    torch.set_num_threads(_threads())
    x, y = data(3, 32)
    benchmark(torch_step(3, x, y))


if __name__ == "__main__":
    if "--breakdown" in sys.argv:
        sys.argv.remove("--breakdown")
        cin, hw = (int(v) for v in (sys.argv[1:3] if len(sys.argv) > 2 else (3, 32)))
        print(f"{cin}x{hw}x{hw}, batch {BATCH}, {_threads()} threads: forward + backward ms")
        for name, ours_ms, theirs_ms in breakdown(cin, hw):
            theirs_text = "" if theirs_ms is None else f"  PyTorch {theirs_ms:6.2f}"
            print(f"  {name:50s} tinyevo {ours_ms:6.2f}{theirs_text}")
        sys.exit()
    repeats = int(sys.argv[1]) if len(sys.argv) > 1 else 30
    print(f"threads: {_threads()} (BLAS, PyTorch); tinyevo's own: "
          f"{tinyevo.backend.num_threads()}; OpenBLAS wait tuned: "
          f"{tinyevo.backend.blas_wait_tuned()}")
    for cin, hw in SHAPES:
        r = compare(cin, hw, repeats)
        line = f"{r['shape']:>8}: tinyevo {r['tinyevo_ms']:.2f} ms/step"
        if r["ratio"] is not None:
            line += f", PyTorch {r['torch_ms']:.2f} ms/step, ratio tinyevo/PyTorch {r['ratio']:.2f}"
        print(line)
