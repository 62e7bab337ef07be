"""OperatorClock: time inside graph copies, the size solver and parameter surgery (shared by
the benchmarks that split an operator's time into those parts)."""

# isort: split
import tinyevo as te  # first: tinyevo tunes OpenBLAS before NumPy loads it

# isort: split
import time

import tinyevo.evolution.crossover as C
import tinyevo.graph.edit as E
import tinyevo.graph.resizing as R
import tinyevo.graph.segment as S


class OperatorClock:
    """Within the block, adds up the seconds (``copy``, ``solve``, ``surgery``) and counts the
    calls (``calls``) of ``CompGraph.copy``, ``solve_selection`` and ``apply_selection``, as the
    resizing, edit, segment and crossover modules call them."""

    def __init__(self) -> None:
        self.copy = self.solve = self.surgery = 0.0
        self.calls = {"copy": 0, "solve": 0, "surgery": 0}

    def _wrap(self, fn, field):
        def timed(*a, **k):
            self.calls[field] += 1
            t = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                setattr(self, field, getattr(self, field) + time.perf_counter() - t)
        return timed

    def __enter__(self):
        self._patched = []
        for mod in (R, E, S, C):
            for name, field in (("solve_selection", "solve"), ("apply_selection", "surgery")):
                if hasattr(mod, name):
                    self._patched.append((mod, name, getattr(mod, name)))
                    setattr(mod, name, self._wrap(getattr(mod, name), field))
        self._patched.append((te.CompGraph, "copy", te.CompGraph.copy))
        te.CompGraph.copy = self._wrap(te.CompGraph.copy, "copy")
        return self

    def __exit__(self, *exc):
        for obj, name, fn in reversed(self._patched):
            setattr(obj, name, fn)
