"""Mutations of an optimiser: another type of optimiser, or a nudged learning rate.

    >>> OptimizerMutation([Adam, Momentum])(SGD(0.05)).learning_rate
    0.05
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from tinyevo.evolution._births import change, note
from tinyevo.evolution.mutation.generic import AbstractMutation, Rng, check_callable
from tinyevo.optimizers import OPTIMIZERS, Optimizer

__all__ = ["OptimizerMutation", "LearningRateMutation", "DEFAULT_OPTIMIZERS"]

DEFAULT_OPTIMIZERS = ("SGD", "Momentum", "Nesterov", "Adam", "NAdam", "AdaGrad")


class OptimizerMutation(AbstractMutation):
    """OptimizerMutation(choices=DEFAULT_OPTIMIZERS, rng=None): a new optimiser of another type
    from ``choices`` (classes, class names, or callables ``lr -> optimiser``), with the same
    learning rate.

        >>> OptimizerMutation([Adam, Momentum])(SGD(0.05)).learning_rate
        0.05
    """

    acts_on = "optimizer"      # what MapCandidate applies it to

    def __init__(self, choices: Iterable[Any] = DEFAULT_OPTIMIZERS, rng: Rng = None) -> None:
        made = []
        for c in choices:
            if isinstance(c, str):
                if c not in OPTIMIZERS:
                    raise ValueError(f"OptimizerMutation: unknown optimiser {c!r}; expected one "
                                     f"of {sorted(OPTIMIZERS)}")
                c = OPTIMIZERS[c]
            check_callable(c, "OptimizerMutation", "choice")
            made.append(c)
        if not made:
            raise ValueError("OptimizerMutation: no optimisers to choose from")
        self.choices, self.rng = tuple(made), rng

    def mutate(self, o: Optimizer) -> Optimizer:
        if not isinstance(o, Optimizer):
            raise TypeError(f"OptimizerMutation mutates optimisers, got {type(o).__name__}")
        others = [c for c in self.choices if c is not type(o)] or list(self.choices)
        c = others[int(self._gen().integers(len(others)))]
        if isinstance(c, type) and issubclass(c, Optimizer):
            new = c(learning_rate=o.learning_rate)
        else:
            new = c(o.learning_rate)
        if type(new) is not type(o):
            note(f"{type(self).__name__} {type(o).__name__}->{type(new).__name__}")
        return new

    def __repr__(self) -> str:
        names = [getattr(c, "__name__", repr(c)) for c in self.choices]
        return f"OptimizerMutation({names})"


class LearningRateMutation(AbstractMutation):
    """LearningRateMutation(nudge=0.3, lo=1e-6, hi=1.0, rng=None): ``lr <- clamp(lr * (1 +
    nudge * (u - 0.5)), lo, hi)``, ``u ~ U(0, 1)``; changes the optimiser in place."""

    acts_on = "optimizer"

    def __init__(self, nudge: float = 0.3, lo: float = 1e-6, hi: float = 1.0,
                 rng: Rng = None) -> None:
        if not (0 < lo <= hi):
            raise ValueError(f"LearningRateMutation: expected 0 < lo <= hi, got ({lo}, {hi})")
        self.nudge, self.lo, self.hi, self.rng = float(nudge), float(lo), float(hi), rng

    def mutate(self, o: Optimizer) -> Optimizer:
        if not isinstance(o, Optimizer):
            raise TypeError(f"LearningRateMutation mutates optimisers, got {type(o).__name__}")
        u = self._gen().random()
        old = o.learning_rate
        o.learning_rate = min(max(old * (1 + self.nudge * (u - 0.5)), self.lo), self.hi)
        if o.learning_rate != old:
            note(f"{type(self).__name__} {change(old, o.learning_rate)}")
        return o

    def __repr__(self) -> str:
        return f"LearningRateMutation({self.nudge})"

