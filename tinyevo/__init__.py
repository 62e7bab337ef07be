"""tinyevo: evolve neural networks with a genetic algorithm while training them."""

from tinyevo import backend, layers, losses, metrics, optimizers
from tinyevo._version import __version__
from tinyevo.app.datasets import load_dataset, load_digits  # numpy only at import
from tinyevo.app.fitting import fit
from tinyevo.app.model_io import load_model, save_model
from tinyevo.app.onnx_export import export_onnx  # imports onnx only when called
from tinyevo.backend import seed
from tinyevo.evolution import (  # also binds tinyevo.evolution; graph/opt/lossfun stay there
    AbstractCandidate,
    AbstractEvolution,
    AbstractFitness,
    AbstractMutation,
    AccuracyFitness,
    ActivationFunctionMutation,
    AddEdgeMutation,
    AddVertexMutation,
    AfterEvolution,
    AggFitness,
    BatchIterator,
    BatchSizeIteratorMap,
    CandidateDataIterMap,
    CandidateModel,
    CandidateOptModel,
    CombinedEvolution,
    CrossoverSwap,
    CrossoverThenMutate,
    EliteSelection,
    EvolutionChain,
    EvolveCandidates,
    EwmaFitness,
    FitnessObjective,
    FittedCandidate,
    GpuFitness,
    GpuIterator,
    HallOfFame,
    HighUtilityMutationProbability,
    IteratorMapCrossover,
    KernelSizeMutation,
    LatencyObjective,
    LearningRateCrossover,
    LearningRateMutation,
    LogFitness,
    LogMutation,
    LossFitness,
    LowUtilityMutationProbability,
    MapCandidate,
    MapFitness,
    MapIterator,
    MutationChain,
    MutationFilter,
    MutationProbability,
    NeuronSelectMutation,
    NoOpEvolution,
    NoutMutation,
    Objective,
    Objectives,
    ObjectivesFitness,
    OptimizerCrossover,
    OptimizerMutation,
    PairCandidates,
    ParamsObjective,
    ParetoEliteSelection,
    ParetoFront,
    ParetoTournamentSelection,
    Population,
    PostMutation,
    ReBatchingIterator,
    RemoveEdgeMutation,
    RemoveVertexMutation,
    RepeatPartitionIterator,
    SeedIterator,
    ShuffleCandidates,
    ShuffleIterator,
    SizeFitness,
    StatefulGenerationIter,
    SusSelection,
    TimedIterator,
    TimedIteratorStop,
    TimeFitness,
    TournamentSelection,
    TrainAccuracyFitness,
    TrainBatchSizeMutation,
    TrainThenFitness,
    VertexCrossover,
    VertexMutation,
    WeightedMutationProbability,
    ZipIterator,
    evolve,
    evolve_crossover,
    evolve_model,
    fitness_of,
    itergeneration,
    neuronselect,
    new_candidate,
    onehot,
)
from tinyevo.graph import (  # the mutable graph; tinyevo.graph is the package
    CompGraph,
    Vertex,
    add,
    add_edge,
    change_kernel_size,
    change_nout,
    concat,
    copy,
    input_vertex,
    insert_after,
    mul,
    neuron_value,
    remove_edge,
    remove_vertex,
    select_neurons,
    set_activation,
    track_values,
    vertex,
)
from tinyevo.search import (  # search spaces; tinyevo.search is the package
    AbstractArchSpace,
    AbstractLayerSpace,
    AbstractParSpace,
    ArchSpace,
    ArchSpaceChain,
    BatchNormSpace,
    ConditionalArchSpace,
    ConvSpace,
    CoupledParSpace,
    DefaultWeightInit,
    DenseSpace,
    ForkArchSpace,
    FunctionSpace,
    GlobalPoolSpace,
    IdentityWeightInit,
    MutationShield,
    NoOpArchSpace,
    ParSpace,
    ParSpace1D,
    ParSpace2D,
    PartialIdentityWeightInit,
    PoolSpace,
    RepeatArchSpace,
    ResidualArchSpace,
    SpaceError,
    VertexSpace,
    WeightInit,
    ZeroWeightInit,
    is_shielded,
    mutation_shield,
)

__all__ = ["backend", "layers", "losses", "metrics", "optimizers", "seed", "__version__"]
__all__ += ["load_dataset", "load_digits"]
__all__ += ["save_model", "load_model", "export_onnx"]
__all__ += [
    "evolution", "AbstractCandidate", "CandidateModel", "CandidateOptModel", "FittedCandidate",
    "new_candidate", "fitness_of", "AbstractFitness", "AccuracyFitness", "LossFitness",
    "TrainThenFitness", "TrainAccuracyFitness", "TimeFitness", "SizeFitness", "MapFitness",
    "AggFitness", "EwmaFitness", "GpuFitness", "Population", "evolve", "AbstractEvolution",
    "NoOpEvolution", "EliteSelection", "SusSelection", "TournamentSelection", "EvolveCandidates",
    "CombinedEvolution", "EvolutionChain", "AfterEvolution", "PairCandidates",
    "ShuffleCandidates", "CrossoverThenMutate", "evolve_model",
    "BatchIterator", "ShuffleIterator", "MapIterator",
    "ZipIterator", "GpuIterator", "RepeatPartitionIterator", "StatefulGenerationIter",
    "TimedIterator", "TimedIteratorStop", "itergeneration", "onehot",
]
__all__ += [
    "graph", "CompGraph", "Vertex", "input_vertex", "vertex", "concat", "add", "mul", "copy",
    "change_nout", "select_neurons", "insert_after", "remove_vertex", "add_edge", "remove_edge",
    "change_kernel_size", "set_activation", "neuron_value", "track_values",
]
__all__ += [
    "AbstractMutation", "ActivationFunctionMutation", "AddEdgeMutation", "AddVertexMutation",
    "HighUtilityMutationProbability", "KernelSizeMutation", "LearningRateMutation", "LogMutation",
    "LowUtilityMutationProbability", "MutationChain", "MutationFilter", "MutationProbability",
    "NeuronSelectMutation", "NoutMutation", "OptimizerMutation", "PostMutation",
    "RemoveEdgeMutation", "RemoveVertexMutation", "VertexMutation", "WeightedMutationProbability",
    "neuronselect",
]
__all__ += [
    "search", "AbstractArchSpace", "AbstractLayerSpace", "AbstractParSpace", "ArchSpace",
    "ArchSpaceChain", "BatchNormSpace", "ConditionalArchSpace", "ConvSpace", "CoupledParSpace",
    "DefaultWeightInit", "DenseSpace", "ForkArchSpace", "FunctionSpace", "GlobalPoolSpace",
    "IdentityWeightInit", "MutationShield", "NoOpArchSpace", "ParSpace", "ParSpace1D",
    "ParSpace2D", "PartialIdentityWeightInit", "PoolSpace", "RepeatArchSpace", "ResidualArchSpace",
    "SpaceError", "VertexSpace", "WeightInit", "ZeroWeightInit", "is_shielded", "mutation_shield",
]
__all__ += ["CrossoverSwap", "VertexCrossover", "OptimizerCrossover", "LearningRateCrossover",
            "evolve_crossover"]
__all__ += ["fit"]
__all__ += ["HallOfFame"]
__all__ += ["CandidateDataIterMap", "MapCandidate", "LogFitness", "ReBatchingIterator",
            "SeedIterator", "BatchSizeIteratorMap", "TrainBatchSizeMutation",
            "IteratorMapCrossover"]
__all__ += ["Objectives", "Objective", "ObjectivesFitness", "FitnessObjective",
            "ParamsObjective", "LatencyObjective", "ParetoFront", "ParetoEliteSelection",
            "ParetoTournamentSelection"]


def __getattr__(name: str) -> object:
    """``EvoClassifier`` and ``EvoRegressor`` (tinyevo.app.estimators), imported on first use:
    ``import tinyevo`` needs no scikit-learn."""
    if name in ("EvoClassifier", "EvoRegressor"):
        from tinyevo.app import estimators
        return getattr(estimators, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
