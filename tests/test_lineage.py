"""Lineage recording (tinyevo.evolution.lineage): what each operator reports about the child it
makes, what is not recorded, pruning and the JSON form (the lineage file of a checkpoint,
tinyevo.app._lineage_file). The runs of ``fit`` and the checkpoints are in
test_lineage_fit.py."""

from __future__ import annotations

import copy

import numpy as np
import pytest

import tinyevo as te
from tinyevo import backend as B
from tinyevo.app._lineage_file import lineage_from_json
from tinyevo.evolution import (
    CandidateDataIterMap,
    CandidateOptModel,
    CrossoverSwap,
    EvolutionChain,
    EvolveCandidates,
    FittedCandidate,
    LearningRateCrossover,
    OptimizerCrossover,
    PairCandidates,
    VertexCrossover,
    evolve_crossover,
    evolve_model,
)
from tinyevo.evolution.halloffame import snapshot
from tinyevo.evolution.iterators import BatchSizeIteratorMap
from tinyevo.evolution.lineage import Lineage, Step, candidate_id, note, set_candidate_id
from tinyevo.evolution.mutation import (
    AddVertexMutation,
    KernelSizeMutation,
    MapCandidate,
    MutationChain,
    NoutMutation,
    TrainBatchSizeMutation,
    VertexMutation,
)
from tinyevo.graph import CompGraph, input_vertex, set_activation, vertex
from tinyevo.layers import Dense
from tinyevo.optimizers import Adam
from tinyevo.search import ArchSpaceChain, DenseSpace, VertexSpace


def mlp(tag: str) -> CompGraph:
    """input -> h1 -> h2 -> h3 -> out (shielded), vertex names ending in ``tag``."""
    inp = input_vertex(f"in{tag}", 4)
    v = inp
    for i, n in enumerate((8, 8, 8), 1):
        v = vertex(Dense(v.nout, n, "relu"), v, name=f"h{i}{tag}")
    return CompGraph(inp, vertex(Dense(8, 3), v, name=f"out{tag}", shielded=True))


def candidate(tag: str = "", lr: float = 1e-3) -> CandidateOptModel:
    return CandidateOptModel(Adam(lr), mlp(tag))


def children(lineage: Lineage, strategy, parents: list, generation: int = 2) -> list[Step]:
    """The steps of what ``strategy`` makes of ``parents``, recorded and registered."""
    with lineage.recording():
        made = strategy(parents)
    lineage.register(made, generation)
    return [lineage.records[candidate_id(c)] for c in made]


def started(*cs) -> Lineage:
    lineage = Lineage()
    lineage.register(list(cs), 1)
    return lineage


def test_a_mutated_child_records_its_parent_and_each_size_it_changed():
    parent = candidate("a")
    lineage = started(parent)
    (step,) = children(lineage, EvolveCandidates(evolve_model(
        VertexMutation(NoutMutation(0.5, 0.5)))), [parent])
    assert step.parents == (candidate_id(parent),) and step.generation == 2
    assert step.ops == ("NoutMutation h1a 8->12", "NoutMutation h2a 8->12",
                        "NoutMutation h3a 8->12")
    assert step.kind == "mutation"
    assert lineage.records[candidate_id(parent)].kind == "initial"


def test_a_mutation_that_changed_nothing_is_not_recorded():
    parent = candidate("b")
    lineage = started(parent)

    def grow_then_undo(graph):      # as fit's cost ceiling undoes a mutation
        before = graph.copy()
        VertexMutation(NoutMutation(0.5, 0.5))(graph)
        return before

    nothing = EvolveCandidates(evolve_model(VertexMutation(KernelSizeMutation())))  # no convs
    undone = EvolveCandidates(evolve_model(grow_then_undo))
    for strategy in (nothing, undone):
        (step,) = children(lineage, strategy, [parent])
        assert step.ops == () and step.kind == "copy"


def test_a_mutation_of_your_own_is_recorded_as_what_it_changed_or_as_it_says():
    parent = candidate("c")
    lineage = started(parent)

    def elu(graph):
        set_activation(graph["h2c"], "elu")

    def explained(graph):
        set_activation(graph["h1c"], "selu")
        note("my mutation: h1c to selu")

    (silent, said) = [children(lineage, EvolveCandidates(evolve_model(m)), [parent])[0]
                      for m in (elu, explained)]
    assert silent.ops == ("elu: h2c Dense(8 => 8, relu)->Dense(8 => 8, elu)",)
    assert said.ops == ("my mutation: h1c to selu",)


def test_a_crossover_child_has_both_parents_and_says_what_it_took_then_what_mutated_it():
    a, b = candidate("d"), candidate("e")
    lineage = started(a, b)
    cross = EvolveCandidates(evolve_crossover(VertexCrossover(CrossoverSwap())))
    mutate = EvolveCandidates(evolve_model(VertexMutation(NoutMutation(0.5, 0.5))))
    one, two = children(lineage, EvolutionChain(PairCandidates(cross), mutate), [a, b])
    ia, ib = candidate_id(a), candidate_id(b)
    assert one.parents == (ia, ib) and two.parents == (ib, ia)
    assert one.kind == two.kind == "crossover"
    assert one.ops[0].startswith(f"CrossoverSwap with #{ib}: segment ")
    assert two.ops[0].startswith(f"CrossoverSwap with #{ia}: segment ")
    assert any(op.startswith("NoutMutation") for op in one.ops)   # one step, not two
    assert len(lineage) == 4


def test_a_second_crossover_that_changed_nothing_adds_no_parent():
    a, b, c, d = (candidate(t) for t in "lmno")
    lineage = started(a, b, c, d)
    cross = EvolveCandidates(evolve_crossover(VertexCrossover(CrossoverSwap())))
    idle = EvolveCandidates(evolve_crossover())                # crosses, changes nothing

    def rotate(cs):                 # pairs the children anew: (b', c'), (d', a')
        return cs[1:] + cs[:1]

    made = children(lineage, EvolutionChain(PairCandidates(cross), rotate,
                                            PairCandidates(idle)), [a, b, c, d])
    ia, ib, ic, id_ = map(candidate_id, (a, b, c, d))
    assert [s.parents for s in made] == [(ib, ia), (ic, id_), (id_, ic), (ia, ib)]
    assert all(len(s.ops) == 3 and s.kind == "crossover" for s in made)


def test_an_added_chain_records_every_vertex_it_added():
    parent = candidate("p")
    lineage = started(parent)
    chain = ArchSpaceChain(VertexSpace(DenseSpace(8, "relu")), VertexSpace(DenseSpace(8, "elu")))
    add = AddVertexMutation(chain)

    def after_h1(graph):
        add.mutate_vertex(graph["h1p"])

    with lineage.recording():
        (child,) = EvolveCandidates(evolve_model(after_h1))([parent])
    lineage.register([child], 2)
    before = {v.name for v in parent.graph().vertices}
    added = [v for v in child.graph().vertices if v.name not in before]
    assert len(added) == 2                 # the relu and the elu layer
    assert lineage.records[candidate_id(child)].ops == (
        "AddVertexMutation after h1p: " + ", ".join(f"{v.name} {v.layer!r}" for v in added),)


def test_optimizer_crossovers_that_undo_each_other_record_nothing():
    a, b = candidate("f", 1e-3), candidate("g", 3e-3)
    lineage = started(a, b)
    both = EvolveCandidates(evolve_crossover(None, MutationChain(LearningRateCrossover(),
                                                                 OptimizerCrossover())))
    one, two = children(lineage, PairCandidates(both), [a, b])
    assert one.ops == two.ops == () and one.parents == (candidate_id(a),)
    swap = EvolveCandidates(evolve_crossover(None, LearningRateCrossover()))
    one, _ = children(lineage, PairCandidates(swap), [a, b])
    assert one.ops == (f"LearningRateCrossover with #{candidate_id(b)}: lr 0.001->0.003",)


def test_batch_size_changes_are_recorded():
    parent = CandidateDataIterMap(BatchSizeIteratorMap(16), candidate("h"))
    lineage = started(parent)
    (step,) = children(lineage, EvolveCandidates(MapCandidate(TrainBatchSizeMutation(1.0, 1.0))),
                       [parent])
    assert step.ops == ("TrainBatchSizeMutation 16->32",)


def test_elites_and_snapshots_keep_their_id_and_a_fresh_candidate_gets_one():
    parent = FittedCandidate(candidate("i"), 0.5, 1)
    lineage = started(parent)
    kept = snapshot(parent)
    fresh = candidate("j")
    with lineage.recording():
        made = [parent, kept, fresh]
    lineage.register(made, 2)
    assert candidate_id(kept) == candidate_id(parent) == 1
    assert lineage.records[candidate_id(fresh)] == Step(2, (), 2, ())


def test_recording_draws_no_random_numbers_and_changes_no_model():
    from tinyevo.app import defaults

    def run(record: bool):
        te.seed(7)
        parents = [FittedCandidate(candidate(str(i)), 0.5 + i / 10, 1) for i in range(4)]
        strategy = defaults.default_strategy(
            4, defaults.default_mutation("dense", 3), defaults.default_crossover(), 1)
        lineage = started(*parents)
        if record:
            with lineage.recording():
                made = strategy(parents)
        else:
            made = strategy(parents)
        return made, B.rng().bit_generator.state

    (quiet, state), (recorded, state2) = run(False), run(True)
    assert state == state2
    for a, b in zip(quiet, recorded):
        assert a.graph().to_spec() == b.graph().to_spec()
        assert a.opt().learning_rate == b.opt().learning_rate
        arrays = b.graph().arrays()
        assert all(np.array_equal(x, arrays[k]) for k, x in a.graph().arrays().items())


def test_nothing_is_recorded_outside_a_recording():
    child = evolve_model(VertexMutation(NoutMutation(0.5, 0.5)))(candidate("k"))
    assert candidate_id(child) is None and getattr(child, "_lineage", None) is None


# ------------------------------------------------------------------ the record itself
def tree() -> Lineage:
    """Generation 1: #1 #2 #3; 2: #4 (of 1), #5 (of 2 x 3); 3: #6 (of 4), #7 (of 5 x 4)."""
    steps = [Step(1, (), 1, ()), Step(2, (), 1, ()), Step(3, (), 1, ()),
             Step(4, (1,), 2, ("NoutMutation h1 8->9",), 0.5, 100),
             Step(5, (2, 3), 2, ("CrossoverSwap with #3: segment h1..h2",), 0.6, 120),
             Step(6, (4,), 3, ("RemoveVertexMutation h2 Dense(8 => 8, relu)",), 0.7, 90),
             Step(7, (5, 4), 3, ("CrossoverSwap with #4: segment h3..h3",), 0.4, 80)]
    return Lineage(steps, population=[6, 7], hall_of_fame=[6, 5])


def holders(*ids):
    out = []
    for i in ids:
        c = candidate()
        set_candidate_id(c, i)
        out.append(c)
    return out


def test_line_follows_first_parents_back_to_generation_one_and_ancestry_takes_all():
    lineage = tree()
    assert [s.id for s in lineage.line(7)] == [2, 5, 7]
    assert lineage.ancestry([7]) == {7, 5, 4, 2, 3, 1}
    assert lineage.winner() == 6
    with pytest.raises(KeyError, match="#99"):
        lineage.line(99)


def test_pruning_keeps_the_ancestry_of_the_population_the_hall_of_fame_and_the_front():
    lineage = tree()
    lineage.update(holders(6), hall_of_fame=holders(5), front=())
    assert set(lineage.records) == {6, 4, 1, 5, 2, 3}
    assert lineage.population == [6] and lineage.hall_of_fame == [5]
    for i in lineage.records:
        assert all(p in lineage.records for p in lineage.records[i].parents)
        assert lineage.line(i)[0].generation == 1


def test_update_keeps_the_best_fitness_a_candidate_reached_and_its_parameters():
    lineage = tree()
    (c,) = holders(6)
    for fitness in (0.9, 0.8):       # an elite trained on, and measured lower
        lineage.update([FittedCandidate(c, fitness, 4)])
    step = lineage.records[6]
    assert step.fitness == 0.9 and step.nparams == c.graph().nparams()


@pytest.mark.parametrize("step, kind", [
    (Step(1, (), 1, ()), "initial"), (Step(2, (1,), 2, ()), "copy"),
    (Step(2, (1,), 2, ("LearningRateMutation 0.001->0.0011",)), "mutation"),
    (Step(2, (1,), 2, ("OptimizerCrossover with #3: Adam->SGD",)), "crossover"),
    (Step(2, (1, 3), 2, ()), "crossover")])
def test_the_kind_of_a_step(step, kind):
    assert step.kind == kind


FILE = "runs/x/checkpoint/lineage.json"
FITS = dict(generation=3, counts=(2, 2, 0))     # tree(): population [6, 7], hall of fame [6, 5]


def test_json_round_trip_is_exact():
    lineage = tree()
    again = lineage_from_json(copy.deepcopy(lineage.to_json()), FILE, **FITS)
    assert again.to_json() == lineage.to_json() and again.records == lineage.records


def _damaged(edit):
    d = tree().to_json()
    edit(d)
    return d


@pytest.mark.parametrize("edit, match", [
    (lambda d: d["records"][3].update(parents=[42]), r"records\[3\]\.parents: .* #42 is not"),
    (lambda d: d["records"][3].update(generation=1), "#1 is made in generation 1"),
    (lambda d: d["records"][4].update(id=4), "#4 comes twice"),
    (lambda d: d["records"][0].update(ops="NoutMutation"), r"records\[0\]\.ops: expected a list"),
    (lambda d: d["records"][0].update(ops=[1]), r"records\[0\]\.ops\[0\]: expected a string"),
    (lambda d: d["records"][0].update(fitness=float("nan")), "fitness: expected null or a fin"),
    (lambda d: d["records"][0].update(fitness=10**400), "fitness: expected null or a fin"),
    (lambda d: d["records"][0].pop("nparams"), r"records\[0\]\.nparams: expected a value"),
    (lambda d: d.update(population=[6, 99]), r"population\[1\]: expected the id of a record"),
    (lambda d: d.update(next_id=3), "next_id: expected an integer >= 8"),
    (lambda d: d.update(format="other"), "format: expected one of"),
    # what does not fit the checkpoint: an id per entry, nothing made after its generation
    (lambda d: d.update(hall_of_fame=[6]), "hall_of_fame: expected 2 ids, one per hall-of-fame"),
    (lambda d: d.update(front=[6]), "front: expected 0 ids, one per Pareto front entry"),
    (lambda d: d["records"][6].update(generation=4), r"records\[6\]\.generation: expected a "
                                                     r"generation up to the checkpoint's \(3\)"),
])
def test_a_damaged_lineage_is_refused_naming_the_file_and_the_field(edit, match):
    with pytest.raises(ValueError, match=match) as err:
        lineage_from_json(_damaged(edit), FILE, **FITS)
    assert str(err.value).startswith(f"{FILE} is damaged or does not fit its checkpoint: field ")


def test_a_newer_lineage_asks_for_an_upgrade():
    with pytest.raises(ValueError, match="upgrade tinyevo"):
        lineage_from_json(_damaged(lambda d: d.update(version=99)), FILE, **FITS)
