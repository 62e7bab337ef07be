"""What validation costs beside training on MNIST-sized images (docs/fit.md, "Large data").

    python benchmarks/bench_validation.py

For the eight initial models `fit` draws for 1x28x28 inputs (seed 0), one thread: the time of
one candidate's training budget (50 batches of 32, Adam) and of one validation pass over 1,000
samples (batches of 256), and the validation's share of the two. Random data: only the time is
measured.
"""

from __future__ import annotations

import time

import tinyevo as te  # first: it sets OpenBLAS's thread wait before NumPy loads OpenBLAS

# isort: split
import numpy as np
from threadpoolctl import threadpool_limits

from tinyevo.app import defaults
from tinyevo.app.fitting import initial_population
from tinyevo.losses import logit_cross_entropy


def main() -> None:
    te.backend.set_num_threads(1)
    te.seed(0)
    space = defaults.default_search_space("conv2d", 10, (8, 32), (1, 28, 28))
    population = initial_population(space, 1, "conv2d", 8)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((32, 1, 28, 28), dtype=np.float32)
    y = np.arange(32) % 10
    xv = rng.standard_normal((1000, 1, 28, 28), dtype=np.float32)
    shares = []
    with threadpool_limits(1):
        for c in population.members:
            model, opt = c.graph(), c.opt()
            t = time.perf_counter()
            for _ in range(50):
                out, backprop = model.forward(x, train=True)
                backprop(logit_cross_entropy(out, y)[1], need_dx=False)
                opt.update(model)
            train = time.perf_counter() - t
            t = time.perf_counter()
            for i in range(0, len(xv), 256):
                model(xv[i:i + 256])
            valid = time.perf_counter() - t
            shares.append(valid / (train + valid))
            print(f"train {train:.2f} s  validate {valid:.2f} s  share {100 * shares[-1]:.0f} %")
    print(f"validation's share of a candidate's time: median {100 * np.median(shares):.0f} %, "
          f"range {100 * min(shares):.0f}-{100 * max(shares):.0f} %")


if __name__ == "__main__":
    main()
