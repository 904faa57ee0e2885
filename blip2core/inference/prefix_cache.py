"""Prefix caching: run the LLM once over an image's soft prompt, reuse its key/value cache for
every question about that image.

The image prefix (Q query embeddings) always sits at positions 0..Q-1: prompts are padded on the
left *after* it (``[image | pad .. pad | BOS question]``, the layout transformers' Blip2Processor
makes), and positions count attended tokens only, so the cached keys / values are exactly those
an uncached run computes. Works with transformers causal LMs (``TransformersLanguageModel``).
"""

from __future__ import annotations

import copy
import inspect
from typing import Any

import torch

from blip2core.llm.wrapper import TransformersLanguageModel


def supports_prefix_cache(llm: Any) -> bool:
    """True for the transformers-backed language models (their ``generate`` takes a cache)."""
    return isinstance(llm, TransformersLanguageModel)


def cache_argument(model: Any) -> str:
    """The keyword transformers uses for a cache: ``cache`` (5.x) or ``past_key_values`` (4.x)."""
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def build_prefix_cache(llm: TransformersLanguageModel, prefix_embeds: torch.Tensor) -> Any:
    """prefix_embeds [1, Q, D] (one image's soft prompt) -> the LLM's key/value cache over it."""
    if prefix_embeds.dim() != 3 or prefix_embeds.shape[0] != 1:
        raise ValueError(f"a prefix cache is built for one image: expected [1, Q, D], got {list(prefix_embeds.shape)}")
    mask = torch.ones(prefix_embeds.shape[:2], dtype=torch.long, device=prefix_embeds.device)
    output = llm.model(inputs_embeds=prefix_embeds, attention_mask=mask, use_cache=True)
    cache = getattr(output, "cache", None)
    return cache if cache is not None else output.past_key_values


def expanded_copy(cache: Any, rows: int) -> Any:
    """A private copy of ``cache`` with each row repeated ``rows`` times (generate appends to it,
    and does not expand a given cache for beams itself)."""
    copied = copy.deepcopy(cache)
    if rows > 1:
        copied.batch_repeat_interleave(rows)
    return copied
