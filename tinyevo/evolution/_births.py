"""The recording behind :mod:`tinyevo.evolution.lineage`: who a child came from and what
changed it, reported by the operators while the child is made.

While a lineage records (``with lineage.recording(): children = strategy(members)``), every
child that :func:`~tinyevo.evolution.candidate.new_candidate` makes gets a *birth*: the tags of
its parents and the operations that changed it. Operators report into the birth of the child
being made: a mutation with :func:`note` (``"NoutMutation conv_12 32->38"``), a crossover with
:func:`note_crossed` for one side of the pair (the other parent then counts as a parent too).
Two rules keep the record true to the child:

- a child made from a child of the same call (a crossover's child, then mutated) is one birth:
  its parents and operations are the first child's, followed by its own;
- :func:`edit` compares a model's structure before and after a mutation: when nothing changed
  (the changes undid each other, or the mutation gave the parent's model back) the reports are
  dropped; when the mutation changed the structure but reported nothing (a mutation of your
  own), the difference is recorded.

Outside a recording every function here returns at once. Nothing here draws a random number
or changes a model: a recorded run is the run that was not recorded.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

__all__ = ["Birth", "recording", "making", "crossing", "born", "note", "note_crossed",
           "crossed_mark", "drop_crossed", "edit",
           "tag_of", "set_tag", "same_candidate", "structure", "what", "change"]

TAG = "_lineage"          # the attribute a candidate carries its tag in: an id, or a Birth
MAX_DIFF_ITEMS = 6        # of a structure difference recorded for a mutation that reported none

# The frames of the recording (None: not recording): a Birth while a child is made, a
# _Crossing while a pair is crossed over.
_FRAMES: ContextVar[list | None] = ContextVar("tinyevo_lineage_frames", default=None)


class Birth:
    """A child not yet registered: its parents (ids, or Births of children of the same
    call) and its operations (texts, or ``(name, other parent, detail)`` of a crossover);
    ``id`` once :meth:`Lineage.register` gives it one."""

    __slots__ = ("parents", "ops", "id")

    def __init__(self, parents: list | None = None, ops: list | None = None) -> None:
        self.parents: list = list(parents or ())
        self.ops: list = list(ops or ())
        self.id: int | None = None

    def __repr__(self) -> str:
        return f"Birth(parents={self.parents}, {len(self.ops)} ops, id={self.id})"


class _Crossing:
    """A pair being crossed over: a birth per side, which the ``new_candidate`` of that side's
    parent takes up."""

    def __init__(self, a: Any, b: Any) -> None:
        self.sources = [a, b]
        self.births = [_birth_from(tag_of(a)), _birth_from(tag_of(b))]
        self.others = [tag_of(b), tag_of(a)]
        self.taken = [False, False]
        self.starts = [len(birth.ops) for birth in self.births]   # ops from before this pair

    def take(self, parent: Any) -> Birth | None:
        """The birth of ``parent``'s side, the other parent among its parents where a
        crossover of this pair changed it; None where ``parent`` is neither side (or its side
        is taken)."""
        for side in (0, 1):
            if not self.taken[side] and self.sources[side] is parent:
                self.taken[side] = True
                birth, other = self.births[side], self.others[side]
                crossed = any(isinstance(op, tuple) for op in birth.ops[self.starts[side]:])
                if crossed and other is not None and other not in birth.parents:
                    birth.parents.append(other)
                return birth
        return None


@contextmanager
def recording() -> Iterator[None]:
    """Record births in this block (what :meth:`Lineage.recording` opens)."""
    token = _FRAMES.set([])
    try:
        yield
    finally:
        _FRAMES.reset(token)


@contextmanager
def making(parent: Any) -> Iterator[Birth | None]:
    """The birth of the child being made from ``parent`` in this block, or None where there
    is nothing to record: not recording, or inside the making of a child already (a wrapper
    candidate's ``new_candidate`` mapping the candidate it wraps)."""
    frames = _FRAMES.get()
    if frames is None or (frames and isinstance(frames[-1], Birth)):
        yield None
        return
    birth = frames[-1].take(parent) if frames else None
    frames.append(birth if birth is not None else _birth_from(tag_of(parent)))
    try:
        yield frames[-1]
    finally:
        frames.pop()


@contextmanager
def crossing(a: Any, b: Any) -> Iterator[None]:
    """Cross candidates ``a`` and ``b`` in this block: crossovers report per side
    (:func:`note_crossed`), and the children that ``new_candidate`` makes of ``a`` and ``b``
    take those births."""
    frames = _FRAMES.get()
    if frames is None or (frames and isinstance(frames[-1], Birth)):
        yield
        return
    frames.append(_Crossing(a, b))
    try:
        yield
    finally:
        frames.pop()


def born(child: Any, birth: Birth | None, parent: Any) -> Any:
    """``child`` tagged with ``birth`` (made by :func:`making`), unless there is none or the
    child is its parent."""
    if birth is not None and child is not parent:
        set_tag(child, birth)
    return child


def note(text: str) -> None:
    """Report what changed the child being made, e.g. ``"NoutMutation conv_12 32->38"``;
    nothing happens outside a recording. Call it from a mutation of your own only where it
    changed something. A model mutation is recorded by its structure: where the model comes
    out with the structure it went in with, what was noted while it ran is dropped
    (:func:`edit`)."""
    frames = _FRAMES.get()
    if frames and isinstance(frames[-1], Birth):
        frames[-1].ops.append(str(text))


def note_crossed(side: int, name: str, detail: str) -> None:
    """Report that crossover ``name`` changed the child of ``side`` (0: the pair's first) with
    what it took from the other parent, e.g. ``note_crossed(0, "CrossoverSwap", "segment
    conv_40..bn_44")``, recorded as ``"CrossoverSwap with #231: segment conv_40..bn_44"``."""
    crossing = _crossing()
    if crossing is not None:
        crossing.births[side].ops.append((name, crossing.others[side], detail))


def crossed_mark() -> list[int] | None:
    """Where the reports of each side of the pair being crossed stand now (for
    :func:`drop_crossed`); None outside a recorded crossover."""
    crossing = _crossing()
    return None if crossing is None else [len(b.ops) for b in crossing.births]


def drop_crossed(mark: list[int] | None, side: int) -> None:
    """Drop what ``side`` was reported since ``mark``: crossovers whose changes undid each
    other (learning rates swapped, then the optimisers swapped back) changed nothing."""
    crossing = _crossing()
    if crossing is not None and mark is not None:
        del crossing.births[side].ops[mark[side]:]


def edit(model: Any, mutation: Callable[[Any], Any], name: str) -> Any:
    """``mutation(model)``, checked against the structure ``model`` had while a child is made:
    reports of a mutation that changed nothing are dropped, and a change that mutation
    ``name`` did not report is recorded as the difference."""
    frames = _FRAMES.get()
    if not frames or not isinstance(frames[-1], Birth):
        return mutation(model)
    birth = frames[-1]
    start, before = len(birth.ops), structure(model)
    out = mutation(model)
    after = structure(out)
    if before is None or after is None:
        return out
    if after == before:
        del birth.ops[start:]
    elif len(birth.ops) == start:
        birth.ops.append(f"{name}: {_difference(before, after)}")
    return out


# ------------------------------------------------------------------------------ tags
def tag_of(c: Any) -> int | Birth | None:
    """The lineage tag of candidate ``c``: its id, a Birth not yet registered, or None."""
    tag = getattr(c, TAG, None)
    return tag if isinstance(tag, int | Birth) and not isinstance(tag, bool) else None


def set_tag(c: Any, tag: int | Birth | None) -> None:
    """Tag candidate ``c``; a candidate that takes no attributes (slots) keeps none."""
    try:
        object.__setattr__(c, TAG, tag)     # also on a frozen dataclass
    except (AttributeError, TypeError):
        pass


def same_candidate(copy: Any, original: Any) -> Any:
    """``copy`` with the tag of ``original``: a snapshot is the same candidate."""
    set_tag(copy, tag_of(original))
    return copy


# ------------------------------------------------------------------------------ structure
def structure(model: Any) -> dict | None:
    """What a mutation may change in ``model``: per vertex (by name) its layer or operation,
    its inputs and its size; per layer of a layer sequence its description; None for
    anything else."""
    vertices = getattr(model, "vertices", None)
    if isinstance(vertices, list):
        return {v.name: (what(v), tuple(u.name for u in v.inputs), v.nout) for v in vertices}
    layers = getattr(model, "layers", None)
    if callable(layers):
        return {str(i): (repr(layer), (), 0) for i, layer in enumerate(layers())}
    return None


def change(old: float, new: float) -> str:
    """``"old->new"`` with the fewest significant digits (3 or more) that tell them apart.

        >>> change(0.001234, 0.0012351)
        '0.001234->0.001235'
    """
    digits = next((k for k in range(3, 17) if f"{old:.{k}g}" != f"{new:.{k}g}"), 17)
    return f"{old:.{digits}g}->{new:.{digits}g}"


def what(v: Any) -> str:
    """What vertex ``v`` computes, shortly: its layer (``Conv(3x3, 8 => 16, relu)``) or its
    operation (``concat``)."""
    layer = getattr(v, "layer", None)
    return repr(layer) if layer is not None else str(getattr(v, "op", "?"))


def _difference(before: dict, after: dict) -> str:
    items = [f"+{n} {after[n][0]}" for n in after if n not in before]
    items += [f"-{n}" for n in before if n not in after]
    for n in after:
        if n not in before or before[n] == after[n]:
            continue
        (w0, i0, s0), (w1, i1, s1) = before[n], after[n]
        if w0 != w1:
            items.append(f"{n} {w0}->{w1}")
        elif s0 != s1:
            items.append(f"{n} {s0}->{s1}")
        else:
            items.append(f"{n} inputs {','.join(i0)}->{','.join(i1)}")
    more = len(items) - MAX_DIFF_ITEMS
    return ", ".join(items[:MAX_DIFF_ITEMS]) + (f" and {more} more" if more > 0 else "")


def _crossing() -> _Crossing | None:
    """The pair being crossed over, innermost first; None outside a recorded crossover."""
    return next((f for f in reversed(_FRAMES.get() or ()) if isinstance(f, _Crossing)), None)


def _birth_from(tag: int | Birth | None) -> Birth:
    """The birth of a child of a candidate tagged ``tag``: of a registered candidate (or one
    registered since), a child; of a child not yet registered, that child's birth continued."""
    if isinstance(tag, Birth) and tag.id is None:
        return Birth(tag.parents, tag.ops)
    if isinstance(tag, Birth):
        return Birth([tag.id])
    return Birth([] if tag is None else [tag])
