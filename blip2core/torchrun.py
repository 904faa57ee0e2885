"""Running under ``torchrun``: its environment, and joining its process group, done in one place.

``torchrun`` starts one process per rank with ``WORLD_SIZE``, ``RANK`` and ``LOCAL_RANK`` set.
``torchrun_env()`` reads them (one process without them); ``join_process_group(device)`` joins the
group when there is more than one process, with ``nccl`` when the work runs on CUDA devices and
``gloo`` otherwise (CPU collectives); ``process_group(device)`` does that for a block and leaves
the group afterwards if it joined it; ``local_device(device)`` turns ``cuda`` into this rank's
``cuda:<LOCAL_RANK>``. Used by the inference CLI (``blip2 features`` shards images over ranks) and,
through the plugin SDK, by the training runner.
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

#: how long a collective may wait for the slowest rank (evaluation or a checkpoint write on rank 0)
DEFAULT_TIMEOUT = datetime.timedelta(minutes=30)


@dataclass(frozen=True)
class TorchrunEnv:
    """Where this process stands among torchrun's processes (one process: rank 0 of 1)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        """More than one process."""
        return self.world_size > 1


def torchrun_env() -> TorchrunEnv:
    """Rank, world size and local rank from ``RANK`` / ``WORLD_SIZE`` / ``LOCAL_RANK``.

    Raises:
        RuntimeError: ``WORLD_SIZE`` > 1 without ``RANK`` (a launcher other than torchrun).
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return TorchrunEnv()
    if "RANK" not in os.environ:
        raise RuntimeError(f"WORLD_SIZE={world} but RANK is not set: start the processes with torchrun")
    return TorchrunEnv(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))


def backend_for(device: str) -> str:
    """``nccl`` for CUDA work on a machine with CUDA, else ``gloo``."""
    import torch

    return "nccl" if device.startswith("cuda") and torch.cuda.is_available() else "gloo"


def join_process_group(device: str = "cpu", *, timeout: datetime.timedelta = DEFAULT_TIMEOUT) -> bool:
    """Join torchrun's process group unless this process is alone or has joined already.

    With ``nccl`` this rank's CUDA device (``LOCAL_RANK``) becomes the current one first.

    Returns:
        True when this call joined (the caller may leave with ``leave_process_group``).
    """
    env = torchrun_env()
    if not env.enabled:
        return False
    import torch
    import torch.distributed as dist

    if dist.is_initialized():
        return False
    backend = backend_for(device)
    if backend == "nccl":
        torch.cuda.set_device(env.local_rank)
    dist.init_process_group(backend=backend, timeout=timeout)
    return True


def leave_process_group() -> None:
    """Leave the process group, if this process is in one."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


@contextmanager
def process_group(device: str = "cpu") -> Iterator[tuple[int, int]]:
    """Yield (rank, world_size); joins (and afterwards leaves) the torchrun group when there is one."""
    env = torchrun_env()
    if not env.enabled:
        yield 0, 1
        return
    import torch.distributed as dist

    joined = join_process_group(device)
    try:
        yield dist.get_rank(), dist.get_world_size()
    finally:
        if joined:
            leave_process_group()


def local_device(device: str | None) -> str | None:
    """``cuda`` without an index becomes this process's ``cuda:<LOCAL_RANK>`` under torchrun."""
    if device == "cuda" and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        return f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
    return device
