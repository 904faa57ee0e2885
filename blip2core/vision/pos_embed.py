"""Resampling a learned absolute position embedding to another input size."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def resample_pos_embed(pos_embed: torch.Tensor, new_grid: tuple[int, int], num_prefix_tokens: int = 1) -> torch.Tensor:
    """Interpolate the patch part of a position embedding onto a new grid, as LAVIS and HF do.

    The prefix (CLS) embeddings are kept unchanged; the square grid of patch embeddings is resized
    with bicubic interpolation (``align_corners=False``, no antialiasing), e.g. 16x16 -> 26x26 when
    a 224 px EVA ViT-g/14 checkpoint is used at 364 px.

    Args:
        pos_embed: [1, P + h*w, C] or [P + h*w, C] with h == w.
        new_grid: (H, W) patches of the new input size.
        num_prefix_tokens: P.

    Returns:
        [1, P + H*W, C] or [P + H*W, C] (same rank and dtype as the input; ``pos_embed`` itself
        when the grid is already (H, W)).

    Raises:
        ValueError: the h*w patch positions do not form a square grid.
    """
    squeeze = pos_embed.dim() == 2
    pos = pos_embed.unsqueeze(0) if squeeze else pos_embed
    prefix, grid = pos[:, :num_prefix_tokens], pos[:, num_prefix_tokens:]
    side = math.isqrt(grid.shape[1])
    if side * side != grid.shape[1]:
        raise ValueError(f"position embedding has {grid.shape[1]} patch positions, not a square grid")
    if (side, side) == tuple(new_grid):
        return pos_embed
    channels = grid.shape[-1]
    grid = grid.float().reshape(1, side, side, channels).permute(0, 3, 1, 2)
    grid = F.interpolate(grid, size=tuple(new_grid), mode="bicubic", align_corners=False)
    grid = grid.permute(0, 2, 3, 1).reshape(1, new_grid[0] * new_grid[1], channels).to(pos.dtype)
    out = torch.cat([prefix, grid], dim=1)
    return out[0] if squeeze else out
