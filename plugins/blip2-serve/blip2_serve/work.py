"""The pipeline calls behind the routes, as the batcher makes them: ``run_batch(pipe, key, items)``.

Batched routes (caption, answer, features) get their images as preprocessed pixel_values (the
handler decoded and preprocessed each request's image, so a bad image fails that request alone)
and call the pixel_values API, which is what ``Pipeline.caption`` / ``answer`` /
``extract_features`` run after loading their images: a batch of N gives what N single calls give.
The other routes (match, chat, explain) run one request per call with the encoded image.
"""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from blip2core.plugin_api import (
    DEFAULT_VQA_TEMPLATE,
    GenerationSettings,
    answer_pixels,
    attention_maps,
    caption_pixels,
    caption_prompt,
    features_from_pixels,
    format_questions,
    overlay,
)
from blip2_serve.batcher import BatchKey

if TYPE_CHECKING:
    from blip2core import Pipeline

#: pixels of the explain route's heat map (the image with the mean cross-attention blended over it)
HEATMAP_SIZE = 448


@dataclass(frozen=True)
class ImageItem:
    """One request's image: pixel_values [1, 3, S, S] (batched routes) or its encoded bytes."""

    pixels: torch.Tensor | None = None
    data: bytes | None = None
    text: str | None = None  # the question (answer), the text (features), None otherwise
    extra: Any = None  # route-specific: the texts (match), the messages (chat)


def run_batch(pipe: Pipeline, key: BatchKey, items: list[ImageItem]) -> list[Any]:
    """One pipeline call for the requests ``items`` of one key -> one result per item (JSON-ready)."""
    options = key.options_dict()
    route = key.route
    if route == "caption":
        prompt = caption_prompt(None, options.pop("prompt"), pipe.spec.styles)
        return caption_pixels(pipe, _stack(items), prompt, GenerationSettings(**options))
    if route == "answer":
        questions = [item.text for item in items]
        prompts = format_questions(DEFAULT_VQA_TEMPLATE, questions)
        return answer_pixels(pipe, _stack(items), prompts, GenerationSettings(**options), instructions=questions)
    if route == "features":
        return _features(pipe, options["mode"], items)
    if len(items) != 1:
        raise RuntimeError(f"route {route!r} is not batched, got {len(items)} requests")
    item = items[0]
    if route == "match":
        scores = pipe.match(item.data, item.extra, options["method"])
        return [[float(s) for s in scores.tolist()]]
    if route == "chat":
        return [pipe.chat(item.data, item.extra, **options)]
    if route == "explain":
        return [_explain(pipe, item.data, item.text)]
    raise RuntimeError(f"no pipeline call for route {route!r}")


def _stack(items: list[ImageItem]) -> torch.Tensor:
    """[B, 3, S, S] from the items' [1, 3, S, S]."""
    return torch.cat([item.pixels for item in items], dim=0)


def _features(pipe: Pipeline, mode: str, items: list[ImageItem]) -> list[dict]:
    """Image: per image its query embeddings [Q, E] (ITC-projected when the bridge has the heads,
    else [Q, H]); text: per text its [CLS] ITC embedding, as [1, E]."""
    if mode == "image":
        features = features_from_pixels(pipe, _stack(items), [], "image")
        embeds = features.image_embeds_proj if features.image_embeds_proj is not None else features.image_embeds
        rows = [embeds[i] for i in range(len(items))]
    else:
        features = features_from_pixels(pipe, None, [item.text for item in items], "text")
        rows = [features.text_embeds_proj[i, :1] for i in range(len(items))]
    return [{"embedding": row.float().cpu().tolist(), "shape": list(row.shape)} for row in rows]


def _explain(pipe: Pipeline, data: bytes, question: str | None) -> dict:
    maps = attention_maps(pipe, data, question)[0]
    picture = overlay(maps.image, maps.mean, HEATMAP_SIZE)
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    encoded = base64.b64encode(buffer.getvalue()).decode("ascii")
    return {"heatmap": f"data:image/png;base64,{encoded}", "text": maps.answer or ""}
