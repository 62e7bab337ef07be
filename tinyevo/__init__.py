"""tinyevo: evolve neural networks with a genetic algorithm while training them."""

from tinyevo import backend, layers, losses, optimizers
from tinyevo.app.datasets import load_dataset, load_digits  # numpy only at import
from tinyevo.backend import seed
from tinyevo.evolution import (  # also binds tinyevo.evolution; graph/opt/lossfun stay there
    AbstractCandidate,
    AbstractEvolution,
    AbstractFitness,
    AccuracyFitness,
    AfterEvolution,
    AggFitness,
    BatchIterator,
    CandidateModel,
    CandidateOptModel,
    CombinedEvolution,
    EliteSelection,
    EvolutionChain,
    EvolveCandidates,
    FittedCandidate,
    GpuFitness,
    GpuIterator,
    LossFitness,
    MapFitness,
    MapIterator,
    NoOpEvolution,
    PairCandidates,
    Population,
    RepeatPartitionIterator,
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
    TrainThenFitness,
    ZipIterator,
    evolve,
    evolve_model,
    fitness,
    itergeneration,
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

__version__ = "0.1.0"

__all__ = ["backend", "layers", "losses", "optimizers", "seed", "__version__"]
__all__ += ["load_dataset", "load_digits"]
__all__ += [
    "evolution", "AbstractCandidate", "CandidateModel", "CandidateOptModel", "FittedCandidate",
    "new_candidate", "fitness", "AbstractFitness", "AccuracyFitness", "LossFitness",
    "TrainThenFitness", "TrainAccuracyFitness", "TimeFitness", "SizeFitness", "MapFitness",
    "AggFitness", "GpuFitness", "Population", "evolve", "AbstractEvolution", "NoOpEvolution",
    "EliteSelection", "SusSelection", "TournamentSelection", "EvolveCandidates",
    "CombinedEvolution", "EvolutionChain", "AfterEvolution", "PairCandidates",
    "ShuffleCandidates", "evolve_model", "BatchIterator", "ShuffleIterator", "MapIterator",
    "ZipIterator", "GpuIterator", "RepeatPartitionIterator", "StatefulGenerationIter",
    "TimedIterator", "TimedIteratorStop", "itergeneration", "onehot",
]
__all__ += [
    "graph", "CompGraph", "Vertex", "input_vertex", "vertex", "concat", "add", "mul", "copy",
    "change_nout", "select_neurons", "insert_after", "remove_vertex", "add_edge", "remove_edge",
    "change_kernel_size", "set_activation", "neuron_value", "track_values",
]
