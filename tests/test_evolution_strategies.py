"""Evolution strategies and Population: the seed README's "Evolution Strategies" section."""

from dataclasses import dataclass

import numpy as np
import pytest

from tinyevo.evolution import (
    AbstractCandidate,
    AbstractFitness,
    AfterEvolution,
    CandidateModel,
    CombinedEvolution,
    CrossoverThenMutate,
    EliteSelection,
    EvolutionChain,
    EvolveCandidates,
    EwmaFitness,
    FittedCandidate,
    MapEvaluator,
    PairCandidates,
    Population,
    ShuffleCandidates,
    SizeFitness,
    SusSelection,
    TournamentSelection,
    evaluate_candidate,
    evolve,
    evolve_model,
    prior_fitness,
)
from tinyevo.layers import Dense, Sequential


class FakeRng:
    """The seed's FakeRng: rand() is always 0.7."""

    def random(self):
        return 0.7


@dataclass
class Cand(AbstractCandidate):
    fitness: float


def cands(values):
    return [Cand(v) for v in values]


def test_seed_strategy_examples():
    elitesel = EliteSelection(2)
    assert evolve(elitesel, cands(range(1, 11))) == cands([10, 9])

    evocands = EvolveCandidates(lambda c: Cand(c.fitness + 0.1))
    assert evolve(evocands, cands(range(1, 11))) == cands([v + 0.1 for v in range(1, 11)])

    sussel = SusSelection(5, evocands, FakeRng())
    assert evolve(sussel, cands(range(1, 11))) == cands([4.1, 6.1, 8.1, 9.1, 10.1])

    comb = CombinedEvolution(elitesel, sussel)
    assert evolve(comb, cands(range(1, 11))) == cands([10, 9, 4.1, 6.1, 8.1, 9.1, 10.1])


def test_sus_selection_is_proportional_to_fitness():
    rng = np.random.default_rng(0)
    pool = cands([1.0, 3.0, 0.0, 6.0])
    picks = [c.fitness for _ in range(500) for c in SusSelection(4, rng=rng)(pool)]
    counts = {v: picks.count(v) / len(picks) for v in (1.0, 3.0, 0.0, 6.0)}
    assert counts[0.0] == 0
    assert counts[6.0] == pytest.approx(0.6, abs=0.03)
    assert counts[3.0] == pytest.approx(0.3, abs=0.03)


def test_sus_selection_all_zero_fitness_is_uniform_and_bad_fitness_is_refused():
    rng = np.random.default_rng(1)
    picked = SusSelection(3, rng=rng)(cands([0.0, 0.0, 0.0]))
    assert len(picked) == 3
    with pytest.raises(ValueError, match=">= 0"):
        SusSelection(1)(cands([1.0, -1.0]))
    with pytest.raises(ValueError, match="number"):
        SusSelection(1)([Cand((0.1, 1.0))])
    with pytest.raises(ValueError, match="no fitness"):
        SusSelection(1)([CandidateModel(None)])


def test_sus_selection_uses_the_library_generator_by_default():
    import tinyevo

    tinyevo.seed(3)
    a = SusSelection(3)(cands([1, 2, 3, 4]))
    tinyevo.seed(3)
    b = SusSelection(3)(cands([1, 2, 3, 4]))
    assert a == b


def test_tournament_selection():
    rng = np.random.default_rng(0)
    pool = cands([1, 2, 3, 4, 5, 6])
    # p = 1 and k = all: the best always wins
    assert TournamentSelection(3, 6, 1.0, rng=rng)(pool) == cands([6, 6, 6])
    # k = 1: uniform choice
    wins = [c.fitness for _ in range(300) for c in TournamentSelection(2, 1, 0.5, rng=rng)(pool)]
    assert set(wins) == {1, 2, 3, 4, 5, 6}
    # tuples order too (e.g. TimeFitness-like values)
    tup = [Cand((1, 0.5)), Cand((2, 0.1))]
    assert TournamentSelection(1, 2, 1.0, EvolveCandidates(lambda c: c.fitness), rng)(tup) == \
        [(2, 0.1)]
    with pytest.raises(ValueError):
        TournamentSelection(1, 2, 0.0)


def test_chain_after_pair_and_shuffle():
    pool = cands([1, 2, 3, 4, 5])
    chain = EvolutionChain(EliteSelection(3), EvolveCandidates(lambda c: Cand(c.fitness * 10)))
    assert chain(pool) == cands([50, 40, 30])
    after = AfterEvolution(EliteSelection(2), lambda cs: list(reversed(cs)))
    assert after(pool) == cands([4, 5])
    swap = PairCandidates(EvolveCandidates(lambda pair: (pair[1], pair[0])))
    assert swap(cands([1, 2, 3, 4])) == cands([2, 1, 4, 3])
    assert swap(pool) == cands([2, 1, 4, 3, 1])  # odd one paired with the first
    shuffled = ShuffleCandidates(rng=np.random.default_rng(0))(pool)
    assert sorted(c.fitness for c in shuffled) == [1, 2, 3, 4, 5]


def test_population_generation_best_and_size_change():
    models = [Dense(2, n) for n in (1, 5, 3)]
    pop = Population([CandidateModel(m) for m in models])
    assert pop.generation == 1 and len(pop) == 3 and not pop.fitted
    with pytest.raises(ValueError, match="evaluate"):
        pop.best()
    fitted = pop.evaluate(SizeFitness())
    assert fitted.fitted and fitted.generation == 1
    assert fitted.fitnesses() == [3, 15, 9]
    assert fitted.best().graph() is models[1]
    assert [c.fitness for c in fitted.best_first()] == [15, 9, 3]
    grown = evolve(CombinedEvolution(EliteSelection(2), EliteSelection(2)), SizeFitness(), pop)
    assert grown.generation == 2 and len(grown) == 4
    assert grown.previous.generation == 1 and grown.previous.fitted
    assert grown.previous.previous is None  # no chain of old generations kept alive
    shrunk = evolve(EliteSelection(1), grown)  # already fitted members: no fitness needed
    assert shrunk.generation == 3 and len(shrunk) == 1


def test_population_evaluates_every_member_each_generation_unless_told_otherwise():
    calls = []

    def counting(c):
        calls.append(c)
        return 1.0

    pop = Population([CandidateModel(i) for i in range(3)]).evaluate(counting)
    pop2 = Population(pop.members + [CandidateModel(9)], generation=2)
    again = pop2.evaluate(counting)
    assert len(calls) == 3 + 4
    assert all(isinstance(c, FittedCandidate) and c.generation == 2 for c in again)
    kept = pop2.evaluate(counting, reevaluate=False)
    assert len(calls) == 3 + 4 + 1
    assert [c.generation for c in kept] == [1, 1, 1, 2]


class _Recording:
    """An evaluator of the contract that records what it was asked, and evaluates in reverse."""

    def __init__(self):
        self.calls = []

    def evaluate(self, fitness, generation, members):
        self.calls.append((generation, len(members)))
        return [evaluate_candidate(fitness, generation, c) for c in members[::-1]][::-1]


def test_population_evaluator_hook():
    recording = _Recording()
    pop = Population([CandidateModel(Dense(2, 2)), CandidateModel(Dense(2, 3))])
    new = evolve(EliteSelection(1), SizeFitness(), pop, evaluator=recording)
    assert recording.calls == [(1, 2)]
    assert new.previous.fitnesses() == [6, 9]
    used = []

    def mapper(fn, items):
        used.append(len(items))
        return [fn(c) for c in items]

    assert pop.evaluate(SizeFitness(), MapEvaluator(mapper)).fitnesses() == [6, 9]
    assert used == [2]


def test_an_evaluator_that_loses_members_is_caught():
    class Lossy:
        def evaluate(self, fitness, generation, members):
            return []

    with pytest.raises(ValueError, match="returned 0 results for 1 members"):
        Population([CandidateModel(Dense(2, 2))]).evaluate(SizeFitness(), Lossy())


def test_evolve_argument_errors():
    with pytest.raises(TypeError):
        evolve(EliteSelection(1))
    with pytest.raises(TypeError):
        evolve(3, cands([1]))
    with pytest.raises(ValueError):
        EliteSelection(0)


# ---------------------------------------------------------------- CrossoverThenMutate

def _counting_copies(monkeypatch):
    """Counts the models evolve_model copies."""
    import tinyevo.evolution.strategies as strategies

    count = [0]
    original = strategies.copy_model

    def counted(m):
        count[0] += 1
        return original(m)

    monkeypatch.setattr(strategies, "copy_model", counted)
    return count


def _swap(pair):
    """A crossover that makes new models: copies, swapped between the pair."""
    from tinyevo.evolution import copy_model

    a, b = pair
    return CandidateModel(copy_model(b.model)), CandidateModel(copy_model(a.model))


def _relu_to_elu(model):
    model[0].activation = "elu"


def _models(n):
    return [CandidateModel(Sequential(Dense(2, i + 1, "relu"))) for i in range(n)]


def test_crossover_then_mutate_copies_a_crossed_model_once(monkeypatch):
    parents = _models(4)
    count = _counting_copies(monkeypatch)
    children = CrossoverThenMutate(_swap, evolve_model(_relu_to_elu))(parents)
    assert count[0] == 0                          # the crossover's copies are mutated in place
    assert [c.model[0].nout for c in children] == [2, 1, 4, 3]
    assert all(c.model[0].activation == "elu" for c in children)
    assert all(p.model[0].activation == "relu" for p in parents)   # parents untouched
    models = [c.model for c in children] + [p.model for p in parents]
    assert len({id(m) for m in models}) == 8

    count[0] = 0                                  # no crossover: every child is a copy
    children = CrossoverThenMutate(lambda p: p, evolve_model(_relu_to_elu))(parents)
    assert count[0] == 4 and all(p.model[0].activation == "relu" for p in parents)
    assert [c.model[0].nout for c in children] == [1, 2, 3, 4]


@pytest.mark.parametrize("n", [1, 3])
def test_crossover_then_mutate_never_hands_back_a_parents_model(n):
    # One candidate (nobody to pair with) and an odd one out: the chain's pairing, and every
    # child with a model of its own (a lone candidate passed through unchanged would put one
    # model twice into the next generation).
    parents = _models(n)
    children = CrossoverThenMutate(lambda p: p, evolve_model(_relu_to_elu))(parents)
    assert len(children) == n
    assert not {id(c.model) for c in children} & {id(p.model) for p in parents}
    assert len({id(c.model) for c in children}) == n
    crossed = CrossoverThenMutate(_swap, evolve_model(_relu_to_elu))(parents)
    expected = [1] if n == 1 else [2, 1, 1]       # odd one out: the child of (c3, c1) kept
    assert [c.model[0].nout for c in crossed] == expected


def test_crossover_then_mutate_mutates_a_model_given_twice_only_once_in_place(monkeypatch):
    shared = Sequential(Dense(2, 3, "relu"))

    def same_model_twice(pair):
        return CandidateModel(shared), CandidateModel(shared)

    count = _counting_copies(monkeypatch)
    a, b = CrossoverThenMutate(same_model_twice, evolve_model(_relu_to_elu))(_models(2))
    assert a.model is shared and b.model is not shared and count[0] == 1


def test_crossover_then_mutate_refuses_bad_arguments():
    with pytest.raises(TypeError, match="evolve_model"):
        CrossoverThenMutate(lambda p: p, lambda m: m)
    with pytest.raises(TypeError, match="callable crossover"):
        CrossoverThenMutate(3, evolve_model(lambda m: m))
    with pytest.raises(TypeError, match="must return a pair"):
        CrossoverThenMutate(lambda p: p[0], evolve_model(lambda m: m))(_models(2))


def _trained_candidate(seed, nout=3):
    """A CandidateOptModel whose Adam holds state (two steps on a small graph)."""
    from tinyevo.evolution import CandidateOptModel
    from tinyevo.graph import CompGraph, input_vertex, vertex
    from tinyevo.optimizers import Adam

    rng = np.random.default_rng(seed)
    inp = input_vertex("in", 2, "dense")
    g = CompGraph(inp, vertex(Dense(nout, 2, rng=rng), vertex(Dense(2, nout, "relu", rng=rng),
                                                              inp, name="h"), name="out"))
    opt = Adam(0.01)
    for _ in range(2):
        y, back = g.forward(rng.standard_normal((4, 2)).astype(np.float32), train=True)
        back(np.ones_like(y))
        opt.update(g)
    return CandidateOptModel(opt, g)


def _with_state(c):
    """(layer index, parameter) pairs whose state the candidate's optimiser holds."""
    o = c.opt()
    return {(i, k) for i, layer in enumerate(c.graph().layers())
            for k, st in o._state.get(layer, {}).items() if st["param"] is layer.params[k]}


def test_evolve_model_children_inherit_optimizer_state_of_what_they_kept():
    import tinyevo as te

    parent = _trained_candidate(0)
    child = evolve_model(lambda m: None)(parent)
    assert child.opt() is not parent.opt()
    assert _with_state(child) == {(0, "weight"), (0, "bias"), (1, "weight"), (1, "bias")}
    grown = evolve_model(lambda m: te.change_nout(m, {m["h"]: 2}))(parent)
    assert grown.graph()["h"].nout == 5
    assert _with_state(grown) == {(1, "bias")}    # h grew: only out's bias stayed as it was
    assert _with_state(parent) == {(0, "weight"), (0, "bias"), (1, "weight"), (1, "bias")}


def test_evolve_crossover_children_inherit_state_from_the_parent_each_part_came_from():
    from tinyevo.evolution import copy_model
    from tinyevo.evolution.crossover import evolve_crossover

    a, b = _trained_candidate(0, 3), _trained_candidate(1, 4)
    swapped = evolve_crossover(lambda p: (copy_model(p[1]), copy_model(p[0])))((a, b))
    assert [c.graph()["h"].nout for c in swapped] == [4, 3]
    for child in swapped:
        assert _with_state(child) == {(0, "weight"), (0, "bias"), (1, "weight"), (1, "bias")}
    np.testing.assert_array_equal(
        swapped[0].opt()._state[next(swapped[0].graph().layers())]["weight"]["m"],
        b.opt()._state[next(b.graph().layers())]["weight"]["m"])


# --------------------------------------------------------------------- prior fitness
class _GrowingSize(AbstractFitness):
    """The model's nout times the generation: every candidate measures better each generation."""

    def __call__(self, candidate, generation=None):
        return candidate.graph()[0].nout * generation


def test_evolve_children_carry_their_parents_fitness_and_ewma_blends_with_it():
    import tinyevo as te

    te.seed(0)
    pop = Population([CandidateModel(Sequential(Dense(2, n))) for n in (1, 2, 3, 4)])
    strategy = CombinedEvolution(EliteSelection(1),
                                 SusSelection(3, EvolveCandidates(evolve_model(lambda m: m))))
    f = EwmaFitness(_GrowingSize())
    pop = te.evolve(strategy, f, pop)
    assert pop.previous.fitnesses() == [1, 2, 3, 4]         # fresh: no prior, the base value
    fitness_of = {c.graph()[0].nout: c.fitness for c in pop.previous}
    elite, children = pop[0], pop.members[1:]
    assert isinstance(elite, FittedCandidate) and prior_fitness(elite) == 4
    assert all(c.fitness is None for c in children)           # children start unevaluated
    assert [prior_fitness(c) for c in children] == [fitness_of[c.graph()[0].nout]
                                                    for c in children]
    pop = te.evolve(strategy, f, pop)
    # generation 2 measures 2 * nout, blended with the parent's (the elite's own) 1 * nout
    assert pop.previous.fitnesses() == [1.5 * c.graph()[0].nout for c in pop.previous]
    assert prior_fitness(pop.previous[1].candidate) == pop.previous[1].graph()[0].nout


def test_crossover_children_carry_the_fitness_of_the_parent_they_were_made_from():
    from tinyevo.evolution import copy_model
    from tinyevo.evolution.crossover import evolve_crossover

    parents = [FittedCandidate(c, v, 1) for c, v in zip(_models(3), (0.1, 0.2, 0.3))]
    crossover = evolve_crossover(lambda p: (copy_model(p[1]), copy_model(p[0])))
    children = PairCandidates(EvolveCandidates(crossover))(parents)
    assert [c.model[0].nout for c in children] == [2, 1, 1]
    assert [prior_fitness(c) for c in children] == [0.1, 0.2, 0.3]  # odd one out: (c3, c1)
    # Through the chain too: crossed, then mutated (the crossover's child is a plain candidate)
    mutated = CrossoverThenMutate(crossover, evolve_model(_relu_to_elu))(parents)
    assert [prior_fitness(c) for c in mutated] == [0.1, 0.2, 0.3]
    chained = EvolutionChain(PairCandidates(EvolveCandidates(crossover)),
                             EvolveCandidates(evolve_model(_relu_to_elu)))(parents)
    assert [prior_fitness(c) for c in chained] == [0.1, 0.2, 0.3]
