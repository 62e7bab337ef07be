"""Mutation shields: protect a vertex from mutation, optionally allowing chosen mutation types.

The graph stores a plain flag (``vertex.shielded``); a :class:`MutationShield` given to
``VertexSpace(..., shielded=MutationShield(allow=(...)))`` also says which mutations may still
touch the vertex. Mutation operators ask :func:`is_shielded`:

    >>> shield = MutationShield(allow=("KernelSizeMutation", "ActivationFunctionMutation"))
    >>> v = VertexSpace(DenseSpace(3, "relu"), shielded=shield)(input_vertex("in", 2))
    >>> v.shielded, is_shielded(v), is_shielded(v, KernelSizeMutation())
    (True, True, False)

The allow-list lives on the vertex's layer, so it survives ``CompGraph.copy`` and is kept by
``CompGraph.to_spec``/``from_spec`` (as class names). A merge vertex (concat/add) can only be
fully shielded.

:func:`rescale_vertex` makes the fixed, fully shielded ``Rescale`` vertex that standardises a
model's input or turns its output into the targets' units:

    >>> v = rescale_vertex(input_vertex("in", 2), *standardizer(x)); is_shielded(v)
    True
"""

from __future__ import annotations

import weakref
from collections.abc import Iterable
from typing import Any

from tinyevo.graph import Vertex, vertex
from tinyevo.layers import Rescale

__all__ = ["MutationShield", "is_shielded", "mutation_shield", "set_shield", "rescale_vertex"]

_ATTR = "mutation_shield"
_MERGE_SHIELDS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


class MutationShield:
    """MutationShield(allow=()): shields a vertex from every mutation except the ``allow`` types.

    ``allow`` holds mutation classes or their names (names avoid importing the mutation module);
    a mutation is allowed when its class or one of its base classes is listed.
    """

    __slots__ = ("allow",)

    def __init__(self, allow: Iterable[type | str] = ()) -> None:
        if isinstance(allow, (str, type)):
            allow = (allow,)
        names = []
        for a in allow:
            if isinstance(a, type):
                names.append(a.__name__)
            elif isinstance(a, str) and a:
                names.append(a)
            else:
                raise TypeError(f"MutationShield allow takes mutation classes or class names, "
                                f"got {a!r}")
        self.allow = frozenset(names)

    def allows(self, mutation: Any) -> bool:
        """True when ``mutation`` (an instance or a class) may change the shielded vertex."""
        cls = mutation if isinstance(mutation, type) else type(mutation)
        return any(c.__name__ in self.allow for c in cls.__mro__)

    def __bool__(self) -> bool:
        return True

    def __eq__(self, other: object) -> bool:
        return isinstance(other, MutationShield) and other.allow == self.allow

    def __hash__(self) -> int:
        return hash(self.allow)

    def __repr__(self) -> str:
        return f"MutationShield(allow={tuple(sorted(self.allow))})"


def set_shield(v: Any, shield: bool | MutationShield) -> None:
    """Shield ``v`` fully (True), with an allow-list (a MutationShield) or not at all (False)."""
    if shield is False or shield is None:
        v.shielded = False
        if v.layer is not None and hasattr(v.layer, _ATTR):
            delattr(v.layer, _ATTR)
        _MERGE_SHIELDS.pop(v, None)
        return
    if shield is not True and not isinstance(shield, MutationShield):
        raise TypeError(f"shielded must be True, False or a MutationShield, got {shield!r}")
    v.shielded = True
    if isinstance(shield, MutationShield) and shield.allow:
        if v.layer is not None:
            setattr(v.layer, _ATTR, shield)
        else:
            _MERGE_SHIELDS[v] = shield


def mutation_shield(v: Any) -> MutationShield | None:
    """The shield of ``v``: None when it may be mutated, else a MutationShield (empty allow-list
    for a full shield, graph inputs included)."""
    if v.is_input:
        return MutationShield()
    if not v.shielded:
        return None
    shield = getattr(v.layer, _ATTR, None) if v.layer is not None else _MERGE_SHIELDS.get(v)
    if isinstance(shield, (frozenset, set, tuple, list)):   # as a loaded graph spec holds it
        shield = MutationShield(shield)
    return shield if shield is not None else MutationShield()


def is_shielded(v: Any, mutation: Any = None) -> bool:
    """True when ``v`` must not be changed by ``mutation`` (any mutation when None).

    Graph inputs are always shielded; an unshielded vertex never is.
    """
    shield = mutation_shield(v)
    if shield is None:
        return False
    return mutation is None or not shield.allows(mutation)


def rescale_vertex(inp: Vertex, scale: Any, offset: Any, name: str | None = None) -> Vertex:
    """A fully shielded vertex computing ``Rescale(scale, offset)`` on ``inp``: no mutation
    changes it and crossover never cuts at it (its entries follow only where ``inp``'s size
    changes: new ones are scale 1, offset 0).

        >>> out = rescale_vertex(head, *destandardizer(y_train), name="to_units")
    """
    if not isinstance(inp, Vertex):
        raise TypeError(f"rescale_vertex: expected a Vertex as input, got {type(inp).__name__}")
    layer = Rescale(scale, offset)
    if layer.nin != inp.nout:
        raise ValueError(f"rescale_vertex: {inp.name!r} outputs {inp.nout} features/channels "
                         f"but scale and offset have {layer.nin} entries; pass one per "
                         "feature/channel")
    return vertex(layer, inp, name=name, shielded=True)
