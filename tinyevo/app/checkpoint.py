"""Population checkpoints: the evaluated population of the last complete generation.

``mdir/checkpoint/`` holds ``state.json`` (format, generation, the run's state such as the
random generator and settings, and per member its fitness, optimiser and model structure) and
``members.npz`` (every member's arrays, keyed ``"<member>/<vertex>/<array>"``) and
``optimizers.npz`` (the state each member's optimiser keeps between generations, keyed
``"<member>/<layer>/<parameter>/<slot>"``; empty where state is reset after training). The folder is
swapped in atomically (:func:`tinyevo.app.io.atomic_dir`): a run killed at any moment, even
while writing, leaves the previous complete generation or the new one. Loading executes nothing
from the files (JSON, and ``.npz`` read with ``allow_pickle=False``).

    >>> save_checkpoint("runs/digits", population, {"rng": ...})   # doctest: +SKIP
    >>> population, state = load_checkpoint("runs/digits")          # doctest: +SKIP
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from tinyevo import __version__
from tinyevo.app.io import atomic_dir, read_json, read_npz, recover_dir, write_json, write_npz
from tinyevo.evolution.candidate import CandidateModel, CandidateOptModel, FittedCandidate
from tinyevo.evolution.population import Population
from tinyevo.graph import CompGraph
from tinyevo.optimizers import optimizer_from_spec

__all__ = ["save_checkpoint", "load_checkpoint", "persist", "CHECKPOINT_DIR"]

CHECKPOINT_DIR = "checkpoint"
OPTIMIZERS_FILE = "optimizers.npz"
FORMAT, VERSION = "tinyevo.checkpoint", 1


def save_checkpoint(mdir: str | os.PathLike, population: Population, state: dict) -> Path:
    """Write ``population`` (evaluated; candidates holding a CompGraph and optionally their own
    optimiser) and the JSON-able ``state`` to ``mdir/checkpoint``, atomically."""
    members, arrays, opt_arrays = [], {}, {}
    for i, c in enumerate(population.members):
        graph = c.graph()
        if not isinstance(graph, CompGraph):
            raise TypeError(f"save_checkpoint: member {i} holds a {type(graph).__name__}, "
                            "expected a CompGraph")
        opt = c.opt()
        members.append({"fitness": _number(getattr(c, "fitness", None)),
                        "generation": getattr(c, "generation", None),
                        "optimizer": opt.to_spec() if opt is not None else None,
                        "model": graph.to_spec()})
        arrays.update({f"{i}/{k}": a for k, a in graph.arrays().items()})
        if opt is not None and hasattr(opt, "state_arrays"):
            opt_arrays.update({f"{i}/{k}": a for k, a in opt.state_arrays(graph).items()})
    doc = {"format": FORMAT, "version": VERSION, "tinyevo": __version__,
           "generation": population.generation, "members": members, "state": state,
           "optimizer_state": OPTIMIZERS_FILE}
    target = Path(mdir) / CHECKPOINT_DIR
    with atomic_dir(target) as tmp:
        write_npz(tmp / "members.npz", arrays)
        write_npz(tmp / OPTIMIZERS_FILE, opt_arrays)
        write_json(tmp / "state.json", doc)
    return target


def load_checkpoint(mdir: str | os.PathLike) -> tuple[Population, dict] | None:
    """``(population, state)`` from ``mdir/checkpoint``, or None when there is none yet."""
    folder = recover_dir(Path(mdir) / CHECKPOINT_DIR)
    if folder is None:
        return None
    doc = read_json(folder / "state.json")
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise ValueError(f"{folder / 'state.json'} is not a tinyevo checkpoint; use another mdir")
    if doc.get("version", 0) > VERSION:
        raise ValueError(f"{folder} was written by tinyevo {doc.get('tinyevo')} (checkpoint "
                         f"version {doc['version']}); upgrade tinyevo to resume it")
    arrays = read_npz(folder / "members.npz")
    # Optimiser state (moments, step counts); checkpoints from before it was kept have none.
    opt_path = folder / OPTIMIZERS_FILE
    if doc.get("optimizer_state") and not opt_path.exists():
        raise ValueError(f"{folder} is damaged: {OPTIMIZERS_FILE} (the optimisers' state) is "
                         "missing, so the run cannot go on as it would have; remove the folder "
                         "or use another mdir")
    opt_arrays = read_npz(opt_path) if opt_path.exists() else {}
    with_opt = {str(i) for i, m in enumerate(doc.get("members", []))
                if isinstance(m, dict) and m.get("optimizer") is not None}
    stray = [k for k in opt_arrays if k.split("/", 1)[0] not in with_opt]
    if stray:
        raise ValueError(f"{folder} is damaged: optimiser state {stray[0]!r} belongs to no member "
                         "with an optimiser; remove the folder or use another mdir")
    members = []
    try:
        for i, m in enumerate(doc["members"]):
            prefix = f"{i}/"
            own = {k[len(prefix):]: a for k, a in arrays.items() if k.startswith(prefix)}
            graph = CompGraph.from_spec(m["model"], own)
            missing = set(graph.arrays()) - set(own)
            if missing:
                raise ValueError(f"member {i} lacks arrays {sorted(missing)[:3]}")
            opt = m.get("optimizer")
            if opt is not None:
                optimizer = optimizer_from_spec(opt)
                optimizer.load_state_arrays(graph, {k[len(prefix):]: a for k, a in
                                                    opt_arrays.items() if k.startswith(prefix)})
                cand = CandidateOptModel(optimizer, graph)
            else:
                cand = CandidateModel(graph)
            members.append(FittedCandidate(cand, m["fitness"], m.get("generation")))
    except (KeyError, TypeError, ValueError, IndexError) as err:
        raise ValueError(f"{folder} is damaged and cannot be resumed ({err}); remove it or "
                         "use another mdir") from err
    return Population(members, int(doc["generation"])), doc.get("state", {})


def persist(mdir: str | os.PathLike, state: Any = None) -> Any:
    """The seed's ``persist`` as a callback: ``fit(..., callbacks=[persist("runs/x")])`` or
    ``persist("runs/x")(population)`` writes the population's checkpoint (``fit`` with ``mdir``
    already does this, with what it needs to resume)."""
    def callback(population: Population) -> None:
        save_checkpoint(mdir, population, state() if callable(state) else (state or {}))
    return callback


def _number(x: Any) -> Any:
    try:
        return float(x)
    except (TypeError, ValueError):
        return None
