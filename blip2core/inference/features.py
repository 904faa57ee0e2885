"""``extract_features``: Q-Former embeddings with LAVIS's field names (``BlipOutputFeatures``).

Modes "text" and "multimodal" (and ``image_embeds_proj``) need the bridge's text side
(``blip2core.protocols.TextBridge``). Images go through the vision encoder once and the bridge once.

Shapes: B images, T texts (the same number in multimodal mode), Q queries, H Q-Former width,
E ITC width, L text tokens.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any, Literal

import torch

from blip2core.inference.images import check_pixel_values, load_images
from blip2core.inference.state import exclusive
from blip2core.inference.text import as_text_list, require_text_side, tokenize
from blip2core.protocols import TextBridge

if TYPE_CHECKING:
    from blip2core.pipeline import Pipeline

Mode = Literal["image", "text", "multimodal"]
MODES = ("image", "text", "multimodal")


@dataclass
class Features:
    """What ``extract_features`` computed; fields it did not compute are None.

    Attributes:
        image_embeds: [B, Q, H] query outputs (mode "image").
        image_embeds_proj: [B, Q, E] their ITC projections, L2-normalised (None when the bridge
            has no ITC heads, e.g. a Blip2ForConditionalGeneration checkpoint).
        text_embeds: [T, L, H] Q-Former text states (mode "text"; ``[:, 0]`` is [CLS]).
        text_embeds_proj: [T, L, E] their ITC projections, L2-normalised; ``[:, 0, :]`` is the
            text embedding ITC compares with ``image_embeds_proj``.
        multimodal_embeds: [B, Q, H] query outputs of the joint image-text pass (mode "multimodal").

    Item access (``features["image_embeds"]``) and ``to_dict()`` (the computed fields) also work.
    """

    image_embeds: torch.Tensor | None = None
    image_embeds_proj: torch.Tensor | None = None
    text_embeds: torch.Tensor | None = None
    text_embeds_proj: torch.Tensor | None = None
    multimodal_embeds: torch.Tensor | None = None

    def to_dict(self) -> dict[str, torch.Tensor]:
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None}

    def __getitem__(self, key: str) -> torch.Tensor | None:
        if key not in {f.name for f in fields(self)}:
            raise KeyError(key)
        return getattr(self, key)

    def keys(self) -> Iterator[str]:
        return iter(self.to_dict())


def extract_features(
    pipe: Pipeline,
    images: Any = None,
    texts: str | Sequence[str] | None = None,
    mode: Mode = "image",
) -> Features:
    """Q-Former features of images, texts, or image-text pairs.

    Args:
        images: for modes "image" and "multimodal" (any input ``caption`` accepts).
        texts: for modes "text" and "multimodal"; tokenised with the Q-Former's tokenizer.
        mode: "image" -> image_embeds (+ image_embeds_proj); "text" -> text_embeds,
            text_embeds_proj; "multimodal" -> multimodal_embeds of image b with text b (one image
            is paired with every text).
    """
    _check_mode(mode)
    if mode in ("image", "multimodal") and images is None:
        raise ValueError(f"mode {mode!r} needs images")
    if mode in ("text", "multimodal") and texts is None:
        raise ValueError(f"mode {mode!r} needs texts")
    text_list = as_text_list(texts, "texts") if mode != "image" else []
    pixel_values = load_images(pipe, images) if mode != "text" else None
    return features_from_pixels(pipe, pixel_values, text_list, mode)


def features_from_pixels(
    pipe: Pipeline, pixel_values: torch.Tensor | None, texts: list[str], mode: Mode
) -> Features:
    """``extract_features`` on preprocessed pixel_values [B, 3, S, S] (None for mode "text")."""
    _check_mode(mode)
    with exclusive(pipe):
        if mode == "image":
            return image_features(pipe, check_pixel_values(pipe, pixel_values))
        bridge = require_text_side(pipe, f"extract_features(mode={mode!r})")
        ids, mask = tokenize(bridge, texts, pipe.device)
        if mode == "text":
            hidden = bridge.text_features(ids, mask)
            return Features(text_embeds=hidden, text_embeds_proj=bridge.text_tokens_proj(hidden))
        pixel_values = check_pixel_values(pipe, pixel_values)
        vision_tokens = pipe.encode_vision(pixel_values)  # the joint pass below is the only bridge pass
        hidden = bridge.multimodal_features(*pair_up(vision_tokens, ids, mask))
        return Features(multimodal_embeds=hidden[:, : bridge.num_query_tokens, :])


def image_features(pipe: Pipeline, pixel_values: torch.Tensor) -> Features:
    """pixel_values [B, 3, S, S] -> image_embeds [B, Q, H] (+ image_embeds_proj [B, Q, E] when the
    bridge is a ``TextBridge`` with text heads): one vision pass, one bridge pass."""
    query_output = pipe.encode_images(pixel_values).query_output
    bridge = pipe.bridge
    has_itc = isinstance(bridge, TextBridge) and bridge.has_text_heads
    projected = bridge.image_embeds_proj(query_output) if has_itc else None
    return Features(image_embeds=query_output, image_embeds_proj=projected)


def pair_count(images: int, texts: int) -> int:
    """P, the number of image-text pairs: one image with P texts, one text with P images, or P of
    each; a ValueError naming both counts otherwise."""
    if images == texts or images == 1 or texts == 1:
        return max(images, texts)
    raise ValueError(f"got {images} images and {texts} texts: pair them one to one, or give one image or one text")


def pair_up(images: torch.Tensor, *texts: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Pair image rows with text rows (``pair_count``), broadcasting a single image or text
    without copying. images [I, ...] (vision tokens [I, N, C], ITC embeddings [I, Q, E]), texts
    each [T, ...] (ids / mask [T, L], embeddings [T, E]) -> the same with P rows each."""
    pairs = pair_count(images.shape[0], texts[0].shape[0])
    return tuple(t.expand(pairs, *t.shape[1:]) for t in (images, *texts))


def _check_mode(mode: str) -> None:
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; expected one of {', '.join(MODES)}")
