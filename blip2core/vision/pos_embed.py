"""Resampling a learned absolute position embedding to another input size.

The interpolation is timm's ``resample_abs_pos_embed``; timm is not a dependency of blip2core
(the vision plugins that call this depend on it), so it is imported when the function runs.
"""

from __future__ import annotations

import math

import torch


def resample_pos_embed(pos_embed: torch.Tensor, new_grid: tuple[int, int], num_prefix_tokens: int = 1) -> torch.Tensor:
    """Interpolate the patch part of a position embedding onto a new grid, as LAVIS and HF do.

    The prefix (CLS) embeddings are kept unchanged; the square grid of patch embeddings is resized
    with bicubic interpolation (``align_corners=False``, no antialiasing) in float32, e.g.
    16x16 -> 26x26 when a 224 px EVA ViT-g/14 checkpoint is used at 364 px.

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
    from timm.layers import resample_abs_pos_embed

    squeeze = pos_embed.dim() == 2
    pos = pos_embed.unsqueeze(0) if squeeze else pos_embed
    positions = pos.shape[1] - num_prefix_tokens
    side = math.isqrt(positions)
    if side * side != positions:
        raise ValueError(f"position embedding has {positions} patch positions, not a square grid")
    if (side, side) == tuple(new_grid):
        return pos_embed
    out = resample_abs_pos_embed(
        pos,
        new_size=[int(n) for n in new_grid],
        old_size=[side, side],
        num_prefix_tokens=num_prefix_tokens,
        interpolation="bicubic",
        antialias=False,
    )
    return out[0] if squeeze else out
