"""The key/value cache of a transformers causal LM over a shared prefix (one image's soft prompt),
for ``TransformersLanguageModel``'s ``blip2core.protocols.SupportsPrefixCache`` methods.

Shapes: P prefix positions, D input-embedding width, R rows (prompts x beams).
"""

from __future__ import annotations

import copy
import inspect
from typing import Any

import torch
from torch import nn


def cache_argument(model: Any) -> str:
    """The keyword transformers uses for a cache: ``cache`` (5.x) or ``past_key_values`` (4.x)."""
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def prefix_cache(model: nn.Module, prefix_embeds: torch.Tensor) -> Any:
    """prefix_embeds [1, P, D] -> the model's key/value cache over the P positions."""
    if prefix_embeds.dim() != 3 or prefix_embeds.shape[0] != 1:
        raise ValueError(f"a prefix cache is built for one image: expected [1, Q, D], got {list(prefix_embeds.shape)}")
    mask = torch.ones(prefix_embeds.shape[:2], dtype=torch.long, device=prefix_embeds.device)
    output = model(inputs_embeds=prefix_embeds, attention_mask=mask, use_cache=True)
    cache = getattr(output, "cache", None)
    return cache if cache is not None else output.past_key_values


def expanded_copy(cache: Any, rows: int) -> Any:
    """A private copy of ``cache`` with each row repeated ``rows`` times (generate appends to it,
    and does not expand a given cache for beams itself)."""
    copied = copy.deepcopy(cache)
    if rows > 1:
        copied.batch_repeat_interleave(rows)
    return copied
