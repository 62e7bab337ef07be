"""Weight inits for the layers a search space draws (the seed's ``AbstractWeightInit`` family).

``DefaultWeightInit`` draws fresh weights. ``IdentityWeightInit`` makes every new layer an
identity map, so that inserting what a space draws into a trained network (``AddVertexMutation``)
does not change its function; ``PartialIdentityWeightInit`` passes a slice of the input channels
through, so the paths of a fork concatenate back to the identity; ``ZeroWeightInit`` zeroes.

    >>> DenseSpace(4, "relu")(4, weightinit=IdentityWeightInit()).activation
    'identity'
"""

from __future__ import annotations

from tinyevo.layers import activations as _activations

__all__ = ["WeightInit", "DefaultWeightInit", "IdentityWeightInit",
           "PartialIdentityWeightInit", "ZeroWeightInit"]


class WeightInit:
    """How a layer space initialises the Dense/Conv/BatchNorm layers it draws."""

    init = "glorot_uniform"
    """The ``init=`` name given to Dense and Conv."""
    identity = False
    """True for inits meant to keep the network's function (identity, partial identity)."""
    activation: str | None = None
    """Activation forced on every drawn layer, or None to keep the space's draw."""

    def layer_activation(self, drawn: str) -> str:
        return drawn if self.activation is None else self.activation

    def after_absorb(self) -> WeightInit:
        """The init for the layers after the first one that sets its own size."""
        return self

    def full(self) -> WeightInit:
        """This init without a channel offset (what a residual branch gets)."""
        return self

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other) and vars(self) == vars(other)

    def __hash__(self) -> int:
        return hash((type(self).__name__, tuple(sorted(vars(self).items()))))

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({args})"


class DefaultWeightInit(WeightInit):
    """Fresh random weights (``init`` "glorot_uniform" as Flux, or "he")."""

    def __init__(self, init: str = "glorot_uniform") -> None:
        if init not in ("glorot_uniform", "he"):
            raise ValueError(f"DefaultWeightInit init must be 'glorot_uniform' or 'he', got "
                             f"{init!r}; use IdentityWeightInit/ZeroWeightInit for the others")
        self.init = init


class IdentityWeightInit(WeightInit):
    """Dense/Conv as identity maps (a Dirac kernel for Conv, "same" padding), BatchNorm exactly
    the identity in inference (gamma = sqrt(1 + eps)).

    A layer is only an identity map with an activation that is one, so by default every layer
    made with this init gets ``activation="identity"``; pass ``activation=None`` to keep the
    space's draw (then the function is kept only where the activation passes its input through,
    e.g. relu after relu). Strided layers and layers narrower than their input cannot be
    identities: they keep the first channels.
    """

    identity = True
    init = "identity"

    def __init__(self, activation: str | None = "identity") -> None:
        if activation is not None:
            _activations.get(activation)
        self.activation = activation

    def at_offset(self, offset: int) -> PartialIdentityWeightInit:
        """The partial identity for a fork path whose channels start ``offset`` further on."""
        return PartialIdentityWeightInit(getattr(self, "offset", 0) + offset, self.activation)


class PartialIdentityWeightInit(IdentityWeightInit):
    """An identity that passes input channels ``offset .. offset + nout - 1`` through.

    ``ForkArchSpace`` gives path i the offset of the channels before it, so the concatenation of
    the paths is the identity again (when their sizes add up to the input's). Only the first
    layer of a path that sets its own size selects the slice; the layers after it get
    :class:`IdentityWeightInit`.
    """

    def __init__(self, offset: int = 0, activation: str | None = "identity") -> None:
        super().__init__(activation)
        if not isinstance(offset, int) or offset < 0:
            raise ValueError(f"PartialIdentityWeightInit offset must be an int >= 0, got "
                             f"{offset!r}")
        self.offset = offset

    def after_absorb(self) -> WeightInit:
        return IdentityWeightInit(self.activation)

    def full(self) -> WeightInit:
        return IdentityWeightInit(self.activation)


class ZeroWeightInit(WeightInit):
    """All-zero weights and biases (BatchNorm: gamma = beta = 0): the layer outputs act(0)."""

    init = "zeros"
