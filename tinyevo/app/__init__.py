"""The application layer: ``fit``, data sets from local files, checkpoints, plots, export.

Importing it needs only NumPy; optional extras (scikit-learn for the bundled digits and for
``EvoClassifier``/``EvoRegressor``) are imported when a function or class needs them.

    >>> from tinyevo.app import load_dataset, write_json
    >>> (x, y), (x_test, y_test) = load_dataset("digits")
"""

from tinyevo.app import datasets, io
from tinyevo.app.callbacks import (
    CbAll,
    MultiPlot,
    PlotFitness,
    PlotPareto,
    ScatterOpt,
    ScatterPop,
    history,
)
from tinyevo.app.checkpoint import load_checkpoint, persist, save_checkpoint
from tinyevo.app.config import FitConfig
from tinyevo.app.datasets import (
    load_cifar10,
    load_dataset,
    load_digits,
    load_fashion_mnist,
    load_mnist,
    load_npz,
)
from tinyevo.app.executors import (  # dask is imported only by DaskEvaluator
    DaskEvaluator,
    ExecutorEvaluator,
    ProcessEvaluator,
    SerialEvaluator,
    make_evaluator,
)
from tinyevo.app.fitting import fit
from tinyevo.app.io import (
    atomic_dir,
    atomic_open,
    complete_dir,
    read_json,
    read_npz,
    recover_dir,
    write_json,
    write_npz,
    write_text,
)
from tinyevo.app.model_io import load_model, save_model
from tinyevo.app.onnx_export import export_onnx  # imports onnx only when called
from tinyevo.app.pareto import export_front

__all__ = [
    "datasets", "io",
    "load_dataset", "load_digits", "load_mnist", "load_fashion_mnist", "load_cifar10", "load_npz",
    "atomic_open", "write_text", "write_json", "read_json", "write_npz", "read_npz",
    "atomic_dir", "recover_dir", "complete_dir",
    "PlotFitness", "ScatterPop", "ScatterOpt", "MultiPlot", "CbAll", "history",
]
__all__ += ["save_model", "load_model", "export_onnx"]
__all__ += ["make_evaluator", "SerialEvaluator", "ProcessEvaluator", "DaskEvaluator",
            "ExecutorEvaluator"]
__all__ += ["fit", "FitConfig", "persist", "save_checkpoint", "load_checkpoint"]
__all__ += ["PlotPareto", "export_front"]


def __getattr__(name: str) -> object:
    """``EvoClassifier`` and ``EvoRegressor``, imported on first use (they need scikit-learn)."""
    if name in ("EvoClassifier", "EvoRegressor"):
        from tinyevo.app import estimators
        return getattr(estimators, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
