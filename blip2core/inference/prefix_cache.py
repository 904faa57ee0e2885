"""Prefix caching: run the LLM once over an image's soft prompt, reuse its key/value cache for
every question about that image.

The image prefix (Q query embeddings) always sits at positions 0..Q-1: prompts are padded on the
left *after* it (``[image | pad .. pad | BOS question]``, the layout transformers' Blip2Processor
makes), and positions count attended tokens only, so the cached keys / values are exactly those
an uncached run computes. Works with any language model that implements
``blip2core.protocols.SupportsPrefixCache`` (the transformers-backed ones do).
"""

from __future__ import annotations

from typing import Any

import torch

from blip2core.protocols import SupportsPrefixCache

__all__ = ["build_prefix_cache", "supports_prefix_cache"]


def supports_prefix_cache(llm: Any) -> bool:
    """Whether the language model can continue generation from a cached prefix."""
    return isinstance(llm, SupportsPrefixCache)


def build_prefix_cache(llm: SupportsPrefixCache, prefix_embeds: torch.Tensor) -> Any:
    """prefix_embeds [1, Q, D] (one image's soft prompt) -> the LLM's key/value cache over it."""
    if prefix_embeds.dim() != 3 or prefix_embeds.shape[0] != 1:
        raise ValueError(f"a prefix cache is built for one image: expected [1, Q, D], got {list(prefix_embeds.shape)}")
    return llm.build_prefix_cache(prefix_embeds)
