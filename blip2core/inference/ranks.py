"""Which share of the work this process does under ``torchrun``: rank r takes items r, r + W,
r + 2W, ... of a sorted list (joining the group: ``blip2core.torchrun.process_group``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

T = TypeVar("T")


def shard(items: Sequence[T], rank: int, world_size: int) -> list[T]:
    """Items rank, rank + world_size, ... (every item to exactly one rank)."""
    return list(items[rank::world_size])

