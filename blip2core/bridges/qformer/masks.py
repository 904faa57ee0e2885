"""Attention masks of the Q-Former, as small pure functions.

A *visibility* mask is boolean, ``True`` where a row (query position) may attend to a column
(key position). ``additive_mask`` turns one into the float bias added to attention scores.

- bi-directional: every position sees every non-padded position (ITC text pass, ITM, the query pass).
- UniLM (ITG): queries see only queries; text sees all queries and causally the text up to itself.
"""

from __future__ import annotations

import torch


def bidirectional_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """Padding-only visibility.

    Args:
        attention_mask: [B, L] 1 (or True) for real positions, 0 for padding.

    Returns:
        [B, 1, 1, L] bool, broadcast over heads and rows.
    """
    return attention_mask.bool()[:, None, None, :]


def unilm_mask(num_query_tokens: int, text_attention_mask: torch.Tensor) -> torch.Tensor:
    """UniLM visibility over the sequence ``[queries (Q) ; text (T)]``, as BLIP-2's ITG uses.

    Rows ``0..Q-1`` (queries) see columns ``0..Q-1`` only; row ``Q+t`` (text token t) sees every query
    and text tokens ``0..t``. Padded text columns (``text_attention_mask == 0``) are hidden from all rows.

    Args:
        num_query_tokens: Q.
        text_attention_mask: [B, T] 1 for real text tokens, 0 for padding.

    Returns:
        [B, 1, Q+T, Q+T] bool.
    """
    batch, text_length = text_attention_mask.shape
    length = num_query_tokens + text_length
    device = text_attention_mask.device
    positions = torch.arange(length, device=device)
    causal = positions[None, :] <= positions[:, None]  # [L, L]: column <= row
    is_query_column = positions < num_query_tokens
    is_query_row = is_query_column[:, None]
    # queries: only query columns; text: query columns or causal
    visible = torch.where(is_query_row, is_query_column[None, :], causal | is_query_column[None, :])
    columns_kept = torch.cat(
        [torch.ones(batch, num_query_tokens, dtype=torch.bool, device=device), text_attention_mask.bool()], dim=1
    )
    return visible[None, None, :, :] & columns_kept[:, None, None, :]


def additive_mask(visible: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Visibility (bool, any broadcastable shape) -> float bias: 0 where visible, dtype's min elsewhere.

    The finite minimum (not -inf) keeps a fully hidden row finite (uniform attention), never NaN.
    """
    bias = torch.zeros(visible.shape, dtype=dtype, device=visible.device)
    return bias.masked_fill(~visible, torch.finfo(dtype).min)
