"""The next-token loss of a causal LM, and the position ids that make padding harmless."""

from __future__ import annotations

import torch
import torch.nn.functional as F

IGNORE_INDEX = -100


def causal_lm_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of predicting token t+1 from position t.

    Args:
        logits: [B, T, V] (any float dtype; computed in float32).
        labels: [B, T] long; ``-100`` marks positions without a target.

    Returns:
        scalar: the mean over every (b, t) with ``labels[b, t + 1] != -100``.
    """
    shifted_logits = logits[:, :-1, :].float()
    shifted_labels = labels[:, 1:].to(logits.device)
    return F.cross_entropy(
        shifted_logits.reshape(-1, shifted_logits.shape[-1]),
        shifted_labels.reshape(-1),
        ignore_index=IGNORE_INDEX,
    )


def positions_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """attention_mask [B, T] (1 = token, 0 = padding) -> position_ids [B, T] long.

    Each real token's position counts only the real tokens before it, so left padding and gaps
    (an image prefix, then padding, then text) do not shift positions. Padding gets position 0.
    The same rule as transformers' ``generate``, so ``forward`` and ``generate`` agree.
    """
    mask = attention_mask.long()
    return (mask.cumsum(-1) - 1).masked_fill(mask == 0, 0)
