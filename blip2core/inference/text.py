"""Text -> Q-Former token ids with the bridge's own (BERT) tokenizer, for ITC / ITM / features;
``require_text_side``: the bridge as a ``blip2core.protocols.TextBridge``, or one clear error."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch

from blip2core.errors import Blip2Error
from blip2core.protocols import TextBridge, require_protocol

if TYPE_CHECKING:
    from blip2core.pipeline import Pipeline

#: BLIP-2's ``max_txt_len`` for image-text matching and retrieval (LAVIS)
MAX_MATCH_TOKENS = 32


def as_text_list(texts: str | Sequence[str], what: str = "texts") -> list[str]:
    """A string or a non-empty sequence of strings -> a list of strings (TypeError / ValueError naming ``what``)."""
    if isinstance(texts, str):
        return [texts]
    if not isinstance(texts, Sequence) or isinstance(texts, (bytes, bytearray)):
        raise TypeError(f"{what} must be a string or a list of strings, got {type(texts).__name__}")
    texts = list(texts)
    if not texts:
        raise ValueError(f"no {what} given")
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"{what}[{i}] must be a string, got {type(text).__name__}")
    return texts


def require_text_side(pipe: Pipeline, what: str) -> TextBridge:
    """The bridge, when it implements ``TextBridge`` with its text heads and has a tokenizer; else
    one Blip2Error saying what is missing (``MissingProtocolError`` when it is the protocol)."""
    bridge = require_protocol(pipe.bridge, TextBridge, what, "bridge", pipe.spec.bridge.name)
    if not bridge.has_text_heads:
        raise Blip2Error(
            f"{what} needs a Q-Former with text heads (ITC / ITM); this pipeline's bridge has none "
            "(a Blip2ForConditionalGeneration checkpoint has none: use a retrieval / feature-extractor "
            "checkpoint such as Salesforce/blip2-itm-vit-g)"
        )
    if bridge.tokenizer is None:
        raise Blip2Error(
            f"{what} needs the Q-Former's tokenizer; this pipeline has none: set the bridge option "
            "'tokenizer' to a folder with a BERT tokenizer"
        )
    return bridge


def tokenize(
    bridge: TextBridge, texts: list[str], device: torch.device, max_length: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """texts -> (input_ids [T, L] long, attention_mask [T, L]) on ``device``, padded on the right,
    truncated to ``max_length`` (default, and at most: the bridge's ``max_text_tokens``)."""
    limit = bridge.max_text_tokens
    if max_length is None or (limit is not None and max_length > limit):
        max_length = limit
    encoded = bridge.tokenizer(
        texts, padding=True, truncation=max_length is not None, max_length=max_length, return_tensors="pt"
    )
    return encoded["input_ids"].to(device), encoded["attention_mask"].to(device)
