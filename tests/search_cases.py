"""Search spaces shared by the search tests and the benchmark: the seed README's examples."""

from __future__ import annotations

import tinyevo as te
from tinyevo.search.examples import complex_search_space


def complex_space(classes: int = 10, max_channels: int = 256) -> te.AbstractArchSpace:
    """The seed README's "complex search space" (conv/bn blocks, forks, residuals, reductions)."""
    return complex_search_space(classes, max_channels)


def basic_space(nlabels: int = 3) -> te.AbstractArchSpace:
    """The seed README's first example: 1-3 hidden dense layers and a shielded output."""
    layerspace = te.VertexSpace(te.DenseSpace(range(3, 11), ["identity", "relu", "elu", "selu"]))
    initial_hidden = te.RepeatArchSpace(layerspace, range(1, 4))
    outlayer = te.VertexSpace(te.DenseSpace(nlabels, "identity"), shielded=True)
    return te.ArchSpaceChain(initial_hidden, outlayer)
