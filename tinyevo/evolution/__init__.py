"""The genetic algorithm: candidates, fitness functions, evolution strategies, population and
data iterators (mutation and crossover operators join later).

    >>> import tinyevo as te
    >>> population = te.Population([te.CandidateModel(model) for model in models])  # doctest: +SKIP
    >>> population = te.evolve(strategy, fitness, population)  # doctest: +SKIP

Note: the candidate accessors ``graph``/``opt``/``lossfun``/``prior_fitness`` live here;
``tinyevo.graph`` at the top level is the graph package, so the accessors are not exported there.
"""

from tinyevo.evolution.candidate import (
    AbstractCandidate,
    CandidateDataIterMap,
    CandidateModel,
    CandidateOptModel,
    FittedCandidate,
    copy_model,
    graph,
    inherit_optimizer_state,
    is_model,
    itermap,
    lossfun,
    new_candidate,
    nparams,
    opt,
    prior_fitness,
)
from tinyevo.evolution.crossover import (
    CrossoverSwap,
    IteratorMapCrossover,
    LearningRateCrossover,
    OptimizerCrossover,
    VertexCrossover,
    crossover_swap,
    evolve_crossover,
    itermap_swap,
    learning_rate_swap,
    optimizer_swap,
)
from tinyevo.evolution.fitness import (
    AbstractFitness,
    AccuracyFitness,
    AggFitness,
    EwmaFitness,
    GpuFitness,
    LogFitness,
    LossFitness,
    MapFitness,
    SizeFitness,
    TimeFitness,
    TrainAccuracyFitness,
    TrainThenFitness,
    cosine_schedule,
    fitness_of,
)
from tinyevo.evolution.halloffame import HallOfFame
from tinyevo.evolution.iterators import (
    AbstractIteratorMap,
    BatchIterator,
    BatchSizeIteratorMap,
    GpuIterator,
    MapIterator,
    ReBatchingIterator,
    RepeatPartitionIterator,
    SeedIterator,
    ShuffleIterator,
    StatefulGenerationIter,
    TimedIterator,
    TimedIteratorStop,
    ZipIterator,
    itergeneration,
    onehot,
)
from tinyevo.evolution.mutation import (
    AbstractMutation,
    ActivationFunctionMutation,
    AddEdgeMutation,
    AddVertexMutation,
    HighUtilityMutationProbability,
    KernelSizeMutation,
    LearningRateMutation,
    LogMutation,
    LowUtilityMutationProbability,
    MapCandidate,
    MutationChain,
    MutationFilter,
    MutationProbability,
    NeuronSelectMutation,
    NoutMutation,
    OptimizerMutation,
    PostMutation,
    RemoveEdgeMutation,
    RemoveVertexMutation,
    TrainBatchSizeMutation,
    VertexMutation,
    WeightedMutationProbability,
    mutate_batch_size,
    neuronselect,
)
from tinyevo.evolution.objectives import (
    FitnessObjective,
    LatencyObjective,
    MetricObjective,
    Objective,
    Objectives,
    ObjectivesFitness,
    ParamsObjective,
)
from tinyevo.evolution.pareto import (
    ParetoEliteSelection,
    ParetoFront,
    ParetoTournamentSelection,
    crowding_distance,
    dominates,
    nondominated_sort,
    objective_point,
    pareto_ranks,
)
from tinyevo.evolution.population import Evaluator, MapEvaluator, Population, evaluate_candidate
from tinyevo.evolution.strategies import (
    AbstractEvolution,
    AfterEvolution,
    CombinedEvolution,
    CrossoverThenMutate,
    EliteSelection,
    EvolutionChain,
    EvolveCandidates,
    NoOpEvolution,
    PairCandidates,
    ShuffleCandidates,
    SusSelection,
    TournamentSelection,
    evolve,
    evolve_model,
)
from tinyevo.graph.segment import regraph, separable_starts  # for the vertex form of crossover

__all__ = [
    # candidates
    "AbstractCandidate", "CandidateModel", "CandidateOptModel", "FittedCandidate",
    "new_candidate", "graph", "opt", "lossfun", "prior_fitness", "copy_model", "nparams",
    "is_model", "inherit_optimizer_state",
    # fitness
    "fitness_of", "AbstractFitness", "AccuracyFitness", "LossFitness", "TrainThenFitness",
    "TrainAccuracyFitness", "TimeFitness", "SizeFitness", "MapFitness", "AggFitness",
    "EwmaFitness", "GpuFitness", "cosine_schedule",
    # population and strategies
    "Population", "evaluate_candidate", "evolve", "AbstractEvolution", "NoOpEvolution",
    "EliteSelection", "SusSelection", "TournamentSelection", "EvolveCandidates",
    "CombinedEvolution", "EvolutionChain", "AfterEvolution", "PairCandidates",
    "ShuffleCandidates", "CrossoverThenMutate", "evolve_model",
    # iterators
    "BatchIterator", "ShuffleIterator", "MapIterator", "ZipIterator", "GpuIterator",
    "RepeatPartitionIterator", "StatefulGenerationIter", "TimedIterator", "TimedIteratorStop",
    "itergeneration", "onehot",
    # mutation
    "AbstractMutation", "ActivationFunctionMutation", "AddEdgeMutation", "AddVertexMutation",
    "HighUtilityMutationProbability", "KernelSizeMutation", "LearningRateMutation", "LogMutation",
    "LowUtilityMutationProbability", "MutationChain", "MutationFilter", "MutationProbability",
    "NeuronSelectMutation", "NoutMutation", "OptimizerMutation", "PostMutation",
    "RemoveEdgeMutation", "RemoveVertexMutation", "VertexMutation", "WeightedMutationProbability",
    "neuronselect",
    # crossover
    "CrossoverSwap", "VertexCrossover", "OptimizerCrossover", "LearningRateCrossover",
    "evolve_crossover", "crossover_swap", "separable_starts", "regraph", "optimizer_swap",
    "learning_rate_swap",
]
__all__ += ["HallOfFame"]
__all__ += ["Evaluator", "MapEvaluator"]
__all__ += ["CandidateDataIterMap", "itermap", "MapCandidate", "LogFitness", "ReBatchingIterator",
            "SeedIterator", "AbstractIteratorMap", "BatchSizeIteratorMap",
            "TrainBatchSizeMutation", "mutate_batch_size", "IteratorMapCrossover", "itermap_swap"]
__all__ += ["Objectives", "Objective", "FitnessObjective", "ParamsObjective", "LatencyObjective",
            "MetricObjective", "ObjectivesFitness", "ParetoFront", "ParetoEliteSelection",
            "ParetoTournamentSelection", "nondominated_sort", "crowding_distance",
            "pareto_ranks", "dominates", "objective_point"]
