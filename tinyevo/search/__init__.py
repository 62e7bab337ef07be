"""Search spaces: parameter, layer and architecture spaces, and the weight inits they use.

    >>> import tinyevo as te
    >>> space = te.ArchSpaceChain(te.RepeatArchSpace(te.DenseSpace(range(3, 11), "relu"), 2),
    ...                           te.VertexSpace(te.DenseSpace(3), shielded=True))
    >>> inp = te.input_vertex("in", 5); len(te.CompGraph(inp, space(inp)).vertices)
    4

See docs/search.md for a tour.
"""

from tinyevo.search.parspace import (
    AbstractParSpace,
    CoupledParSpace,
    ParSpace,
    ParSpace1D,
    ParSpace2D,
    as_parspace,
)
from tinyevo.search.shield import (
    MutationShield,
    is_shielded,
    mutation_shield,
    rescale_vertex,
    set_shield,
)
from tinyevo.search.spaces import (
    AbstractArchSpace,
    AbstractLayerSpace,
    ArchSpace,
    ArchSpaceChain,
    BatchNormSpace,
    ConditionalArchSpace,
    ConvSpace,
    DenseSpace,
    ForkArchSpace,
    FunctionSpace,
    GlobalPoolSpace,
    NoOpArchSpace,
    PoolSpace,
    RepeatArchSpace,
    ResidualArchSpace,
    SpaceError,
    VertexSpace,
)
from tinyevo.search.weightinit import (
    DefaultWeightInit,
    IdentityWeightInit,
    PartialIdentityWeightInit,
    WeightInit,
    ZeroWeightInit,
)

__all__ = [
    "AbstractParSpace", "ParSpace", "ParSpace1D", "ParSpace2D", "CoupledParSpace", "as_parspace",
    "AbstractLayerSpace", "DenseSpace", "ConvSpace", "BatchNormSpace", "PoolSpace",
    "AbstractArchSpace", "VertexSpace", "ArchSpace", "ArchSpaceChain", "RepeatArchSpace",
    "ForkArchSpace", "ResidualArchSpace", "ConditionalArchSpace", "FunctionSpace",
    "GlobalPoolSpace", "NoOpArchSpace", "SpaceError",
    "WeightInit", "DefaultWeightInit", "IdentityWeightInit", "PartialIdentityWeightInit",
    "ZeroWeightInit", "MutationShield", "is_shielded", "mutation_shield", "set_shield",
    "rescale_vertex",
]
