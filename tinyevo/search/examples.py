"""Ready-made search spaces from the seed's README, for examples, tests and benchmarks.

    >>> inp = te.input_vertex("input", 3, "conv2d")
    >>> graph = te.CompGraph(inp, complex_search_space()(inp))   # often 100+ vertices
"""

from __future__ import annotations

from tinyevo.search.parspace import ParSpace1D
from tinyevo.search.spaces import (
    AbstractArchSpace,
    ArchSpace,
    ArchSpaceChain,
    BatchNormSpace,
    ConvSpace,
    DenseSpace,
    ForkArchSpace,
    GlobalPoolSpace,
    PoolSpace,
    RepeatArchSpace,
    ResidualArchSpace,
    VertexSpace,
)

__all__ = ["complex_search_space"]


def complex_search_space(classes: int = 10, max_channels: int = 256) -> AbstractArchSpace:
    """The seed README's "complex search space", name for name: 2-4 reductions of 1-3 blocks
    (plain, forked, residual or residual-forked repeats of conv, conv->BN or BN->conv with
    8..``max_channels`` channels and 3-5 kernels), each ending in 2x2 max pooling; then global
    pooling, 0-2 dense layers and a shielded dense output of ``classes``."""
    cs = VertexSpace(ConvSpace(2, outsizes=range(8, max_channels + 1),
                               activations=["identity", "relu", "elu"], kernelsizes=range(3, 6)))
    bs = VertexSpace(BatchNormSpace(["identity", "relu"]))
    # conv->bn and bn->conv: always at least one layer that sets its size, for fork and res
    csbs = ArchSpaceChain(cs, bs)
    bscs = ArchSpaceChain(bs, cs)
    cblock = ArchSpace(ParSpace1D(cs, csbs, bscs))
    rep = RepeatArchSpace(cblock, range(1, 6))
    fork = ForkArchSpace(rep, range(2, 5))
    res = ResidualArchSpace(rep)
    resfork = ResidualArchSpace(fork)
    repforkres = ArchSpace(ParSpace1D(rep, fork, res, resfork))
    blocks = RepeatArchSpace(repforkres, range(1, 4))
    ms = VertexSpace(PoolSpace(2, windowsizes=2, strides=2, poolfuns="max"))
    featureextract = RepeatArchSpace(ArchSpaceChain(blocks, ms), range(2, 5))
    dense = VertexSpace(DenseSpace(range(16, 513), ["relu", "selu"]))
    output = ArchSpaceChain(RepeatArchSpace(dense, range(0, 3)),
                            VertexSpace(DenseSpace(classes, "identity"), shielded=True))
    return ArchSpaceChain(featureextract, GlobalPoolSpace(), output)
