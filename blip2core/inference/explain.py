"""``explain``: where the Q-Former's queries looked, as heat maps over the image.

The maps are the cross-attention probabilities of the Q-Former's *last* cross-attention layer,
read with a forward hook (the forward pass itself is unchanged): ``probs`` [B, heads, Q, N] over the
N vision tokens. Averaged over heads (and over queries for the overview), reshaped to the encoder's
token grid (a ViT's leading [CLS] token is dropped when the rest is square) and drawn over the image
with Pillow only.

Works for any pipeline whose bridge is the built-in Q-Former (instruction-aware or not); with an
instruction-aware bridge the question changes where the queries look.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from blip2core.errors import Blip2Error
from blip2core.inference.captioning import caption_pixels
from blip2core.inference.generation import GenerationSettings
from blip2core.inference.images import load_images
from blip2core.inference.prompts import DEFAULT_VQA_TEMPLATE, format_questions
from blip2core.inference.state import exclusive
from blip2core.inference.vqa import answer_pixels

if TYPE_CHECKING:
    from blip2core.pipeline import Pipeline

PANEL = 448  # pixels of the overview panel
THUMB = 112  # pixels of each per-query panel


@dataclass
class AttentionMaps:
    """One image's cross-attention maps.

    Attributes:
        image: [S, S, 3] uint8, the image as the encoder saw it (resized, de-normalised).
        per_query: [Q, h, w] float, each query's attention over the token grid (mean over heads;
            each map sums to 1 over the grid, less what a dropped [CLS] token took).
        mean: [h, w] float, the mean over queries.
        question: the instruction the bridge read (None: none).
        answer: what the pipeline answered (None when not asked).
    """

    image: np.ndarray
    per_query: np.ndarray
    mean: np.ndarray
    question: str | None = None
    answer: str | None = None


def last_cross_attention(bridge: Any) -> torch.nn.Module:
    """The last layer's cross-attention module of a Q-Former bridge."""
    encoder = getattr(bridge, "encoder", None)
    layers = getattr(encoder, "layers", None)
    if layers is None:
        raise Blip2Error(
            f"explain needs a Q-Former bridge (cross-attention over vision tokens); {type(bridge).__name__} has none"
        )
    crosses = [layer.cross_attention for layer in layers if getattr(layer, "cross_attention", None) is not None]
    if not crosses:
        raise Blip2Error("this Q-Former has no cross-attention layer, so there is nothing to show")
    return crosses[-1]


def token_grid(count: int) -> tuple[int, int, int]:
    """N vision tokens -> (first grid token, h, w): a square grid, or [CLS] + a square grid."""
    for skip in (0, 1):
        side = math.isqrt(count - skip)
        if side * side == count - skip and side > 0:
            return skip, side, side
    raise Blip2Error(f"cannot lay {count} vision tokens out on a square grid (nor 1 + a square)")


def attention_maps(pipe: Pipeline, images: Any, question: str | None = None, *, answer: bool = True,
                   max_new_tokens: int = 10) -> list[AttentionMaps]:
    """Cross-attention maps of the last cross-attention layer for each image.

    Args:
        images: one image or a list (paths, PIL images, arrays: anything ``caption`` takes).
        question: asked of every image; an instruction-aware bridge reads it. None: no question.
        answer: also generate the answer (greedy) when the pipeline has a language model.
    """
    pixel_values = load_images(pipe, images)
    module = last_cross_attention(pipe.bridge)
    captured: list[torch.Tensor] = []

    def hook(attention: torch.nn.Module, args: tuple, kwargs: dict, output: torch.Tensor) -> None:
        hidden, context = args[0], args[1]
        bias = args[2] if len(args) > 2 else kwargs.get("bias")
        captured.append(attention_probs(attention, hidden, context, bias))

    instruction = None if question is None else [question] * pixel_values.shape[0]
    with exclusive(pipe), torch.no_grad():
        handle = module.register_forward_hook(hook, with_kwargs=True)
        try:
            pipe.encode_images(pixel_values, instruction=instruction)
        finally:
            handle.remove()
    if not captured:
        raise Blip2Error("the Q-Former's cross-attention did not run")
    probs = captured[0].float().mean(dim=1)  # [B, L, N] over heads
    probs = probs[:, : pipe.bridge.num_query_tokens]  # the query positions
    skip, h, w = token_grid(probs.shape[-1])
    grids = probs[..., skip:].reshape(probs.shape[0], probs.shape[1], h, w).cpu().numpy()
    answers: list[str | None] = [None] * pixel_values.shape[0]
    if answer and pipe.llm is not None:
        settings = GenerationSettings(num_beams=1, max_new_tokens=max_new_tokens)
        if question is not None:
            prompts = format_questions(DEFAULT_VQA_TEMPLATE, [question] * pixel_values.shape[0])
            answers = answer_pixels(pipe, pixel_values, prompts, settings, instructions=instruction)
        else:
            answers = caption_pixels(pipe, pixel_values, "", settings)
    shown = displayable(pipe, pixel_values)
    return [AttentionMaps(shown[i], grids[i], grids[i].mean(axis=0), question, answers[i])
            for i in range(pixel_values.shape[0])]


def attention_probs(attention: torch.nn.Module, hidden: torch.Tensor, context: torch.Tensor,
                    bias: torch.Tensor | None) -> torch.Tensor:
    """What ``Attention.forward`` attends with: softmax(q k^T / sqrt(d) + bias) [B, heads, L, S]."""
    query = attention._split_heads(attention.query(hidden))
    key = attention._split_heads(attention.key(context))
    scores = query @ key.transpose(-1, -2) / math.sqrt(query.shape[-1])
    if bias is not None:
        scores = scores + bias
    return scores.softmax(dim=-1)


def displayable(pipe: Pipeline, pixel_values: torch.Tensor) -> np.ndarray:
    """pixel_values [B, 3, S, S] (normalised) -> [B, S, S, 3] uint8 with the preprocessor's mean / std undone."""
    config = getattr(pipe.vision, "preprocess_config", None)
    mean = torch.tensor(getattr(config, "mean", (0.5, 0.5, 0.5)), dtype=torch.float32).view(1, 3, 1, 1)
    std = torch.tensor(getattr(config, "std", (0.5, 0.5, 0.5)), dtype=torch.float32).view(1, 3, 1, 1)
    pixels = (pixel_values.detach().float().cpu() * std + mean).clamp(0, 1)
    return (pixels.permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)


# -- drawing (Pillow only) ---------------------------------------------------------------------
def heat_colors(values: np.ndarray) -> np.ndarray:
    """[h, w] floats -> [h, w, 3] uint8, black-red-yellow-white, scaled to the map's own range."""
    low, high = float(values.min()), float(values.max())
    t = (values - low) / (high - low) if high > low else np.zeros_like(values)
    red = np.clip(3 * t, 0, 1)
    green = np.clip(3 * t - 1, 0, 1)
    blue = np.clip(3 * t - 2, 0, 1)
    return (np.stack([red, green, blue], axis=-1) * 255).astype(np.uint8)


def overlay(image: np.ndarray, grid: np.ndarray, size: int, alpha: float = 0.55) -> Any:
    """The image resized to size x size with the grid's heat map blended over it (a PIL image)."""
    from PIL import Image

    base = Image.fromarray(image).resize((size, size), Image.Resampling.BICUBIC)
    heat = Image.fromarray(heat_colors(grid)).resize((size, size), Image.Resampling.BILINEAR)
    return Image.blend(base, heat, alpha)


def render(maps: AttentionMaps) -> Any:
    """The picture: the image, the mean map over it, then one small map per query (a PIL image).

    Size: width 2 * PANEL, height PANEL + rows * THUMB + 2 text lines, with 8 thumbnails a row.
    """
    from PIL import Image, ImageDraw

    queries = maps.per_query.shape[0]
    per_row = (2 * PANEL) // THUMB
    rows = math.ceil(queries / per_row)
    header = 40
    canvas = Image.new("RGB", (2 * PANEL, header + PANEL + rows * THUMB), "white")
    canvas.paste(Image.fromarray(maps.image).resize((PANEL, PANEL), Image.Resampling.BICUBIC), (0, header))
    canvas.paste(overlay(maps.image, maps.mean, PANEL), (PANEL, header))
    for q in range(queries):
        x, y = (q % per_row) * THUMB, header + PANEL + (q // per_row) * THUMB
        canvas.paste(overlay(maps.image, maps.per_query[q], THUMB), (x, y))
    draw = ImageDraw.Draw(canvas)
    title = f"Q: {maps.question}" if maps.question is not None else "no question"
    if maps.answer is not None:
        title += f"   A: {maps.answer}"
    draw.text((6, 4), title, fill="black")
    draw.text((6, 22), "left: input   right: mean cross-attention of the last cross-attention layer   "
              f"below: each of the {queries} queries", fill="black")
    return canvas


def explain(pipe: Pipeline, image: Any, question: str | None, out: str | Path) -> AttentionMaps:
    """Write the picture of ``attention_maps`` for one image to ``out`` (PNG); returns the maps."""
    maps = attention_maps(pipe, image, question)[0]
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    render(maps).save(out, format="PNG")
    return maps
