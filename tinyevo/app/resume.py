"""Resume: what a ``fit`` run keeps beside its population, and how a run goes on from it.

A checkpoint (:mod:`tinyevo.app.checkpoint`) holds the last complete generation, the hall of
fame, and the run's state (:func:`run_state`): its settings (:class:`FitConfig`), the kind and
shape of its data, the library's random generator and the vertex-name counter (vertex names,
like weights, follow from the seed), and the time it spent. A run on a folder with a checkpoint
reads it (:func:`load`), takes from it the settings it leaves None (:func:`fill`), refuses to go
on with other settings or other data (:func:`check`) and puts the random state back
(:func:`restore_random_state`): it then reaches the result of a run that was never interrupted,
and its lineage goes on with the same ids (:func:`continued_lineage`).

    >>> resumed = load("runs/digits")                       # doctest: +SKIP
    >>> resumed.population.generation, resumed.elapsed      # doctest: +SKIP
    (7, 301.2)
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from tinyevo import backend as B
from tinyevo.app.checkpoint import load_checkpoint
from tinyevo.app.config import FitConfig, small_data_config
from tinyevo.app.warmstart import fingerprint
from tinyevo.evolution.lineage import Lineage, candidate_id, set_candidate_id
from tinyevo.evolution.population import Population
from tinyevo.graph.vertices import name_counter, set_name_counter

__all__ = ["Resumed", "load", "fill", "check", "run_state", "start_random_state",
           "restore_random_state", "continued_lineage"]

log = logging.getLogger("tinyevo")

# What runs did before each of these settings came (a checkpoint written then lacks the key).
_BEFORE_IT_EXISTED = {"optimizer_state": "reset", "valid_max": None, "final_training": 0.0,
                      "max_macs": None, "standardize": False}


@dataclass
class Resumed:
    """A run read back from its checkpoint: the last complete generation (with its
    ``hall_of_fame``) and the state :func:`run_state` wrote."""

    population: Population
    state: dict

    @property
    def settings(self) -> dict:
        """The run's settings as the checkpoint stores them (:meth:`FitConfig.to_json`)."""
        return self.state.get("config", {})

    @property
    def elapsed(self) -> float:
        """Seconds the run has spent, over all its sessions."""
        return float(self.state.get("elapsed", 0.0))

    @property
    def last_seconds(self) -> float:
        """Seconds the last generation took (to judge whether the next one fits in time)."""
        return float(self.state.get("last_seconds", 0.0))


def load(mdir: str | os.PathLike | None) -> Resumed | None:
    """The run checkpointed in ``mdir``, or None where there is none (a new run). For the run
    that owns ``mdir`` only: it first finishes a checkpoint swap that a crash interrupted."""
    loaded = load_checkpoint(mdir, owner=True) if mdir is not None else None
    return None if loaded is None else Resumed(*loaded)


def fill(config: FitConfig, resumed: Resumed | None, defaults: dict[str, Any]) -> FitConfig:
    """``config`` with each setting named in ``defaults`` that it leaves None chosen: on a
    resumed run the checkpoint's (for a setting written before it existed, what runs did
    then), on a new run ``defaults``'. A ceiling of 0 (``max_macs``, ``valid_max``) is None:
    none."""
    chosen = {}
    for name, default in defaults.items():
        value = getattr(config, name)
        if value is None and resumed is not None:
            value = resumed.settings.get(name, _BEFORE_IT_EXISTED.get(name, default))
        elif value is None:
            value = default
        if name == "max_macs":
            value = float(value) if value else None
        elif name == "valid_max":
            value = value or None
        chosen[name] = value
    return replace(config, **chosen)


def check(resumed: Resumed, config: FitConfig, kind: str, sample_shape: tuple,
          nclasses: int, mdir: Path, initial: list[str] | None = None) -> None:
    """Refuse to resume ``resumed`` with other data, other settings or other initial models
    (``initial``: their fingerprints; none given: any) than it was made with: a ValueError
    that names them. A setting the checkpoint lacks counts as its default then; where runs
    did something else before the setting existed, the run goes on with the one asked now
    (with a warning where the two differ). ``nclasses``: the model's outputs."""
    state = resumed.state
    if (state.get("kind") != kind or list(state.get("sample_shape", [])) != list(sample_shape)
            or state.get("nclasses") != nclasses):
        raise ValueError(f"fit: the checkpoint in {mdir} is for {state.get('kind')} data of "
                         f"shape {state.get('sample_shape')} with {state.get('nclasses')} "
                         f"classes or outputs, not {kind} {list(sample_shape)} with "
                         f"{nclasses}; use another mdir")
    if initial and initial != state.get("initial", []):
        raise ValueError(f"fit: the run in {mdir} started from other initial models than the "
                         "initial= given now; resume without initial= (or with the same "
                         "models), or use another mdir")
    saved = dict(resumed.settings)
    mine = config.to_json()
    for k, before in _BEFORE_IT_EXISTED.items():
        if k not in saved:
            if mine[k] != before:
                log.warning("%s was written before the setting %s existed (its runs used %r); "
                            "the run goes on with %r, so it will not end as the older version "
                            "would have ended it", mdir, k, before, mine[k])
            saved[k] = mine[k]
    saved = {**small_data_config().to_json(), **saved}
    differ = [k for k in mine if saved[k] != mine[k]]
    if differ:
        raise ValueError(f"fit: the checkpoint in {mdir} was made with other settings ("
                         + ", ".join(f"{k}: {saved.get(k)!r} there, {mine[k]!r} now"
                                     for k in differ)
                         + "); resume with the same settings (and seed) or use another mdir")


def run_state(config: FitConfig, kind: str, sample_shape: tuple, nclasses: int,
              elapsed: float, last_seconds: float, initial: list[str] | None = None) -> dict:
    """The run's state as its checkpoint keeps it: all that resuming needs besides the
    population and the hall of fame (the random generator and name counter as they are now;
    the fingerprints of the ``initial`` models it started from, where it did)."""
    state = {"config": config.to_json(), "kind": kind, "sample_shape": list(sample_shape),
             "nclasses": nclasses, "rng": B.rng().bit_generator.state,
             "name_counter": name_counter(), "elapsed": elapsed, "last_seconds": last_seconds}
    if initial:
        state["initial"] = list(initial)
    return state


def start_random_state(seed: int) -> None:
    """A new run's random state: the library generator seeded, vertex names from 1 (so that
    names, like weights, follow from the seed)."""
    B.seed(seed)
    set_name_counter(1)


def restore_random_state(resumed: Resumed) -> None:
    """The random generator and the vertex-name counter as the checkpoint left them."""
    B.seed(0)
    B.rng().bit_generator.state = resumed.state["rng"]
    set_name_counter(int(resumed.state.get("name_counter", 1)))


def continued_lineage(resumed: Resumed, hall_of_fame: list, front: list) -> Lineage:
    """The lineage the resumed run goes on with: its checkpoint's. A checkpoint without one
    (written before lineages were recorded, or whose lineage did not load) starts one at its
    generation: its members, ``hall_of_fame`` and ``front`` entries (the run's, as it holds
    them) without parents, an entry that is a copy of a member (the same model and weights)
    with the member's id."""
    population = resumed.population
    lineage = getattr(population, "lineage", None)
    if lineage is None:
        lineage = Lineage()
        lineage.register(population)
        known = dict(zip(fingerprint([c.graph() for c in population.members]),
                         map(candidate_id, population.members)))
        entries = [*hall_of_fame, *front]
        for c, print_ in zip(entries, fingerprint([c.graph() for c in entries])):
            if known.get(print_) is not None:
                set_candidate_id(c, known[print_])
            else:
                lineage.register([c], population.generation)
                known[print_] = candidate_id(c)
        lineage.update(population, hall_of_fame, front)
        log.info("the checkpoint has no lineage: it is recorded from generation %d on",
                 population.generation)
    return lineage
