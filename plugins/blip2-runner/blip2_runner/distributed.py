"""Process-group helpers: one code path for a single process and for torchrun.

Under ``torchrun`` (``WORLD_SIZE`` > 1) :func:`init` joins the group through the SDK's
``join_process_group`` (``nccl`` when the run uses CUDA devices, ``gloo`` otherwise). Collectives
below are no-ops with one process.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist

from blip2core.plugin_api import backend_for, join_process_group, leave_process_group, torchrun_env


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def init(device: str = "cpu") -> DistInfo:
    """Join the torchrun process group when there is one (idempotent)."""
    env = torchrun_env()
    if not env.enabled:
        return DistInfo()
    join_process_group(device)
    return DistInfo(env.rank, env.world_size, env.local_rank, backend_for(device))


def info() -> DistInfo:
    if not (dist.is_available() and dist.is_initialized()):
        return DistInfo()
    return DistInfo(dist.get_rank(), dist.get_world_size(), torchrun_env().local_rank, dist.get_backend())


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


class _GatherWithGrad(torch.autograd.Function):
    """all_gather along dim 0 whose backward gives each rank the sum over ranks of the gradient of
    its own slice. (torch.distributed.nn.functional.all_gather is not used: with gloo in torch 2.14
    its all-to-all backward returns wrong gradients when a graph holds several gathers.)"""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:
        tensor = tensor.contiguous()
        parts = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, tensor)
        ctx.rank, ctx.rows = dist.get_rank(), tensor.shape[0]
        return torch.cat(parts, dim=0)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous()
        if dist.get_backend() == "nccl":
            out = torch.empty((ctx.rows, *grad.shape[1:]), dtype=grad.dtype, device=grad.device)
            dist.reduce_scatter_tensor(out, grad)
            return out
        grad = grad.clone()
        dist.all_reduce(grad)
        return grad[ctx.rank * ctx.rows : (ctx.rank + 1) * ctx.rows]


def all_gather_with_grad(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate every rank's tensor (same shape on every rank) along dim 0; gradients flow back
    to each rank's own part, summed over the ranks' losses."""
    if world_size() == 1:
        return tensor
    return _GatherWithGrad.apply(tensor)


@torch.no_grad()
def all_gather_no_grad(tensor: torch.Tensor, pad_dim: int | None = None, pad_value: float = 0) -> torch.Tensor:
    """Concatenate every rank's tensor along dim 0 (no gradient). With ``pad_dim``, tensors whose
    size differs along that dim are padded with ``pad_value`` to the longest first."""
    if world_size() == 1:
        return tensor
    tensor = tensor.contiguous()
    if pad_dim is not None:
        size = torch.tensor([tensor.shape[pad_dim]], device=tensor.device)
        longest = all_reduce(size, op="max").item()
        if tensor.shape[pad_dim] < longest:
            pad_shape = list(tensor.shape)
            pad_shape[pad_dim] = int(longest) - tensor.shape[pad_dim]
            tensor = torch.cat([tensor, tensor.new_full(pad_shape, pad_value)], dim=pad_dim)
    parts = [torch.empty_like(tensor) for _ in range(world_size())]
    dist.all_gather(parts, tensor)
    return torch.cat(parts, dim=0)


def all_reduce(tensor: torch.Tensor, op: str = "sum") -> torch.Tensor:
    """In-place all-reduce (sum / max / min); returns the tensor."""
    if world_size() > 1:
        ops = {"sum": dist.ReduceOp.SUM, "max": dist.ReduceOp.MAX, "min": dist.ReduceOp.MIN}
        dist.all_reduce(tensor, op=ops[op])
    return tensor


def average_gradients(parameters) -> None:
    """Replace each gradient by its mean over ranks (one flat all-reduce)."""
    n = world_size()
    if n == 1:
        return
    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= n
    offset = 0
    for g in grads:
        g.copy_(flat[offset : offset + g.numel()].view_as(g))
        offset += g.numel()


def broadcast_parameters(module: torch.nn.Module) -> None:
    """Make every rank start from rank 0's parameters and buffers."""
    if world_size() == 1:
        return
    for tensor in list(module.parameters()) + list(module.buffers()):
        dist.broadcast(tensor.data, src=0)


def barrier() -> None:
    if world_size() > 1:
        dist.barrier()


def destroy() -> None:
    leave_process_group()
