"""Reference training step on a GPU: tinyevo on CuPy vs tinyevo on NumPy vs PyTorch (CUDA).

    python benchmarks/bench_gpu.py [REPEATS]     # needs CuPy and an NVIDIA GPU

The net is bench_step.py's (two conv-BN-relu-maxpool blocks, global mean pool, two dense
layers; Adam), at batch 64 (the CPU reference) and 256. Each GPU step is timed to completion
(the device is synchronised after it); the three are interleaved in rounds so that clock and
machine noise hit all alike, and each figure is the best of three rounds' medians.
"""

from __future__ import annotations

import statistics
import sys
import time

import tinyevo  # first: it sets OpenBLAS's thread wait before NumPy loads OpenBLAS

# isort: split
import numpy as np
from bench_step import _threads, data, tinyevo_net, tinyevo_step, torch_step

from tinyevo import backend as B
from tinyevo.optimizers import Adam


def _timed(step, sync, repeats, warmup=3):
    for _ in range(warmup):
        step()
    sync()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def _ours(backend, x, y):
    B.use(backend)
    tinyevo.seed(0)
    model = tinyevo_net(x.shape[1])
    step = tinyevo_step(model, Adam(), B.to_device(x), B.to_device(y))
    B.use("numpy")

    def run():
        B.use(backend)
        try:
            step()
        finally:
            B.use("numpy")
    return run


def _torch_cuda(x, y):
    import torch

    if not torch.cuda.is_available():
        return None, None
    torch.backends.cudnn.benchmark = True
    return torch_step(x.shape[1], x, y, device="cuda"), torch.cuda.synchronize


def compare(batch, repeats):
    import cupy

    x, y = data(3, 32)
    if batch != len(x):
        reps = -(-batch // len(x))
        x, y = np.concatenate([x] * reps)[:batch], np.concatenate([y] * reps)[:batch]
    gpu_sync = cupy.cuda.Device().synchronize
    steps = {"tinyevo-cupy": (_ours("cupy", x, y), gpu_sync),
             "tinyevo-numpy": (_ours("numpy", x, y), lambda: None)}
    try:
        run, sync = _torch_cuda(x, y)
        if run is not None:
            steps["torch-cuda"] = (run, sync)
    except ImportError:
        pass
    best = {k: [] for k in steps}
    for _ in range(3):
        for k, (run, sync) in steps.items():
            best[k].append(_timed(run, sync, max(repeats // 3, 3)))
    return {k: 1e3 * min(v) for k, v in best.items()}


if __name__ == "__main__":
    repeats = int(sys.argv[1]) if len(sys.argv) > 1 else 30
    import cupy

    props = cupy.cuda.runtime.getDeviceProperties(0)
    print(f"GPU: {props['name'].decode()}; CuPy {cupy.__version__}; NumPy {np.__version__}; "
          f"CPU threads (BLAS) {_threads()}")
    for batch in (64, 256):
        r = compare(batch, repeats)
        parts = [f"{k} {v:.2f} ms" for k, v in r.items()]
        line = f"3x32x32, batch {batch}: " + ", ".join(parts)
        line += f"; numpy/cupy {r['tinyevo-numpy'] / r['tinyevo-cupy']:.2f}x"
        if "torch-cuda" in r:
            line += f"; cupy/torch-cuda {r['tinyevo-cupy'] / r['torch-cuda']:.2f}"
        print(line, flush=True)
