"""How the neuron-selection program is solved (tinyevo.graph._highs): the LP relaxation first,
the gap measured on the neurons' value, scipy's HiGHS bindings with scipy.optimize.milp behind."""

import numpy as np
import pytest
from scipy import sparse as sp

from tinyevo.graph import _highs as H


@pytest.fixture(params=["highs", "milp"])
def direct(request):
    """Both ways to HiGHS: scipy's bindings directly (where they work), scipy.optimize.milp."""
    if request.param == "highs" and not H._direct_ok():
        pytest.skip("scipy's HiGHS bindings cannot be called directly here")
    return request.param == "highs"


def program(c, A, rlo, rhi, direct=True):
    return H.program(np.asarray(c, dtype=float), sp.csr_array(np.asarray(A, dtype=float)),
                     np.asarray(rlo, dtype=float), np.asarray(rhi, dtype=float),
                     time_limit=10.0, direct=direct)


@pytest.mark.parametrize("values, weights, cap, calls", [
    ([100.0, 0.01], [1.0, 2.0], 1.5, ["lp", "mip"]),          # s = (1, 0.25): fixing s1 settles it
    ([1.0, 1.0, 1.0], [2.0, 2.0, 2.0], 2.5, ["lp", "mip", "mip"]),  # 20 % off: branch and bound
])
def test_fractional_relaxation_searches_its_fractional_variables_first(monkeypatch, direct,
                                                                       values, weights, cap,
                                                                       calls):
    """max values @ s with weights @ s <= cap (s binary): the answer is the optimum either way;
    the whole program goes to branch and bound only when fixing the LP's integral variables
    falls outside the optimality gap."""
    made = []

    def counted(kind, real):
        return lambda self, *a: made.append(kind) or real(self, *a)

    for cls in (H.MilpProgram, H.HighsProgram):
        for kind in ("lp", "mip"):
            if kind in cls.__dict__:
                monkeypatch.setattr(cls, kind, counted(kind, cls.__dict__[kind]))
    n = len(values)
    p = program(-np.array(values), [weights], [-np.inf], [cap], direct)
    assert isinstance(p, H.HighsProgram) == direct
    x = p.solve(np.ones(n), np.zeros(n), np.ones(n))
    assert set(x) == {0.0, 1.0} and np.dot(weights, x) <= cap
    assert np.dot(values, x) == max(values)                 # the integer optimum
    assert made == calls


def test_the_optimality_gap_is_measured_on_the_neurons_value(direct):
    """max 60 s1 + 35 s2 + 35 s3 with 3 s1 + 2 s2 + 2 s3 <= 4, plus a fixed penalty of 30000
    (a relaxed program whose target is out of reach): 0.1 % of the whole objective would accept
    {s1} (60); measured on the neurons' value (130) only {s2, s3} (70) is close enough."""
    p = program([-60.0, -35.0, -35.0, 30000.0], [[3.0, 2.0, 2.0, 0.0]], [-np.inf], [4.0],
                direct)
    lb, ub = np.array([0.0, 0.0, 0.0, 1.0]), np.ones(4)
    x = p.solve(np.array([1.0, 1.0, 1.0, 0.0]), lb, ub, gap_scale=130.0)
    if direct:
        np.testing.assert_array_equal(x, [0, 1, 1, 1])
    else:                     # milp's branch and bound takes a relative gap only
        assert x[:3] @ [60, 35, 35] in (60, 70)


def test_infeasible_programs_give_none(direct):
    p = program([1.0, 1.0], [[1.0, 1.0]], [3.0], [np.inf], direct)       # x0 + x1 >= 3
    assert p.solve(np.ones(2), np.zeros(2), np.ones(2)) is None
    assert p.solve(np.zeros(2), np.zeros(2), np.ones(2)) is None


def test_broken_highs_bindings_fall_back_to_milp(monkeypatch, caplog):
    """Bindings that raise or answer wrongly are noticed once, and milp does the work."""
    class Broken:
        def __getattr__(self, name):
            raise AttributeError(name)

    monkeypatch.setattr(H, "_core", Broken())
    monkeypatch.setattr(H, "_DIRECT_CHECKED", [])
    with caplog.at_level("DEBUG", logger="tinyevo.graph"):
        assert not H._direct_ok()
    assert "cannot be called directly" in caplog.text
    p = program([-1.0], [[1.0]], [-np.inf], [0.5])
    assert type(p) is H.MilpProgram
    x = p.solve(np.ones(1), np.zeros(1), np.ones(1))
    np.testing.assert_array_equal(x, [0.0])


def test_bindings_that_fail_mid_solve_hand_over_to_milp(monkeypatch, caplog):
    """A direct program whose bindings raise during a solve finishes it with milp, and later
    programs go straight to milp."""
    if not H._direct_ok():
        pytest.skip("scipy's HiGHS bindings cannot be called directly here")
    monkeypatch.setattr(H, "_DIRECT_CHECKED", [True])
    p = program([-1.0, -2.0], [[1.0, 1.0]], [-np.inf], [1.0])
    assert isinstance(p, H.HighsProgram)

    def broken(*a, **k):
        raise AttributeError("changed bindings")

    monkeypatch.setattr(p, "_run", broken)
    with caplog.at_level("WARNING", logger="tinyevo.graph"):
        x = p.solve(np.ones(2), np.zeros(2), np.ones(2))
    np.testing.assert_array_equal(x, [0, 1])
    assert "scipy.optimize.milp from now on" in caplog.text
    assert not H._direct_ok()
    assert type(program([1.0], [[1.0]], [0.0], [1.0])) is H.MilpProgram
