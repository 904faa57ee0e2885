"""``answer``: visual question answering, with prefix caching for many questions about one image.

Pairing: B images with B questions (one each); one image with many questions (the image is
encoded once and the LLM's key/value cache of its soft prompt is reused by every question); or
many images with one question (asked of each).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch

from blip2core.inference import textgen
from blip2core.inference.generation import GenerationSettings
from blip2core.inference.images import check_pixel_values, load_images
from blip2core.inference.prefix_cache import build_prefix_cache, supports_prefix_cache
from blip2core.inference.prompts import DEFAULT_VQA_TEMPLATE, format_questions
from blip2core.inference.state import exclusive
from blip2core.inference.text import as_text_list

if TYPE_CHECKING:
    from blip2core.pipeline import Pipeline


def answer(
    pipe: Pipeline,
    images: Any,
    questions: str | Sequence[str],
    *,
    template: str = DEFAULT_VQA_TEMPLATE,
    num_beams: int = 5,
    max_new_tokens: int = 10,
    min_new_tokens: int = 1,
    length_penalty: float = 0.0,
    do_sample: bool = False,
    top_p: float = 0.9,
    temperature: float = 1.0,
    repetition_penalty: float = 1.0,
    num_return_sequences: int = 1,
    seed: int | None = None,
    prefix_cache: bool = True,
    batch_size: int | None = None,
) -> list[str]:
    """Answer questions about images (BLIP-2 zero-shot VQA: beams 5, <= 10 new tokens, length_penalty 0).

    Args:
        images: one image or a list (any input ``caption`` accepts).
        questions: one string or a list; see the module docstring for how they pair with images.
        template: where the question goes in the prompt (exactly one ``{}``).
        prefix_cache: for one image with many questions, reuse the LLM's cache of the image prefix
            (the answers are the same either way; ``False`` recomputes it per question).
        batch_size: questions per ``generate`` call (default: all at once); the image encoding
            and its prefix cache are shared by every batch.

    Returns:
        One answer per question (x num_return_sequences, adjacent), in question order.
    """
    settings = GenerationSettings(
        num_beams=num_beams, max_new_tokens=max_new_tokens, min_new_tokens=min_new_tokens,
        length_penalty=length_penalty, do_sample=do_sample, top_p=top_p, temperature=temperature,
        repetition_penalty=repetition_penalty, num_return_sequences=num_return_sequences, seed=seed,
    )
    question_list = as_text_list(questions, "questions")
    prompts = format_questions(template, question_list)
    pixel_values = load_images(pipe, images)
    return answer_pixels(pipe, pixel_values, prompts, settings, prefix_cache=prefix_cache, batch_size=batch_size,
                         instructions=question_list)


def answer_pixels(
    pipe: Pipeline,
    pixel_values: torch.Tensor,
    prompts: list[str],
    settings: GenerationSettings,
    *,
    prefix_cache: bool = True,
    batch_size: int | None = None,
    instructions: list[str] | None = None,
) -> list[str]:
    """pixel_values [B, 3, S, S] with formatted prompts (B of them, or many for B = 1, or one for
    all B) -> answers [len(prompts) or B, x num_return_sequences].

    ``instructions``: the bare questions, one per prompt, for an instruction-aware bridge
    (InstructBLIP); default: the prompts themselves."""
    instructions = list(prompts) if instructions is None else list(instructions)
    if len(instructions) != len(prompts):
        raise ValueError(f"got {len(instructions)} instructions for {len(prompts)} prompts")
    pixel_values = check_pixel_values(pipe, pixel_values)
    images, count = pixel_values.shape[0], len(prompts)
    if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1):
        raise ValueError(f"batch_size must be a positive int or None, got {batch_size!r}")
    if images == 1 and count > 1:
        return _one_image_many_prompts(pipe, pixel_values, prompts, instructions, settings, prefix_cache, batch_size)
    if count == 1 and images > 1:
        prompts, instructions = prompts * images, instructions * images
    elif count != images:
        raise ValueError(
            f"got {images} images and {count} questions: give one question per image, many questions "
            "for one image, or one question for every image"
        )
    with exclusive(pipe, sampling=settings.do_sample, seed=settings.seed):
        out: list[str] = []
        for start, stop in _chunks(len(prompts), batch_size):
            ids, mask = textgen.tokenize_prompts(pipe, prompts[start:stop])
            encoding = pipe.encode_images(pixel_values[start:stop], instruction=instructions[start:stop])
            out += textgen.decode(pipe, textgen.generate_ids(pipe, encoding, ids, mask, settings))
        return out


def _one_image_many_prompts(
    pipe: Pipeline,
    pixel_values: torch.Tensor,
    prompts: list[str],
    instructions: list[str],
    settings: GenerationSettings,
    use_cache: bool,
    batch_size: int | None,
) -> list[str]:
    with exclusive(pipe, sampling=settings.do_sample, seed=settings.seed):
        if pipe.reads_instruction:  # the soft prompt depends on the question: only the vision step is shared
            vision_tokens = pipe.encode_vision(pixel_values)
            out: list[str] = []
            for start, stop in _chunks(len(prompts), batch_size):
                ids, mask = textgen.tokenize_prompts(pipe, prompts[start:stop])
                encoding = pipe.bridge_tokens(vision_tokens.expand(stop - start, -1, -1), instructions[start:stop])
                out += textgen.decode(pipe, textgen.generate_ids(pipe, encoding, ids, mask, settings))
            return out
        encoding = pipe.encode_images(pixel_values)  # once, for every question
        llm = pipe.require_llm()
        cache = build_prefix_cache(llm, encoding.llm_inputs) if use_cache and supports_prefix_cache(llm) else None
        out = []
        for start, stop in _chunks(len(prompts), batch_size):
            ids, mask = textgen.tokenize_prompts(pipe, prompts[start:stop])
            shared = textgen.expand_encoding(encoding, stop - start)
            new_ids = textgen.generate_ids(pipe, shared, ids, mask, settings, prefix_cache=cache)
            out += textgen.decode(pipe, new_ids)
        return out


def _chunks(total: int, size: int | None) -> list[tuple[int, int]]:
    size = total if size is None else size
    return [(start, min(start + size, total)) for start in range(0, total, size)]
