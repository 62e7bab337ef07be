"""NSGA-II's sorting and crowding against hand-computed cases, the Pareto selections, and the
ParetoFront archive."""

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tinyevo.evolution import (
    CandidateModel,
    CombinedEvolution,
    EliteSelection,
    FittedCandidate,
    Objectives,
    ParetoEliteSelection,
    ParetoFront,
    ParetoTournamentSelection,
    Population,
    TournamentSelection,
    crowding_distance,
    dominates,
    nondominated_sort,
    objective_point,
    pareto_ranks,
)
from tinyevo.layers import Dense

INF = math.inf


def _fit(acc, params, name="c", generation=1):
    value = Objectives(acc, ("accuracy", "params"), (acc, params), ("max", "min"))
    return FittedCandidate(CandidateModel(Dense(2, 2)), value, generation)


# --------------------------------------------------------------------- sorting
def test_dominance_needs_one_strictly_better_axis():
    assert dominates((1, 1), (1, 0)) and not dominates((1, 0), (1, 1))
    assert not dominates((1, 1), (1, 1))                  # equal points: neither
    assert not dominates((1, 0), (0, 1)) and not dominates((0, 1), (1, 0))


def test_nondominated_sort_hand_computed():
    # maximised: a=(3,1) b=(1,3) c=(2,2) on front 0; d=(2,1) dominated by a and c;
    # e=(1,1) dominated by d too; f=(0,0) by everyone
    points = [(3, 1), (1, 3), (2, 2), (2, 1), (1, 1), (0, 0)]
    assert nondominated_sort(points) == [[0, 1, 2], [3], [4], [5]]


def test_nondominated_sort_ties_and_duplicates_share_a_front():
    # a duplicate of a front point is on the same front; a tie on one axis with a better
    # value on the other is dominated
    points = [(2, 2), (2, 2), (2, 1), (1, 3), (1, 2)]
    assert nondominated_sort(points) == [[0, 1, 3], [2, 4]]
    assert nondominated_sort([]) == []
    assert nondominated_sort([(5,), (5,), (4,)]) == [[0, 1], [2]]


def test_crowding_distance_hand_computed():
    # axis 0 values 0, 1, 3, 4 (range 4); axis 1 values 4, 3, 1, 0 (range 4)
    # b: (3 - 0)/4 + (4 - 1)/4 = 1.5; c: (4 - 1)/4 + (3 - 0)/4 = 1.5
    points = [(0, 4), (1, 3), (3, 1), (4, 0)]
    assert crowding_distance(points) == [INF, 1.5, 1.5, INF]
    # uneven spacing: b's neighbours are 0 and 3 on both axes, c's are 1 and 4
    points = [(0, 4), (1, 3.5), (3, 1), (4, 0)]
    assert crowding_distance(points) == pytest.approx([INF, 3 / 4 + 3 / 4, 3 / 4 + 3.5 / 4,
                                                       INF])
    assert crowding_distance([]) == []


def test_crowding_distance_ties_and_duplicates():
    # b and c tie on axis 0 (value 1): they share its neighbours 0 and 3 -> 3/4 each; on
    # axis 1 (values 4, 3, 2, 0 over 4): b -> (4 - 2)/4, c -> (3 - 0)/4
    points = [(0, 4, 0), (1, 3, 1), (1, 2, 2), (3, 0, 3)]
    # axis 2 values 0..3 over 3: b -> 2/3, c -> 2/3
    assert crowding_distance(points) == pytest.approx(
        [INF, 3 / 3 + 2 / 4 + 2 / 3, 3 / 3 + 3 / 4 + 2 / 3, INF])
    # a duplicate counts once: its first occurrence has the distance, the copy 0 (and copies
    # of an extreme likewise)
    points = [(0, 2), (1, 1), (1, 1), (2, 0), (0, 2)]
    assert crowding_distance(points) == [INF, 2.0, 0.0, INF, 0.0]
    # the distances do not depend on the order of the points (only which copy comes first)
    assert crowding_distance(points[::-1]) == [INF, INF, 2.0, 0.0, 0.0]
    # a lone point, and copies of one point
    assert crowding_distance([(1, 1)]) == [INF]
    assert crowding_distance([(1, 1), (1, 1)]) == [INF, 0.0]
    # an axis where every point is equal counts for nothing
    assert crowding_distance([(0, 5), (1, 5), (2, 5)]) == [INF, 1.0, INF]


def test_objective_point_orients_every_axis_to_maximise():
    assert objective_point(_fit(0.9, 1000).fitness) == (0.9, -1000.0)
    assert objective_point(0.5) == (0.5,) and objective_point(float("nan")) == (-INF,)
    with pytest.raises(TypeError):
        objective_point((0.1, 0.2))


def test_pareto_ranks_of_candidates():
    members = [_fit(0.9, 1000), _fit(0.8, 100), _fit(0.85, 500), _fit(0.8, 1000)]
    assert pareto_ranks(members) == [(0, INF), (0, INF), (0, 2.0), (1, INF)]


# --------------------------------------------------------------------- selections
def test_pareto_elites_are_the_first_front_cut_by_crowding_or_filled_from_the_next():
    members = [_fit(0.95, 4000), _fit(0.9, 1000), _fit(0.85, 500), _fit(0.6, 100),
               _fit(0.8, 2000), _fit(0.5, 3000)]
    # front 0: 0.95/4000, 0.9/1000, 0.85/500, 0.6/100 (extremes: the first and the last)
    elites = ParetoEliteSelection(2)(members)
    assert [e.fitness["params"] for e in elites] == [4000, 100]
    elites = ParetoEliteSelection(5)(members)
    assert [e.fitness["params"] for e in elites][:2] == [4000, 100]
    assert {e.fitness["params"] for e in elites} == {4000, 1000, 500, 100, 2000}
    # on plain numbers it is EliteSelection
    plain = [FittedCandidate(str(i), f) for i, f in enumerate([0.3, 0.9, 0.5, 0.9])]
    assert ParetoEliteSelection(3)(plain) == EliteSelection(3)(plain)


def test_pareto_tournament_draws_as_the_tournament_and_prefers_the_front():
    members = [_fit(0.9, 1000), _fit(0.5, 5000), _fit(0.8, 100), _fit(0.4, 6000)]
    winners = ParetoTournamentSelection(200, 2, 1.0, rng=np.random.default_rng(0))(members)
    counts = {p: sum(w.fitness["params"] == p for w in winners) for p in (1000, 5000, 100, 6000)}
    assert counts[6000] == 0                 # the worst never wins a tournament
    assert counts[1000] > counts[5000] and counts[100] > counts[5000]
    # on plain numbers: the same draws and winners as TournamentSelection
    plain = [FittedCandidate(str(i), f) for i, f in enumerate([0.3, 0.9, 0.5, 0.1, 0.7])]
    a = ParetoTournamentSelection(7, 3, 0.8, rng=np.random.default_rng(3))(plain)
    b = TournamentSelection(7, 3, 0.8, rng=np.random.default_rng(3))(plain)
    assert a == b


def test_pareto_selections_compose_like_the_others():
    members = [_fit(0.9, 1000), _fit(0.8, 100), _fit(0.7, 5000)]
    strategy = CombinedEvolution(ParetoEliteSelection(1),
                                 ParetoTournamentSelection(2, 2, 1.0, rng=np.random.default_rng(0)))
    assert len(strategy(members)) == 3


# --------------------------------------------------------------------- the archive
def test_the_front_keeps_non_dominated_snapshots_sorted_by_the_first_objective():
    front = ParetoFront()
    a, b, c = _fit(0.9, 1000), _fit(0.8, 100), _fit(0.7, 5000)
    assert front.update([c, a, b]) == 2 and len(front) == 2
    assert [m.fitness["accuracy"] for m in front] == [0.9, 0.8]
    assert front.names == ("accuracy", "params")
    assert front[0].candidate is not a.candidate and front[0].generation == 1
    assert front[0].graph() is not a.graph()              # a snapshot: a copy of the model
    # a new point that dominates one member replaces it; an equal point does not enter
    assert front.update([_fit(0.95, 1000, generation=2), _fit(0.8, 100, generation=2)]) == 1
    assert [(m.fitness["accuracy"], m.generation) for m in front] == [(0.95, 2), (0.8, 1)]
    # invalid and missing fitness are skipped
    worst = FittedCandidate(CandidateModel(Dense(2, 2)),
                            Objectives.worst(0.0, ("accuracy", "params"), ("max", "min")))
    assert front.update([worst, FittedCandidate(CandidateModel(Dense(2, 2)), None)]) == 0
    with pytest.raises(ValueError, match="objectives"):
        front.update([FittedCandidate(CandidateModel(Dense(2, 2)), 0.99)])
    with pytest.raises(ValueError, match="objectives"):      # within one update too
        ParetoFront().update([_fit(0.9, 10), FittedCandidate(CandidateModel(Dense(2, 2)), 0.5)])


def test_an_equal_point_replaces_a_member_only_with_a_higher_scalar_fitness():
    def fit(fitness, generation):
        value = Objectives(fitness, ("accuracy", "params"), (0.9, 100), ("max", "min"))
        return FittedCandidate(CandidateModel(Dense(2, 2)), value, generation)

    front = ParetoFront()
    front.update([fit(0.9004, 1)])
    assert front.update([fit(0.9004, 2), fit(0.9002, 2)]) == 0      # ties keep the first
    assert front.update([fit(0.9006, 3), fit(0.9008, 3)]) == 1
    assert [(float(m.fitness), m.generation) for m in front] == [(0.9008, 3)]


def test_a_front_of_plain_numbers_is_the_best_value_ever():
    front = ParetoFront()
    front.update([FittedCandidate(CandidateModel(Dense(2, 2)), f) for f in (0.5, 0.7, 0.7)])
    assert [m.fitness for m in front] == [0.7] and front.names == ("fitness",)


def test_the_front_updates_from_a_population():
    population = Population([_fit(0.9, 1000), _fit(0.8, 100)], generation=3)
    front = ParetoFront()
    front.update(population)
    assert len(front) == 2 and repr(front) == "ParetoFront(2 members of accuracy, params)"


points3 = st.lists(st.tuples(st.integers(0, 4), st.integers(0, 4), st.integers(0, 4)),
                   min_size=1, max_size=12)


@given(st.lists(points3, min_size=1, max_size=4))
def test_the_front_never_drops_a_non_dominated_point(batches):
    """Whatever the order of the updates, the front's points are exactly the distinct
    non-dominated points of everything it was given."""
    front, seen = ParetoFront(), []
    for gen, batch in enumerate(batches, 1):
        members = [FittedCandidate(CandidateModel(Dense(1, 1)), Objectives(
            a, ("a", "b", "c"), (a, b, c), ("max", "min", "max")), gen) for a, b, c in batch]
        front.update(members)
        seen += [(a, -b, c) for a, b, c in batch]
        expected = {seen[i] for i in nondominated_sort(seen)[0]}
        got = [objective_point(m.fitness) for m in front]
        assert len(got) == len(set(got)) and set(got) == expected
        assert got == sorted(got, reverse=True)
