"""Choosing which block of a vision tower to take tokens from."""

from __future__ import annotations

from blip2core.errors import SpecError


def resolve_layer(layer: int, depth: int, what: str) -> int:
    """A block index in [0, depth) from ``layer`` (negative counts from the end: -1 is the last block).

    Args:
        layer: the index a spec asked for, in [-depth, depth).
        depth: how many blocks the tower has.
        what: the encoder, for the error message.

    Raises:
        SpecError: ``layer`` is out of range.
    """
    index = layer + depth if layer < 0 else layer
    if not 0 <= index < depth:
        raise SpecError(f"{what}: layer {layer} is out of range for {depth} blocks")
    return index
