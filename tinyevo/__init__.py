"""tinyevo: evolve neural networks with a genetic algorithm while training them."""

from tinyevo import backend, layers, losses, optimizers
from tinyevo.app.datasets import load_dataset, load_digits  # numpy only at import
from tinyevo.backend import seed

__version__ = "0.1.0"

__all__ = ["backend", "layers", "losses", "optimizers", "seed", "__version__"]
__all__ += ["load_dataset", "load_digits"]
