"""Lineage: where each candidate of a run came from, and what made it.

Every candidate gets an id, unique within the run, and a :class:`Step`: its parents (one; two
for a crossover's child; none for a member of the first generation), the generation it was
made in, the operations that actually changed it, the best fitness it reached and its
parameter count. ``tinyevo.fit`` records a lineage in every run (``population.lineage``) and
keeps it in its checkpoints; ``tinyevo show DIR --lineage`` prints the winner's line.

    >>> lineage = population.lineage                       # doctest: +SKIP
    >>> for step in lineage.line(lineage.winner()):        # doctest: +SKIP
    ...     print(step.generation, step.fitness, "; ".join(step.ops))

The operators report what they change (:func:`note`; a mutation that changed nothing reports
nothing), so any strategy composed of the library's operators is recorded; so is a mutation of
your own handed to ``evolve_model``, as the difference in structure it made. Recording draws
no random number and changes no model. A loop of your own records like ``fit``:

    >>> lineage = Lineage(); lineage.register(population)             # doctest: +SKIP
    >>> fitted = population.evaluate(fitness); lineage.update(fitted)  # doctest: +SKIP
    >>> with lineage.recording():                                      # doctest: +SKIP
    ...     children = strategy(fitted.members)
    >>> population = Population(children, fitted.generation + 1)      # doctest: +SKIP
    >>> lineage.register(population)                                  # doctest: +SKIP

:meth:`Lineage.update` keeps what is worth keeping, bounded: the ancestry of the living
population, of the hall of fame and of the Pareto front; the rest is pruned.
"""

from __future__ import annotations

from collections.abc import Iterable
from contextlib import AbstractContextManager
from dataclasses import dataclass, replace
from typing import Any

from tinyevo.evolution import _births as births
from tinyevo.evolution._births import note, note_crossed
from tinyevo.evolution.halloffame import finite_number

__all__ = ["Step", "Lineage", "candidate_id", "set_candidate_id", "note", "note_crossed",
           "FORMAT", "VERSION"]

FORMAT, VERSION = "tinyevo.lineage", 1


@dataclass(frozen=True)
class Step:
    """One candidate of a run: ``id``, ``parents`` (ids; ``()`` in the first generation, two
    for a crossover's child, the one it grew from first), the ``generation`` it was made in
    (1: the initial population), ``ops`` (what changed it, in order), the best ``fitness`` it
    reached (None: not evaluated) and its parameter count ``nparams``.

        >>> Step(7, (3,), 2, ("NoutMutation conv_4 16->19",), 0.91, 5210).kind
        'mutation'
    """

    id: int
    parents: tuple[int, ...]
    generation: int
    ops: tuple[str, ...]
    fitness: float | None = None
    nparams: int | None = None

    @property
    def kind(self) -> str:
        """"initial" (no parents), "crossover" (two parents or a crossover operation),
        "mutation" (operations) or "copy" (a child nothing changed)."""
        if not self.parents:
            return "initial"
        if len(self.parents) > 1 or any("Crossover" in op.split(" ", 1)[0] for op in self.ops):
            return "crossover"
        return "mutation" if self.ops else "copy"

    def to_json(self) -> dict:
        return {"id": self.id, "parents": list(self.parents), "generation": self.generation,
                "ops": list(self.ops), "fitness": self.fitness, "nparams": self.nparams}


class Lineage:
    """The steps of a run by id (``records``), and the ids it keeps them for: ``population``
    (the last generation, best first), ``hall_of_fame`` (best first) and ``front`` (the Pareto
    front; empty for one objective). ``next_id`` is the id the next candidate gets.

        >>> steps = [Step(1, (), 1, ()), Step(2, (1,), 2, ("RemoveVertexMutation bn_3",))]
        >>> lineage = Lineage(steps, population=[2])
        >>> [s.id for s in lineage.line(2)], sorted(lineage.ancestry([2]))
        ([1, 2], [1, 2])
    """

    def __init__(self, records: Iterable[Step] = (), population: Iterable[int] = (),
                 hall_of_fame: Iterable[int] = (), front: Iterable[int] = (),
                 next_id: int | None = None) -> None:
        self.records: dict[int, Step] = {s.id: s for s in records}
        self.population, self.hall_of_fame = list(population), list(hall_of_fame)
        self.front = list(front)
        self.next_id = next_id if next_id is not None else max(self.records, default=0) + 1

    # ------------------------------------------------------------------ reading
    def line(self, id: int) -> list[Step]:
        """The steps from the first-generation ancestor of ``id`` (following each first
        parent) to ``id`` itself, oldest first."""
        if id not in self.records:
            raise KeyError(f"the lineage has no candidate #{id}: it keeps "
                           f"{len(self.records)} (the ancestry of the last population, the "
                           "hall of fame and the front)")
        steps = [self.records[id]]
        while steps[-1].parents and steps[-1].parents[0] in self.records:
            steps.append(self.records[steps[-1].parents[0]])
        return steps[::-1]

    def ancestry(self, ids: Iterable[int]) -> set[int]:
        """``ids`` and every ancestor of theirs on record (through all parents)."""
        seen: set[int] = set()
        todo = [i for i in ids if i in self.records]
        while todo:
            i = todo.pop()
            if i not in seen:
                seen.add(i)
                todo.extend(p for p in self.records[i].parents if p in self.records)
        return seen

    def winner(self) -> int | None:
        """The id of the run's best: the hall of fame's first, else the population's first;
        None for an empty lineage."""
        for ids in (self.hall_of_fame, self.population):
            if ids:
                return ids[0]
        return None

    def __len__(self) -> int:
        return len(self.records)

    def __repr__(self) -> str:
        return (f"Lineage({len(self.records)} candidates, population {len(self.population)}, "
                f"hall of fame {len(self.hall_of_fame)}, next id {self.next_id})")

    # ------------------------------------------------------------------ recording
    def recording(self) -> AbstractContextManager[None]:
        """Record the children made in this block: ``with lineage.recording(): children =
        strategy(members)``, then :meth:`register` the population they form."""
        return births.recording()

    def register(self, population: Iterable[Any], generation: int | None = None) -> None:
        """Give each candidate of ``population`` (a Population, or candidates made in
        ``generation``) that has no id yet its id and step: a child recorded while it was
        made, with its parents and operations; any other (a first generation, a candidate
        made outside a recording) without parents. Members with an id (elites) keep it."""
        if generation is None:
            generation = getattr(population, "generation", None)
        if not (isinstance(generation, int) and generation >= 1):
            raise TypeError(f"Lineage.register: expected a Population, or candidates and the "
                            f"generation they were made in (an int >= 1), got generation "
                            f"{generation!r}")
        for c in getattr(population, "members", population):
            tag = births.tag_of(c)
            if isinstance(tag, int) and tag in self.records:
                continue
            if isinstance(tag, births.Birth) and tag.id is not None:
                births.set_tag(c, tag.id)
                continue
            birth = tag if isinstance(tag, births.Birth) else births.Birth()
            birth.id, self.next_id = self.next_id, self.next_id + 1
            parents = tuple(dict.fromkeys(p for p in map(self._resolve, birth.parents)
                                          if p is not None))
            self.records[birth.id] = Step(birth.id, parents, int(generation),
                                          tuple(self._text(op) for op in birth.ops))
            births.set_tag(c, birth.id)

    def update(self, population: Iterable[Any], hall_of_fame: Iterable[Any] = (),
               front: Iterable[Any] = ()) -> None:
        """Take an evaluated generation: each member's best fitness and parameter count; the
        ids of ``population`` (best first), ``hall_of_fame`` and ``front`` as the ones to
        keep; every other candidate pruned but their ancestors. A candidate the lineage has no
        record of (never registered) is in none of the lists: ``save_checkpoint`` refuses to
        save it with the lineage."""
        members = list(getattr(population, "members", population))
        for c in members:
            i = births.tag_of(c)
            if isinstance(i, int) and i in self.records:
                self.records[i] = _evaluated(self.records[i], c)
        self.population = _ids(members, self.records)
        self.hall_of_fame = _ids(hall_of_fame, self.records)
        self.front = _ids(front, self.records)
        kept = self.ancestry([*self.population, *self.hall_of_fame, *self.front])
        self.records = {i: s for i, s in self.records.items() if i in kept}

    def copy(self) -> Lineage:
        """An independent copy (steps are immutable; the lists and the dict are new)."""
        return Lineage(self.records.values(), self.population, self.hall_of_fame, self.front,
                       self.next_id)

    # ------------------------------------------------------------------ JSON
    def to_json(self) -> dict:
        """The lineage as JSON: steps by increasing id (a checkpoint's ``lineage.json`` is
        this, read back and checked by :mod:`tinyevo.app.checkpoint`)."""
        return {"format": FORMAT, "version": VERSION, "next_id": self.next_id,
                "population": list(self.population), "hall_of_fame": list(self.hall_of_fame),
                "front": list(self.front),
                "records": [self.records[i].to_json() for i in sorted(self.records)]}

    # ------------------------------------------------------------------ helpers
    def _resolve(self, ref: int | births.Birth) -> int | None:
        """The id a parent reference stands for: an id on record; a registered birth's id;
        for a child of the same call never registered, its own first parent's."""
        while isinstance(ref, births.Birth):
            if ref.id is not None:
                ref = ref.id
            elif ref.parents:
                ref = ref.parents[0]
            else:
                return None
        return ref if ref in self.records else None

    def _text(self, op: str | tuple) -> str:
        if isinstance(op, str):
            return op
        name, other, detail = op
        other = None if other is None else self._resolve(other)
        return f"{name} with #{other}: {detail}" if other is not None else f"{name}: {detail}"


def candidate_id(c: Any) -> int | None:
    """The id a lineage gave candidate ``c`` (a snapshot has its original's); None for a
    candidate no lineage registered.

        >>> candidate_id(population.hall_of_fame.best())    # doctest: +SKIP
        231
    """
    tag = births.tag_of(c)
    return tag if isinstance(tag, int) else None


def set_candidate_id(c: Any, id: int) -> None:
    """Give candidate ``c`` the id ``id`` (what loading a checkpoint does)."""
    births.set_tag(c, int(id))


def _ids(candidates: Iterable[Any], records: dict) -> list[int]:
    return [i for i in map(births.tag_of, candidates) if isinstance(i, int) and i in records]


def _evaluated(step: Step, c: Any) -> Step:
    """``step`` with the fitness of ``c`` where it is the best so far, and its parameters."""
    fitness = getattr(c, "fitness", None)
    better = finite_number(fitness) and (step.fitness is None or fitness > step.fitness)
    graph = c.graph() if callable(getattr(c, "graph", None)) else None
    count = getattr(graph, "nparams", None)
    return replace(step, fitness=float(fitness) if better else step.fitness,
                   nparams=int(count()) if callable(count) else step.nparams)


