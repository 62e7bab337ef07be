"""Tabular data: EvoClassifier and EvoRegressor against scikit-learn's usual models, same folds.

classification   scikit-learn's breast-cancer data (569 samples, 30 features, 2 classes),
                 accuracy over --folds StratifiedKFold folds (shuffled, --seed) of
                 EvoClassifier(time_limit=T), LogisticRegression (max_iter=1000, after a
                 StandardScaler) and HistGradientBoostingClassifier.
regression       scikit-learn's diabetes data (442 samples, 10 features), R^2 over --folds
                 KFold folds (shuffled, --seed) of EvoRegressor(time_limit=T), Ridge (after a
                 StandardScaler) and HistGradientBoostingRegressor.

Every model sees the same folds, through cross_validate, one fold after another in this
process (the models never share the cores); the evolved ones run on the CPU, their candidates
in this process or, with --n-jobs, in that many worker processes. T is the budget of each fit,
so an evolved model takes about folds x T. The table gives each model's mean +- standard
deviation of the fold scores, every fold's score, and the seconds of all its fits and scoring.

    python benchmarks/bench_tabular.py                          # 5 folds, 30 s per fold
    python benchmarks/bench_tabular.py --only regression --time-limit 1m --seed 1
    python benchmarks/bench_tabular.py --smoke                  # the first fold, a tiny budget
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import tinyevo as te  # first: it sets OpenBLAS's thread wait before NumPy loads OpenBLAS

# isort: split
import numpy as np
import sklearn
from sklearn.datasets import load_breast_cancer, load_diabetes
from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.model_selection import KFold, StratifiedKFold, cross_validate
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from tinyevo.cli import parse_duration

SMOKE = dict(generations=1, population_size=2)      # --smoke: one generation of two


def main() -> None:
    args = _arguments()
    print(f"tinyevo {te.__version__}, scikit-learn {sklearn.__version__}, NumPy "
          f"{np.__version__}, Python {platform.python_version()}; {os.cpu_count()} CPUs, load "
          f"average {os.getloadavg()[0]:.1f}")
    tasks = ("classification", "regression") if args.only is None else (args.only,)
    for task in tasks:
        X, y, cv, scoring, models = _task(task, args)
        splits = list(cv.split(X, y))[:1 if args.smoke else None]
        print(f"\n{task}: {len(y)} samples, {X.shape[1]} features; {scoring} over "
              f"{len(splits)} of {args.folds} folds (seed {args.seed}), evolved models "
              f"{'in smoke settings' if args.smoke else f'{args.time_limit:g} s per fold'}\n")
        rows = [(name, *_scores(model, X, y, splits, scoring)) for name, model in models]
        print(_table(rows, len(splits)))


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--time-limit", type=parse_duration, default=30.0,
                        help="budget of each evolved fit, e.g. 30, 30s, 2m (default 30 s)")
    parser.add_argument("--folds", type=int, default=5, help="cross-validation folds (>= 2)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the folds and the models")
    parser.add_argument("--only", choices=("classification", "regression"))
    parser.add_argument("--n-jobs", type=int, default=None,
                        help="worker processes for the evolved models' candidates (default: "
                             "this process)")
    parser.add_argument("--smoke", action="store_true",
                        help="only the first fold, the evolved models one generation of two")
    args = parser.parse_args()
    if args.folds < 2:
        parser.error(f"--folds must be at least 2, got {args.folds}")
    return args


def _task(task: str, args: argparse.Namespace) -> tuple:
    """The data, folds, score and models (name, estimator) of ``task``."""
    evolved = dict(time_limit=args.time_limit, random_state=args.seed, n_jobs=args.n_jobs,
                   **(SMOKE if args.smoke else {}))
    if task == "classification":
        X, y = load_breast_cancer(return_X_y=True)
        return X, y, StratifiedKFold(args.folds, shuffle=True, random_state=args.seed), \
            "accuracy", [
                ("EvoClassifier", te.EvoClassifier(**evolved)),
                ("LogisticRegression (scaled)",
                 make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))),
                ("HistGradientBoostingClassifier",
                 HistGradientBoostingClassifier(random_state=args.seed))]
    X, y = load_diabetes(return_X_y=True)
    return X, y, KFold(args.folds, shuffle=True, random_state=args.seed), "r2", [
        ("EvoRegressor", te.EvoRegressor(**evolved)),
        ("Ridge (scaled)", make_pipeline(StandardScaler(), Ridge())),
        ("HistGradientBoostingRegressor", HistGradientBoostingRegressor(random_state=args.seed))]


def _scores(model, X, y, splits, scoring) -> tuple[list[float], float]:
    """The fold scores of ``model`` and the seconds of all its fits and scoring."""
    start = time.monotonic()
    result = cross_validate(model, X, y, cv=splits, scoring=scoring, error_score="raise")
    return [float(s) for s in result["test_score"]], time.monotonic() - start


def _table(rows: list[tuple[str, list[float], float]], nfolds: int) -> str:
    """A markdown table: model, mean +- std, each fold, seconds."""
    head = ["model", "mean ± std"] + [f"fold {i + 1}" for i in range(nfolds)] + ["seconds"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, scores, seconds in rows:
        std = statistics.stdev(scores) if len(scores) > 1 else 0.0
        cells = [name, f"{statistics.fmean(scores):.4f} ± {std:.4f}"]
        cells += [f"{s:.4f}" for s in scores] + [f"{seconds:.1f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
