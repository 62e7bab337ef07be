"""How the neuron-selection program is solved: HiGHS, through scipy (private to tinyevo.graph).

:mod:`tinyevo.graph.selection` builds its program in the form ``scipy.optimize.milp`` takes and
asks :func:`program` for something that solves it under bounds that change from solve to solve.
The answer is the same either way; this module is only about getting it cheaply:

- :meth:`MilpProgram.solve` solves the LP relaxation first (these programs are nearly totally
  unimodular, so it is usually integral already), then branch and bound over its fractional
  variables alone, the whole program last.
- :class:`MilpProgram` asks ``scipy.optimize.milp``, the documented path. :class:`HighsProgram`
  gives the program once to scipy's own, private, HiGHS bindings and re-solves it from the last
  basis; it is used only where those bindings import and solve a known program right (checked
  once per process), and hands over to ``scipy.optimize.milp`` at their first failure.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys

import numpy as np
from scipy import sparse
from scipy.optimize import Bounds, LinearConstraint, milp

try:                                 # scipy's own HiGHS bindings (private): see HighsProgram
    from scipy.optimize._highspy import _core
except ImportError:                  # pragma: no cover - a scipy without them
    _core = None

__all__ = ["program", "MilpProgram", "HighsProgram"]

logger = logging.getLogger("tinyevo.graph")

# HiGHS's presolve buys nothing on these small models and, on a few, makes HiGHS print a stray
# "transformNewIntegerFeasibleSolution" line to stdout; the models are solved without it.
PRESOLVE = False
# Relative optimality gap at which branch and bound stops: the seed accepts any feasible
# solution; 0.1 % of the kept neurons' value is far below what one neuron is worth, and it
# cut the AutoFlux mutation of a 124-vertex graph from 36 to 20-22 ms (mean) against 1e-6.
MIP_GAP = 1e-3
_DIRECT_CHECKED: list[bool] = []     # whether HighsProgram may be used, once known


def program(c: np.ndarray, A: sparse.csr_array, rlo: np.ndarray, rhi: np.ndarray, *,
            time_limit: float, direct: bool) -> MilpProgram:
    """min ``c @ x`` subject to ``rlo <= A @ x <= rhi``, ready for :meth:`MilpProgram.solve`
    under bounds given per solve; through scipy's HiGHS bindings when ``direct`` and they work,
    else ``scipy.optimize.milp``. ``time_limit``: seconds per solve."""
    if direct and _direct_ok():
        try:
            return HighsProgram(c, A, rlo, rhi, time_limit)
        except Exception as e:              # bindings that differ from those checked
            _disable_direct(e)
    return MilpProgram(c, A, rlo, rhi, time_limit)


class MilpProgram:
    """min ``c @ x`` subject to ``rlo <= A @ x <= rhi`` and bounds given per solve: its LP
    relaxation (:meth:`lp`, the optimum or None) and its integer version (:meth:`mip`, the
    best solution found, accepted at the time limit, or None), solved by
    ``scipy.optimize.milp``; :meth:`solve` combines them."""

    def __init__(self, c: np.ndarray, A: sparse.csr_array, rlo: np.ndarray, rhi: np.ndarray,
                 time_limit: float) -> None:
        self.c = c
        self.constraints = LinearConstraint(A, rlo, rhi)
        self.options = {"time_limit": time_limit, "disp": False, "presolve": PRESOLVE}

    def solve(self, integrality: np.ndarray, lb: np.ndarray, ub: np.ndarray,
              gap_scale: float | None = None) -> np.ndarray | None:
        """The optimum within ``lb <= x <= ub``, integral where ``integrality`` is 1, or None.

        The LP relaxation first: these models are nearly totally unimodular, so its optimum is
        usually integral, hence optimal, at a fraction of the branch-and-bound cost. Where it
        is not, the integer variables it already has integral are fixed and only the few
        fractional ones are searched; that answer is taken when it is within ``MIP_GAP`` of
        the relaxation's bound (so of the optimum), else the whole program goes to branch and
        bound.

        The gap is measured against ``gap_scale``, the neurons' total value (default: the bound
        itself): a relaxed program's objective also holds the heavy penalty for a missed
        target, and 0.1 % of that would let through worse choices of neurons.

        (Rounding the fractional variables each way with cheap re-solves was tried instead of
        the branch and bound over them: within the gap it kept measurably worse neurons, e.g.
        new ones in place of kept ones, 25 % more surgery in the crossover benchmark.)"""
        lp = self.lp(lb, ub)
        if lp is None:
            return None
        x, bound = lp
        ints = integrality.astype(bool)
        frac = ints & (np.abs(x - np.round(x)) >= 1e-7)
        if not frac.any():
            return _rounded(x, ints)

        slack = MIP_GAP * max(abs(bound) if gap_scale is None else gap_scale, 1.0)
        with _quiet_stdout():   # HiGHS's MIP solver can print to the C stdout despite options
            lo, hi = lb.copy(), ub.copy()
            fixed = ints & ~frac
            lo[fixed] = hi[fixed] = np.round(x[fixed])
            near = self.mip(integrality, lo, hi, slack)
            if near is not None and near[1] - bound <= slack:
                return _rounded(near[0], ints)
            res = self.mip(integrality, lb, ub, slack)
        return None if res is None else _rounded(res[0], ints)

    def lp(self, lb: np.ndarray, ub: np.ndarray) -> tuple[np.ndarray, float] | None:
        res = milp(self.c, integrality=np.zeros(len(self.c)), bounds=Bounds(lb, ub),
                   constraints=self.constraints, options=self.options)
        if res.x is None or res.status != 0:
            logger.debug("neuron selection LP: %s", res.message)
            return None
        return res.x, float(res.fun)

    def mip(self, integrality: np.ndarray, lb: np.ndarray, ub: np.ndarray,
            abs_gap: float | None = None) -> tuple[np.ndarray, float] | None:
        # (milp takes a relative gap only: branch and bound stops within MIP_GAP of the
        # objective, penalties included.)
        res = milp(self.c, integrality=integrality, bounds=Bounds(lb, ub),
                   constraints=self.constraints,
                   options={**self.options, "mip_rel_gap": MIP_GAP})
        if res.x is None:
            logger.debug("neuron selection MILP: %s", res.message)
            return None
        return res.x, float(res.fun)


class HighsProgram(MilpProgram):
    """The same program given once to scipy's own HiGHS bindings and re-solved after bound
    changes from the last basis. ``scipy.optimize.milp`` checks and converts its arguments in
    Python on every call (about 1 ms, more than HiGHS takes on most of these programs) and
    starts each solve from scratch; a generation of the operator benchmark solves some 150.
    The bindings are private to scipy, so this path is taken only where they import and solve
    a known program right (checked once, :func:`_direct_ok`)."""

    def __init__(self, c: np.ndarray, A: sparse.csr_array, rlo: np.ndarray, rhi: np.ndarray,
                 time_limit: float) -> None:
        h = _core
        self.c, self.n = c, len(c)
        self.A, self.rlo, self.rhi = A, rlo, rhi
        self.time_limit = time_limit
        self.fallback: MilpProgram | None = None
        self.cols = np.arange(self.n, dtype=np.int32)
        self.is_mip = False
        self.highs = highs = h._Highs()
        highs.setOptionValue("output_flag", False)
        highs.setOptionValue("presolve", "on" if PRESOLVE else "off")
        zeros = np.zeros(self.n)
        status = highs.passModel(
            self.n, A.shape[0], A.nnz, int(h.MatrixFormat.kRowwise), int(h.ObjSense.kMinimize),
            0.0, np.ascontiguousarray(c, dtype=np.float64), zeros, zeros,
            np.ascontiguousarray(rlo, dtype=np.float64),
            np.ascontiguousarray(rhi, dtype=np.float64), A.indptr.astype(np.int32),
            A.indices.astype(np.int32), A.data.astype(np.float64),
            np.zeros(self.n, dtype=np.int32))
        if status == h.HighsStatus.kError:
            raise RuntimeError("HiGHS refused the model")

    def _run(self, integrality: np.ndarray | None, lb: np.ndarray, ub: np.ndarray,
             abs_gap: float | None = None) -> tuple[np.ndarray, float] | None:
        h, highs = _core, self.highs
        mip = integrality is not None and bool(integrality.any())
        if mip or self.is_mip:
            kinds = (integrality if mip else np.zeros(self.n)).astype(np.uint8)
            highs.changeColsIntegrality(self.n, self.cols, kinds)
            self.is_mip = mip
        if mip:
            # branch and bound stops within abs_gap (the caller's scale), else MIP_GAP of it
            highs.setOptionValue("mip_rel_gap", MIP_GAP if abs_gap is None else 0.0)
            highs.setOptionValue("mip_abs_gap", 1e-6 if abs_gap is None else abs_gap)
        highs.changeColsBounds(self.n, self.cols, np.asarray(lb, dtype=np.float64),
                               np.asarray(ub, dtype=np.float64))
        # HiGHS measures its time limit from the object's first run, not this one's.
        highs.setOptionValue("time_limit", highs.getRunTime() + self.time_limit)
        if highs.run() == h.HighsStatus.kError:
            return None
        status = highs.getModelStatus()
        info = highs.getInfo()
        if status != h.HighsModelStatus.kOptimal:
            stopped = (h.HighsModelStatus.kTimeLimit, h.HighsModelStatus.kIterationLimit,
                       h.HighsModelStatus.kSolutionLimit)
            if not (mip and status in stopped and info.objective_function_value < h.kHighsInf
                    and info.primal_solution_status == h.SolutionStatus.kSolutionStatusFeasible):
                logger.debug("neuron selection %s: %s", "MILP" if mip else "LP",
                             highs.modelStatusToString(status))
                return None
        x = np.asarray(highs.getSolution().col_value, dtype=np.float64)
        return x, float(self.c @ x)

    def lp(self, lb: np.ndarray, ub: np.ndarray) -> tuple[np.ndarray, float] | None:
        return self._guarded(None, lb, ub, None)

    def mip(self, integrality: np.ndarray, lb: np.ndarray, ub: np.ndarray,
            abs_gap: float | None = None) -> tuple[np.ndarray, float] | None:
        return self._guarded(integrality, lb, ub, abs_gap)

    def _guarded(self, integrality, lb, ub, abs_gap):
        """:meth:`_run`, or scipy.optimize.milp from the first failure of the bindings on (for
        this program and every later one)."""
        if self.fallback is None:
            try:
                return self._run(integrality, lb, ub, abs_gap)
            except Exception as e:          # bindings that differ from those checked
                _disable_direct(e)
                self.fallback = MilpProgram(self.c, self.A, self.rlo, self.rhi, self.time_limit)
        if integrality is None:
            return self.fallback.lp(lb, ub)
        return self.fallback.mip(integrality, lb, ub, abs_gap)


def _disable_direct(e: BaseException) -> None:
    logger.warning("scipy's HiGHS bindings failed (%r); solving with scipy.optimize.milp from "
                   "now on", e)
    _DIRECT_CHECKED[:] = [False]


def _direct_ok() -> bool:
    """Whether :class:`HighsProgram` may be used: the bindings import and solve a known
    program right (checked once per process)."""
    if _core is None:
        return False
    if not _DIRECT_CHECKED:
        _DIRECT_CHECKED.append(_check_direct())
    return _DIRECT_CHECKED[0]


def _check_direct() -> bool:
    """max x0 + 2 x1 + 3 x2 with x0 + x1 + x2 <= 1.5: the LP takes x2 and half of x1, the
    integer program x2 alone; both must come back so, and the LP again after a bound change;
    with x0 + x1 + x2 >= 5 neither has a solution."""
    seconds = 10.0                          # three variables: any time limit will do
    try:
        A = sparse.csr_array(np.ones((1, 3)))
        p = HighsProgram(np.array([-1.0, -2.0, -3.0]), A, np.array([-np.inf]),
                         np.array([1.5]), seconds)
        lb, ub = np.zeros(3), np.ones(3)
        lp, ip = p._run(None, lb, ub), p._run(np.ones(3), lb, ub)
        again = p._run(None, lb, np.array([1.0, 1.0, 0.0]))
        never = HighsProgram(np.ones(3), A, np.array([5.0]), np.array([np.inf]), seconds)
        ok = (lp is not None and np.allclose(lp[0], [0, 0.5, 1]) and ip is not None
              and np.allclose(ip[0], [0, 0, 1]) and again is not None
              and np.allclose(again[0], [0.5, 1, 0])
              and never._run(None, lb, ub) is None and never._run(np.ones(3), lb, ub) is None)
    except Exception as e:                 # any change in the private bindings
        logger.debug("scipy's HiGHS bindings cannot be called directly: %r", e)
        return False
    if not ok:
        logger.debug("scipy's HiGHS bindings gave a wrong answer; using scipy.optimize.milp")
    return ok


def _rounded(x: np.ndarray, ints: np.ndarray) -> np.ndarray:
    x = x.copy()
    x[ints] = np.round(x[ints])
    return x


@contextlib.contextmanager
def _quiet_stdout():
    """Send file descriptor 1 to /dev/null for the duration (no-op where that fails)."""
    try:
        sys.stdout.flush()
        saved = os.dup(1)
        devnull = os.open(os.devnull, os.O_WRONLY)
    except (OSError, ValueError, AttributeError):
        yield
        return
    try:
        os.dup2(devnull, 1)
        yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)
        os.close(devnull)
