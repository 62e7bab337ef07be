"""Search spaces shared by the search tests and the benchmark: the seed README's examples."""

from __future__ import annotations

import tinyevo as te


def complex_space(classes: int = 10, max_channels: int = 256) -> te.AbstractArchSpace:
    """The seed README's "complex search space" (conv/bn blocks, forks, residuals, reductions)."""
    cs = te.VertexSpace(te.ConvSpace(2, outsizes=range(8, max_channels + 1),
                                     activations=["identity", "relu", "elu"],
                                     kernelsizes=range(3, 6)))
    bs = te.VertexSpace(te.BatchNormSpace(["identity", "relu"]))
    # conv->bn and bn->conv: always at least one layer that sets its size, for fork and res
    csbs = te.ArchSpaceChain(cs, bs)
    bscs = te.ArchSpaceChain(bs, cs)
    cblock = te.ArchSpace(te.ParSpace1D(cs, csbs, bscs))
    rep = te.RepeatArchSpace(cblock, range(1, 6))
    fork = te.ForkArchSpace(rep, range(2, 5))
    res = te.ResidualArchSpace(rep)
    resfork = te.ResidualArchSpace(fork)
    repforkres = te.ArchSpace(te.ParSpace1D(rep, fork, res, resfork))
    blocks = te.RepeatArchSpace(repforkres, range(1, 4))
    ms = te.VertexSpace(te.PoolSpace(2, windowsizes=2, strides=2, poolfuns="max"))
    reduction = te.ArchSpaceChain(blocks, ms)
    featureextract = te.RepeatArchSpace(reduction, range(2, 5))
    dense = te.VertexSpace(te.DenseSpace(range(16, 513), ["relu", "selu"]))
    drep = te.RepeatArchSpace(dense, range(0, 3))
    dout = te.VertexSpace(te.DenseSpace(classes, "identity"), shielded=True)
    output = te.ArchSpaceChain(drep, dout)
    return te.ArchSpaceChain(featureextract, te.GlobalPoolSpace(), output)


def basic_space(nlabels: int = 3) -> te.AbstractArchSpace:
    """The seed README's first example: 1-3 hidden dense layers and a shielded output."""
    layerspace = te.VertexSpace(te.DenseSpace(range(3, 11), ["identity", "relu", "elu", "selu"]))
    initial_hidden = te.RepeatArchSpace(layerspace, range(1, 4))
    outlayer = te.VertexSpace(te.DenseSpace(nlabels, "identity"), shielded=True)
    return te.ArchSpaceChain(initial_hidden, outlayer)
