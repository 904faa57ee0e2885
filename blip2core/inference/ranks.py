"""Which share of the work this process does under ``torchrun`` (torch.distributed, gloo).

With ``WORLD_SIZE`` > 1 in the environment the process joins the group (``gloo``: CPU
collectives are all this needs); rank r takes items r, r + W, r + 2W, ... of a sorted list.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

from blip2core.torchrun import local_device, process_group

__all__ = ["local_device", "process_group", "shard"]

T = TypeVar("T")


def shard(items: Sequence[T], rank: int, world_size: int) -> list[T]:
    """Items rank, rank + world_size, ... (every item to exactly one rank)."""
    return list(items[rank::world_size])

