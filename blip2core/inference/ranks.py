"""Which share of the work this process does under ``torchrun`` (torch.distributed, gloo).

With ``WORLD_SIZE`` > 1 in the environment the process joins the group (``gloo``: CPU
collectives are all this needs); rank r takes items r, r + W, r + 2W, ... of a sorted list.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TypeVar

T = TypeVar("T")


@contextmanager
def process_group() -> Iterator[tuple[int, int]]:
    """Yield (rank, world_size); joins (and afterwards leaves) the torchrun group when there is one."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        yield 0, 1
        return
    import torch.distributed as dist

    joined = False
    if not dist.is_initialized():
        dist.init_process_group(backend="gloo")
        joined = True
    try:
        yield dist.get_rank(), dist.get_world_size()
    finally:
        if joined:
            dist.destroy_process_group()


def shard(items: Sequence[T], rank: int, world_size: int) -> list[T]:
    """Items rank, rank + world_size, ... (every item to exactly one rank)."""
    return list(items[rank::world_size])


def local_device(device: str | None) -> str | None:
    """``cuda`` without an index becomes this process's ``cuda:<LOCAL_RANK>`` under torchrun."""
    if device == "cuda" and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        return f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
    return device
