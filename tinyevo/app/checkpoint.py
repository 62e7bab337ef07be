"""Population checkpoints: the evaluated population of the last complete generation.

``mdir/checkpoint/`` holds ``state.json`` (format, generation, the run's state such as the
random generator and settings, and per member its fitness, optimiser and model structure) and
``members.npz`` (every member's arrays, keyed ``"<member>/<vertex>/<array>"``) and
``optimizers.npz`` (the state each member's optimiser keeps between generations, keyed
``"<member>/<layer>/<parameter>/<slot>"``; empty where state is reset after training). A member
that trains in batches of its own size (``batch_size_search``) has its ``"batch_size"``. A hall of
fame (:class:`tinyevo.evolution.HallOfFame`), when given, is kept alongside: its size and entries
(shaped like the members) under ``"hall_of_fame"`` in ``state.json``, its arrays in the same two
files keyed ``"hof/<entry>/..."``; checkpoints without one load with an empty one. So is a Pareto
front (:class:`tinyevo.evolution.ParetoFront`, ``"pareto_front"``, keyed ``"front/<entry>/..."``),
and a fitness that is an :class:`~tinyevo.evolution.Objectives` keeps its vector beside it
(``"objectives"``); checkpoints without a front load with none. A run's lineage
(:class:`tinyevo.evolution.lineage.Lineage`), when given, is ``lineage.json``
(:mod:`tinyevo.app._lineage_file`): its ``population``, ``hall_of_fame`` and ``front`` list the
ids of the members, entries and front entries saved, in their order, which loading gives back
to them; checkpoints without one (from before lineages were recorded) load with
``population.lineage`` None, and so, with a logged warning, does a checkpoint whose
``lineage.json`` is damaged or does not fit it (the lineage is history: the run does not need
it to go on). The folder is
swapped in atomically (:func:`tinyevo.app.io.atomic_dir`): a run killed at any moment, even
while writing, leaves the previous complete generation or the new one. Loading executes nothing
from the files (JSON, and ``.npz`` read with ``allow_pickle=False``) and checks every field of
``state.json``, and every size a model declares against its stored arrays, before it builds
anything (:mod:`tinyevo.app._validate`).

    >>> save_checkpoint("runs/digits", population, {"rng": ...})   # doctest: +SKIP
    >>> population, state = load_checkpoint("runs/digits")          # doctest: +SKIP
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from tinyevo._version import __version__
from tinyevo.app._lineage_file import LINEAGE_FILE, lineage_from_json, lineage_json, unknown
from tinyevo.app._validate import (
    Field,
    Stored,
    check_depth,
    check_graph,
    check_optimizer,
    check_rng_state,
)
from tinyevo.app.io import (
    atomic_dir,
    read_complete_dir,
    read_json,
    read_npz,
    recover_dir,
    write_json,
    write_npz,
)
from tinyevo.app.tasks import TASKS
from tinyevo.evolution.candidate import (
    CandidateDataIterMap,
    CandidateModel,
    CandidateOptModel,
    FittedCandidate,
    itermap,
)
from tinyevo.evolution.halloffame import HallOfFame
from tinyevo.evolution.iterators import BatchSizeIteratorMap
from tinyevo.evolution.lineage import Lineage, set_candidate_id
from tinyevo.evolution.objectives import SENSES, Objectives
from tinyevo.evolution.pareto import ParetoFront
from tinyevo.evolution.population import Population
from tinyevo.graph import KINDS, CompGraph
from tinyevo.optimizers import optimizer_from_spec

__all__ = ["save_checkpoint", "load_checkpoint", "stored_settings", "persist", "read_lineage",
           "CHECKPOINT_DIR", "LINEAGE_FILE"]

log = logging.getLogger("tinyevo")

CHECKPOINT_DIR = "checkpoint"
STATE_FILE = "state.json"
OPTIMIZERS_FILE = "optimizers.npz"
HOF_PREFIX = "hof/"      # the hall of fame's keys in the .npz files: "hof/<entry>/..."
FRONT_PREFIX = "front/"  # the Pareto front's: "front/<entry>/..."
# 2: with a hall of fame; 3: with objectives (a run without them still writes 2, which an
# older tinyevo reads)
FORMAT, VERSION = "tinyevo.checkpoint", 3
MAX_HALL_OF_FAME = 1_000_000
_FIX = ("restore the checkpoint from a copy, or remove its folder (or use another mdir) to "
        "start afresh")


def save_checkpoint(mdir: str | os.PathLike, population: Population, state: dict,
                    hall_of_fame: HallOfFame | None = None,
                    pareto_front: ParetoFront | None = None,
                    lineage: Lineage | None = None) -> Path:
    """Write ``population`` (evaluated; candidates holding a CompGraph and optionally their own
    optimiser), the JSON-able ``state`` and, when given, ``hall_of_fame``, ``pareto_front``
    and ``lineage`` to ``mdir/checkpoint``, atomically. The lineage file holds the ids of the
    candidates saved and their ancestry: a ValueError, before anything is written, where
    ``lineage`` has no record of one of them."""
    saved = (population.members, hall_of_fame.members if hall_of_fame is not None else [],
             pareto_front.members if pareto_front is not None else [])
    lineage_doc = None if lineage is None else lineage_json(lineage, saved)
    arrays: dict[str, Any] = {}
    opt_arrays: dict[str, Any] = {}
    doc = {"format": FORMAT, "version": 2, "tinyevo": __version__,
           "generation": population.generation,
           "members": _encode_all(population.members, "", arrays, opt_arrays), "state": state,
           "optimizer_state": OPTIMIZERS_FILE}
    if hall_of_fame is not None:
        doc["hall_of_fame"] = {"size": hall_of_fame.size,
                               "members": _encode_all(hall_of_fame.members, HOF_PREFIX, arrays,
                                                      opt_arrays)}
    if pareto_front is not None:
        doc["pareto_front"] = {"members": _encode_all(pareto_front.members, FRONT_PREFIX,
                                                      arrays, opt_arrays)}
    if _has_objectives(doc):
        doc["version"] = VERSION
    target = Path(mdir) / CHECKPOINT_DIR
    with atomic_dir(target) as tmp:
        write_npz(tmp / "members.npz", arrays)
        write_npz(tmp / OPTIMIZERS_FILE, opt_arrays)
        write_json(tmp / STATE_FILE, doc)
        if lineage_doc is not None:
            write_json(tmp / LINEAGE_FILE, lineage_doc, indent=None)
    return target


def load_checkpoint(mdir: str | os.PathLike, owner: bool = False
                    ) -> tuple[Population, dict] | None:
    """``(population, state)`` from ``mdir/checkpoint``, or None when there is none yet. The
    hall of fame is ``population.hall_of_fame`` (empty, of the default size, for a checkpoint
    that has none).

    A reader (the default) changes nothing in ``mdir``: it reads the newest complete checkpoint
    (:func:`~tinyevo.app.io.read_complete_dir`: a damaged stray ``.checkpoint.new`` is skipped),
    and reads again where a live run swapped it away mid-read. Only the run that owns ``mdir``
    passes ``owner=True``, which first finishes a swap that a crash interrupted
    (:func:`~tinyevo.app.io.recover_dir`).

    A damaged or edited checkpoint raises ``ValueError`` naming the file and the field."""
    path = Path(mdir) / CHECKPOINT_DIR
    if owner:
        folder = recover_dir(path, check=_load)
        return None if folder is None else _load(folder)
    return read_complete_dir(path, _load)


def stored_settings(mdir: str | os.PathLike) -> dict | None:
    """The settings (``FitConfig`` as JSON) the newest complete checkpoint in ``mdir`` was made
    with, read without building its models; None where there is none or it does not read.
    Changes nothing in ``mdir``."""
    try:
        doc = read_complete_dir(Path(mdir) / CHECKPOINT_DIR,
                                lambda folder: read_json(folder / STATE_FILE))
        config = doc["state"]["config"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return config if isinstance(config, dict) else None


def _load(folder: Path) -> tuple[Population, dict]:
    state_file = folder / STATE_FILE
    doc = read_json(state_file)
    headline = f"{state_file} is damaged"
    check_depth(doc, headline, _FIX)
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise ValueError(f"{state_file} is not a tinyevo checkpoint; use another mdir")
    root = Field(doc, headline, _FIX, state_file)
    if root["version"].integer(1) > VERSION:
        raise ValueError(f"{folder} was written by tinyevo {doc.get('tinyevo')} (checkpoint "
                         f"version {doc['version']}); upgrade tinyevo to resume it")
    arrays = read_npz(folder / "members.npz")
    _check_document(root, Stored(arrays, f"{folder / 'members.npz'} is damaged", _FIX))
    # Optimiser state (moments, step counts); checkpoints from before it was kept have none.
    opt_path = folder / OPTIMIZERS_FILE
    if doc.get("optimizer_state") and not opt_path.exists():
        raise ValueError(f"{folder} is damaged: {OPTIMIZERS_FILE} (the optimisers' state) is "
                         "missing, so the run cannot go on as it would have; remove the folder "
                         "or use another mdir")
    opt_arrays = read_npz(opt_path) if opt_path.exists() else {}
    fame = doc.get("hall_of_fame")       # absent in checkpoints from before it was kept
    entries = fame.get("members", []) if isinstance(fame, dict) else []
    front = doc.get("pareto_front")      # only in runs with objectives
    front_entries = front.get("members", []) if isinstance(front, dict) else []
    lists = (("", doc.get("members", [])), (HOF_PREFIX, entries),
             (FRONT_PREFIX, front_entries))
    with_opt = {f"{tag}{i}/" for tag, docs in lists for i, m in enumerate(docs)
                if isinstance(m, dict) and m.get("optimizer") is not None}
    stray = [k for k in opt_arrays if _owner(k) not in with_opt]
    if stray:
        raise ValueError(f"{folder} is damaged: optimiser state {stray[0]!r} belongs to no member "
                         "with an optimiser; remove the folder or use another mdir")
    lineage = _fitting_lineage(folder, root)
    try:
        decoded = [_decode_all(docs, tag, arrays, opt_arrays) for tag, docs in lists]
        if lineage is not None:
            _give_ids(lineage, decoded)
        members, fame_entries, front_list = decoded
        hall_of_fame = HallOfFame(fame["size"]) if fame is not None else HallOfFame()
        hall_of_fame.update(fame_entries)
        pareto_front = None if front is None else ParetoFront()
        if pareto_front is not None:
            pareto_front.update(front_list)
    except (KeyError, TypeError, ValueError, IndexError) as err:
        raise ValueError(f"{folder} is damaged and cannot be resumed ({err}); remove it or "
                         "use another mdir") from err
    population = Population(members, doc["generation"])
    population.hall_of_fame = hall_of_fame
    population.pareto_front = pareto_front
    population.lineage = lineage
    return population, doc.get("state", {})


def read_lineage(folder: Path) -> Lineage | None:
    """The lineage in checkpoint ``folder``, checked against its ``state.json`` (read as JSON:
    its generation and how many members and entries it holds; no model is built); None where
    it has none (a checkpoint from before lineages were recorded). A ValueError naming the file
    and the field where it is damaged or does not fit its checkpoint."""
    if not (folder / LINEAGE_FILE).exists():
        return None
    state_file = folder / STATE_FILE
    root = Field(read_json(state_file), f"{state_file} is damaged", _FIX, state_file)
    root.obj(("format", "version", "generation", "members"), None)
    root["format"].string((FORMAT,))
    root["generation"].integer(1)
    return _lineage(folder, root)


def _lineage(folder: Path, root: Field) -> Lineage | None:
    """The lineage file of checkpoint ``folder`` checked against its ``state.json`` (``root``,
    checked); None where there is none."""
    path = folder / LINEAGE_FILE
    if not path.exists():
        return None
    return lineage_from_json(read_json(path), path, root["generation"].value, _counts(root))


def _fitting_lineage(folder: Path, root: Field) -> Lineage | None:
    """The lineage of checkpoint ``folder`` (its ``state.json`` checked, ``root``); None where
    it has none, or, with a warning, where its file is damaged or does not fit the checkpoint:
    the lineage is history, and the checkpoint is whole without it."""
    try:
        return _lineage(folder, root)
    except (OSError, ValueError) as err:
        log.warning("%s\nThe checkpoint loads without its lineage: a run resumed from it records "
                    "its lineage anew from generation %d on (its lines start there) and its next "
                    "checkpoint replaces %s; to keep the old record, restore the file before "
                    "resuming.", err, root["generation"].value, folder / LINEAGE_FILE)
        return None


def _counts(root: Field) -> tuple[int, int, int]:
    """How many members, hall-of-fame entries and front entries ``state.json`` holds."""
    fame, front = root.get("hall_of_fame"), root.get("pareto_front")
    return (len(root["members"].items()),
            0 if fame is None else len(fame["members"].items()),
            0 if front is None else len(front["members"].items()))


def _give_ids(lineage: Lineage, decoded: list[list]) -> None:
    """Give the members, hall-of-fame entries and front entries their ids, in order (as many
    as there are: :func:`lineage_from_json` checked it)."""
    for ids, candidates in zip((lineage.population, lineage.hall_of_fame, lineage.front),
                               decoded):
        for i, c in zip(ids, candidates, strict=True):
            set_candidate_id(c, i)


def _check_document(root: Field, stored: Stored) -> None:
    """Every field of ``state.json`` (format and version are checked already), and every size
    its models declare against the arrays of ``members.npz``, before anything is built."""
    doc = root.obj(("format", "version", "generation", "members"),
                   ("tinyevo", "state", "optimizer_state", "hall_of_fame", "pareto_front"))
    if root.get("tinyevo") is not None:
        root["tinyevo"].string()
    root["generation"].integer(1)
    lists = [("", root["members"].items(1))]
    fame = root.get("hall_of_fame")
    if fame is not None:
        fame.obj(("size", "members"))
        fame["size"].integer(1, MAX_HALL_OF_FAME)
        lists.append((HOF_PREFIX, fame["members"].items()))
    front = root.get("pareto_front")
    if front is not None:
        front.obj(("members",))
        lists.append((FRONT_PREFIX, front["members"].items()))
    kinds = set()                     # the objectives' (names, senses) of every entry
    for tag, members in lists:
        for i, member in enumerate(members):
            member.obj(("fitness", "model"),
                       ("generation", "optimizer", "batch_size", "objectives"))
            member["fitness"].number(null=True, finite=False)   # NaN: a diverged candidate
            if "batch_size" in member.value:
                member["batch_size"].integer(1)
            if member.get("objectives") is not None:
                _check_objectives(member["objectives"])
            kinds.add(_objective_kind(member.value))
            if "generation" in member.value:
                member["generation"].integer(0, null=True)
            if member.get("optimizer") is not None:
                check_optimizer(member["optimizer"])
            check_graph(member["model"], stored, f"{tag}{i}/")
    if len(kinds) > 1:
        raise root.fail(f"the same objectives (names and senses) on every member, hall-of-fame "
                        f"and front entry, or none on all; they differ: {sorted(kinds, key=str)}")
    stored.finish()
    if root.get("optimizer_state") is not None:
        root["optimizer_state"].string((OPTIMIZERS_FILE,))
    if "state" in doc:
        _check_run_state(root["state"])


# The run state that fit keeps (and reads back to resume); a state without any of these keys
# is a caller's own (persist(mdir, state)) and only needs to be an object.
_RUN_STATE = ("config", "kind", "sample_shape", "nclasses", "rng", "name_counter")


def _check_run_state(state: Field) -> None:
    if not any(key in state.obj((), None) for key in _RUN_STATE):
        return
    state.obj(_RUN_STATE, None)
    config = state["config"]
    for key in config.obj((), None):
        _CONFIG.get(key, _plain_setting)(config[key])
    state["kind"].string(KINDS)
    for n in state["sample_shape"].items(1, 3):
        n.integer(1)
    state["nclasses"].integer(1)        # classes, or regression outputs
    if "initial" in state.value:          # fingerprints of a warm start's models
        for h in state["initial"].items():
            h.string()
    check_rng_state(state["rng"])
    state["name_counter"].integer(1)
    for key in ("elapsed", "last_seconds"):
        if key in state.value:
            state[key].number(0.0)
    final = state.get("final")
    if final is not None:
        final.obj(("fitness", "generation"), None)
        final["fitness"].number(null=True, finite=False)
        final["generation"].integer(0, null=True)


def _check_objectives(f: Field) -> None:
    """An Objectives' vector (:meth:`Objectives.to_json`): names, values and senses alike long;
    a value may be infinite (an invalid candidate's are)."""
    f.obj(("names", "values", "senses"))
    n = len(f["names"].items(1))
    for name in f["names"].items(n, n):
        name.string()
    if len(set(f["names"].value)) < n:
        raise f["names"].fail("names that differ (each objective once): names must differ")
    for value in f["values"].items(n, n):
        value.number(finite=False)
    for sense in f["senses"].items(n, n):
        sense.string(SENSES)


def _plain_setting(f: Field) -> None:
    """A setting this version does not know: a plain JSON value (fit compares it on resume)."""
    value = f.value
    if not (value is None or isinstance(value, bool | int | float | str)
            or isinstance(value, list) and all(isinstance(v, int | float | str) for v in value)):
        raise f.fail("a number, string, boolean, null or a list of numbers or strings")


def _count(lo: int, null: bool = False):
    return lambda f: f.integer(lo, null=null)


def _share(f: Field) -> None:
    f.number(0.0, 1.0, below=True)


# fit's settings (FitConfig) and what each must be; settings that fit reads from the
# checkpoint before it compares them with its own (population_size, budget_growth,
# final_training, max_macs) need their ranges, the others their types.
_CONFIG = {
    "population_size": _count(1), "batch_size": _count(1),
    "batches_per_generation": _count(1, null=True), "valid_max": _count(1, null=True),
    "seed": _count(0, null=True), "elites": _count(0),
    "budget_growth": lambda f: f.number(0.0), "max_macs": lambda f: f.number(0.0, null=True),
    "valid_fraction": _share, "fitness_ewma": _share, "final_training": _share,
    "candidate_time_limit": lambda f: f.number(0.0, null=True),
    "augment": lambda f: f.boolean(), "batch_size_search": lambda f: f.boolean(),
    "widths": lambda f: [w.integer(1) for w in f.items(2, 2)],
    "lr_schedule": lambda f: f.string(), "tiebreak": lambda f: f.string(),
    "optimizer_state": lambda f: f.string(),
    "objectives": lambda f: [n.string() for n in f.items()],
    "task": lambda f: f.string(TASKS, null=True),
    "standardize": lambda f: f.value is None or f.boolean(),
}


def persist(mdir: str | os.PathLike, state: Any = None,
            hall_of_fame: HallOfFame | None = None) -> Any:
    """The seed's ``persist`` as a callback: ``fit(..., callbacks=[persist("runs/x")])`` or
    ``persist("runs/x")(population)`` writes the population's checkpoint, with ``hall_of_fame``
    when given, and the lineage ``fit`` attaches to the population (``population.lineage``)
    where it has a record of every candidate saved (``fit`` with ``mdir`` already does this,
    with what it needs to resume)."""
    if not isinstance(mdir, str | os.PathLike):
        raise TypeError(f"persist(mdir) makes a callback that checkpoints to the folder mdir; "
                        f"it was given a {type(mdir).__name__}. Pass persist('runs/x') as the "
                        "callback, not persist itself")

    warned = False

    def callback(population: Population) -> None:
        nonlocal warned
        lineage = getattr(population, "lineage", None)
        lineage = lineage if isinstance(lineage, Lineage) else None
        fame = hall_of_fame.members if hall_of_fame is not None else []
        missing = None if lineage is None else unknown(lineage, (population.members, fame))
        if missing is not None:
            if not warned:
                log.warning("persist(%r): the lineage has no record of %s (it keeps the "
                            "ancestry of fit's own hall of fame); checkpoints are written "
                            "without it", str(mdir), missing)
                warned = True
            lineage = None
        save_checkpoint(mdir, population, state() if callable(state) else (state or {}),
                        hall_of_fame, lineage=lineage)
    return callback


# ------------------------------------------------------------------ one list of candidates
def _encode_all(candidates: list, tag: str, arrays: dict, opt_arrays: dict) -> list[dict]:
    """JSON entries for ``candidates``; their arrays go into ``arrays`` and ``opt_arrays`` keyed
    ``"<tag><index>/..."``."""
    entries = []
    for i, c in enumerate(candidates):
        prefix = f"{tag}{i}/"
        graph = c.graph()
        if not isinstance(graph, CompGraph):
            raise TypeError(f"save_checkpoint: {_label(tag, i)} holds a "
                            f"{type(graph).__name__}, expected a CompGraph")
        opt = c.opt()
        fitness = getattr(c, "fitness", None)
        entries.append({"fitness": _number(fitness),
                        "generation": getattr(c, "generation", None),
                        "optimizer": opt.to_spec() if opt is not None else None,
                        "model": graph.to_spec(), **_itermap_entry(c, _label(tag, i))})
        if isinstance(fitness, Objectives):
            entries[-1]["objectives"] = fitness.to_json()
        arrays.update({prefix + k: a for k, a in graph.arrays().items()})
        if opt is not None and hasattr(opt, "state_arrays"):
            opt_arrays.update({prefix + k: a for k, a in opt.state_arrays(graph).items()})
    return entries


def _decode_all(entries: list, tag: str, arrays: dict, opt_arrays: dict) -> list:
    """The FittedCandidates that :func:`_encode_all` wrote; ValueError for missing arrays."""
    out = []
    for i, m in enumerate(entries):
        prefix = f"{tag}{i}/"
        own = {k[len(prefix):]: a for k, a in arrays.items() if k.startswith(prefix)}
        graph = CompGraph.from_spec(m["model"], own)
        graph.validate()            # kinds of data between vertices, which the spec names
        missing = set(graph.arrays()) - set(own)
        if missing:
            raise ValueError(f"{_label(tag, i)} lacks arrays {sorted(missing)[:3]}")
        opt = m.get("optimizer")
        if opt is not None:
            optimizer = optimizer_from_spec(opt)
            optimizer.load_state_arrays(graph, {k[len(prefix):]: a for k, a in
                                                opt_arrays.items() if k.startswith(prefix)})
            cand = CandidateOptModel(optimizer, graph)
        else:
            cand = CandidateModel(graph)
        fitness = m["fitness"]
        if m.get("objectives") is not None:
            fitness = Objectives.from_json(fitness, m["objectives"])
        out.append(FittedCandidate(_with_itermap(cand, m), fitness, m.get("generation")))
    return out


def _itermap_entry(c: Any, label: str) -> dict:
    """``{"batch_size": n}`` for a candidate that trains in batches of its own size (a
    BatchSizeIteratorMap), ``{}`` for one without an iterator map; a TypeError for another map,
    which a checkpoint cannot hold."""
    mapping = itermap(c)
    if mapping is None:
        return {}
    if type(mapping) is not BatchSizeIteratorMap:
        raise TypeError(f"save_checkpoint: {label} carries the iterator map {mapping!r}; a "
                        "checkpoint holds only a BatchSizeIteratorMap's batch size")
    return {"batch_size": mapping.batch_size}


def _with_itermap(candidate: Any, entry: dict) -> Any:
    """``candidate`` training in batches of the entry's ``batch_size``, where it has one."""
    size = entry.get("batch_size")
    return candidate if size is None else CandidateDataIterMap(BatchSizeIteratorMap(size),
                                                               candidate)


def _label(tag: str, i: int) -> str:
    return {HOF_PREFIX: "hall-of-fame entry", FRONT_PREFIX: "Pareto front entry"}.get(
        tag, "member") + f" {i}"


def _owner(key: str) -> str:
    """The ``"<tag><index>/"`` prefix of an array key."""
    parts = key.split("/")
    n = 2 if parts[0] + "/" in (HOF_PREFIX, FRONT_PREFIX) else 1
    return "/".join(parts[:n]) + "/"


def _has_objectives(doc: dict) -> bool:
    """Whether the checkpoint ``doc`` holds what only version 3 reads: a Pareto front, a
    fitness with objectives or a member's own batch size."""
    entries = [*doc["members"], *doc.get("hall_of_fame", {}).get("members", [])]
    return "pareto_front" in doc or any("objectives" in e or "batch_size" in e
                                        for e in entries)


def _objective_kind(entry: dict) -> tuple | None:
    """The (names, senses) an entry's fitness is measured on, None for a plain fitness."""
    objectives = entry.get("objectives")
    return None if objectives is None else (tuple(objectives["names"]),
                                            tuple(objectives["senses"]))


def _number(x: Any) -> Any:
    try:
        return float(x)
    except (TypeError, ValueError):
        return None
