"""``caption``: images -> captions, with BLIP-2's decoding defaults and named prompt styles."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch

from blip2core.inference import textgen
from blip2core.inference.generation import GenerationSettings
from blip2core.inference.images import check_pixel_values, load_images
from blip2core.inference.prompts import caption_prompt
from blip2core.inference.state import exclusive

if TYPE_CHECKING:
    from blip2core.pipeline import Pipeline


def caption(
    pipe: Pipeline,
    images: Any,
    *,
    style: str | None = None,
    prompt: str | None = None,
    num_beams: int = 5,
    max_new_tokens: int = 30,
    min_new_tokens: int = 1,
    length_penalty: float = 1.0,
    do_sample: bool = False,
    top_p: float = 0.9,
    temperature: float = 1.0,
    repetition_penalty: float = 1.0,
    num_return_sequences: int = 1,
    seed: int | None = None,
) -> list[str]:
    """Caption each image.

    Args:
        images: one image or a list (paths, bytes, PIL images, arrays, tensors; mixed is fine).
        style: a named prompt: ``"short"`` (default: no instruction, BLIP-2's own captioning),
            ``"detailed"``, or one the spec's ``styles`` adds.
        prompt: the text the caption continues from (overrides ``style``), e.g. ``"a photo of"``;
            the result holds only the continuation.
        num_beams ... seed: decoding, see ``GenerationSettings`` (OPT stops at a newline).

    Returns:
        B * num_return_sequences captions (the ones of an image adjacent).
    """
    settings = GenerationSettings(
        num_beams=num_beams, max_new_tokens=max_new_tokens, min_new_tokens=min_new_tokens,
        length_penalty=length_penalty, do_sample=do_sample, top_p=top_p, temperature=temperature,
        repetition_penalty=repetition_penalty, num_return_sequences=num_return_sequences, seed=seed,
    )
    text = caption_prompt(style, prompt, pipe.spec.styles)
    pixel_values = load_images(pipe, images)
    return caption_pixels(pipe, pixel_values, text, settings)


def caption_pixels(
    pipe: Pipeline,
    pixel_values: torch.Tensor,
    prompts: str | Sequence[str],
    settings: GenerationSettings,
) -> list[str]:
    """pixel_values [B, 3, S, S] (preprocessed) and one prompt (for all) or B prompts -> captions
    [B * num_return_sequences]."""
    pixel_values = check_pixel_values(pipe, pixel_values)
    batch = pixel_values.shape[0]
    prompts = [prompts] * batch if isinstance(prompts, str) else list(prompts)
    if len(prompts) != batch:
        raise ValueError(f"got {len(prompts)} prompts for {batch} images; give one prompt, or one per image")
    with exclusive(pipe, sampling=settings.do_sample, seed=settings.seed):
        ids, mask = textgen.tokenize_prompts(pipe, prompts)
        encoding = pipe.encode_images(pixel_values, instruction=prompts)  # read by instruction-aware bridges
        new_ids = textgen.generate_ids(pipe, encoding, ids, mask, settings)
        return textgen.decode(pipe, new_ids)
