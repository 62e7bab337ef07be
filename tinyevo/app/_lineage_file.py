"""``lineage.json``, a checkpoint's lineage: written from the candidates the checkpoint saves,
read back checked against them.

The file holds ``format``, ``version``, ``next_id``, the ids of ``population``,
``hall_of_fame`` and ``front`` (one per member, hall-of-fame entry and front entry of the
checkpoint, in their order) and ``records``, one object per step (``id``, ``parents``,
``generation``, ``ops``, ``fitness``, ``nparams``) by increasing id: the ancestry of what the
checkpoint saves. Reading checks every field with :class:`tinyevo.app._validate.Field`, and
that the file fits its checkpoint: as many ids as entries, no step made after the
checkpoint's generation.

    >>> doc = lineage_json(lineage, (members, fame, front))                     # doctest: +SKIP
    >>> lineage_from_json(doc, "lineage.json", generation=7, counts=(6, 5, 0))  # doctest: +SKIP
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from tinyevo.app._validate import Field
from tinyevo.evolution.lineage import FORMAT, VERSION, Lineage, Step, candidate_id

__all__ = ["LINEAGE_FILE", "LISTS", "lineage_json", "unknown", "lineage_from_json"]

LINEAGE_FILE = "lineage.json"
LISTS = ("population", "hall_of_fame", "front")   # the id lists, in the checkpoint's order
_WHAT = ("member", "hall-of-fame entry", "Pareto front entry")
_STEP_KEYS = ("id", "parents", "generation", "ops", "fitness", "nparams")
_FIX = ("restore it from a copy, or remove it (the lineage is then recorded anew from this "
        "checkpoint on)")


def lineage_json(lineage: Lineage, saved: Sequence[Iterable[Any]]) -> dict:
    """The lineage file of a checkpoint that saves ``saved`` (its members, hall-of-fame
    entries and front entries): their ids in their order, and the steps of their ancestry. A
    ValueError where ``lineage`` has no record of one of them (never registered, or pruned)."""
    saved = [list(candidates) for candidates in saved]
    missing = unknown(lineage, saved)
    if missing is not None:
        raise ValueError(f"save_checkpoint: the lineage has no record of {missing}; register "
                         "the candidates (Lineage.register) and update the lineage with the "
                         "population, hall of fame and front being saved (Lineage.update), or "
                         "save without a lineage")
    ids = [[candidate_id(c) for c in candidates] for candidates in saved]
    kept = lineage.ancestry(itertools.chain.from_iterable(ids))
    return Lineage([lineage.records[i] for i in sorted(kept)], *ids,
                   next_id=lineage.next_id).to_json()


def unknown(lineage: Lineage, saved: Sequence[Iterable[Any]]) -> str | None:
    """The first of ``saved`` (members, hall-of-fame entries, front entries) that ``lineage``
    has no record of, as words ("hall-of-fame entry 3"); None where it knows every one."""
    for what, candidates in zip(_WHAT, saved):
        for k, c in enumerate(candidates):
            if candidate_id(c) not in lineage.records:
                return f"{what} {k}"
    return None


def lineage_from_json(doc: Any, file: str | Path, generation: int,
                      counts: Sequence[int]) -> Lineage:
    """The lineage in ``doc``, read from ``file`` of a checkpoint of ``generation`` that
    holds ``counts`` members, hall-of-fame entries and front entries: every field checked,
    and that it fits the checkpoint. A ValueError naming the file and the field."""
    root = Field(doc, f"{file} is damaged or does not fit its checkpoint", _FIX, file)
    root.obj(("format", "version"), None)
    root["format"].string((FORMAT,))
    version = root["version"].integer(1)
    if version > VERSION:
        raise ValueError(f"{file}: lineage version {version} was written by a newer tinyevo "
                         f"(this one reads up to {VERSION}); upgrade tinyevo")
    root.obj(("format", "version", "next_id", *LISTS, "records"))
    steps: dict[int, Step] = {}
    for r in root["records"].items():
        step = _step(r, generation)
        if step.id in steps:
            raise r["id"].fail(f"an id no record before it has (#{step.id} comes twice)")
        for p in step.parents:
            if p not in steps or steps[p].generation >= step.generation:
                raise r["parents"].fail(f"ids of records before it (records come by "
                                        f"increasing id) made before generation "
                                        f"{step.generation}; #{p} is "
                                        + ("not among them" if p not in steps else
                                           f"made in generation {steps[p].generation}"))
        steps[step.id] = step
    next_id = root["next_id"].integer(max(steps, default=0) + 1)
    lists = []
    for name, what, count in zip(LISTS, _WHAT, counts):
        items = root[name].items()
        if len(items) != count:
            raise root[name].fail(f"{count} ids, one per {what} of the checkpoint")
        for i in items:
            if i.integer(1) not in steps:
                raise i.fail("the id of a record")
        lists.append([i.value for i in items])
    return Lineage(steps.values(), *lists, next_id=next_id)


def _step(r: Field, generation: int) -> Step:
    r.obj(_STEP_KEYS)
    made = r["generation"].integer(1)
    if made > generation:
        raise r["generation"].fail(f"a generation up to the checkpoint's ({generation})")
    ops = r["ops"].items()
    for op in ops:
        if not isinstance(op.value, str):
            raise op.fail("a string")
    return Step(r["id"].integer(1), tuple(p.integer(1) for p in r["parents"].items()), made,
                tuple(op.value for op in ops), r["fitness"].number(null=True),
                r["nparams"].integer(0, null=True))
