"""Image-conditioned text generation shared by captioning and VQA.

Layout of one row (Q query tokens, T prompt tokens padded on the left, L new tokens)::

    [ soft prompt (Q) | pad .. pad | BOS prompt ]  -> generate -> new ids [L]

which is what transformers' ``Blip2Processor`` + ``Blip2ForConditionalGeneration.generate`` build
(``<image>`` x Q, then the tokenizer's left-padded prompt). The HF-style ids (``<image>`` x Q +
prompt ids) are passed along as ``input_ids`` so that logits processors such as
``repetition_penalty`` see the same context as transformers (only when the pipeline knows its
``image_token_id``; without it only generated tokens count, as in LAVIS).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from blip2core.encoding import ImageEncoding
from blip2core.errors import Blip2Error, InputError
from blip2core.inference.generation import GenerationSettings
from blip2core.llm.wrapper import TransformersLanguageModel
from blip2core.protocols import GenerationDefaults, SupportsPrefixCache, is_encoder_decoder, require_protocol

if TYPE_CHECKING:
    from blip2core.pipeline import Pipeline


def llm_tokenizer(pipe: Pipeline) -> Any:
    llm = pipe.require_llm()
    tokenizer = llm.tokenizer
    if tokenizer is None:
        raise Blip2Error(
            "this pipeline's language model has no tokenizer, so prompts cannot be tokenised and outputs "
            "cannot be decoded: set the llm option 'tokenizer' (a folder or hub id)"
        )
    return tokenizer


def tokenize_prompts(pipe: Pipeline, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """prompts -> (input_ids [B, T], attention_mask [B, T]) on the pipeline's device, with the
    tokenizer's special tokens (BOS), padded on the left (an encoder-decoder's, as T5's: on the
    right, ``blip2core.protocols.EncoderDecoderLanguageModel``).

    A prompt that gives no token at all (``""`` with a tokenizer that adds no BOS, as SmolLM2's)
    becomes the one token ``start_token_id`` picks when the spec's ``bos_for_empty_prompt`` is set
    (Hugging Face folders: as transformers' ``Blip2ForConditionalGeneration.generate`` starts a
    caption without ``input_ids`` from the image and BOS; T >= 1 then); otherwise generation starts
    from the image alone, as ``blip2 train`` trains prompt-less captions."""
    tokenizer = llm_tokenizer(pipe)
    side = tokenizer.padding_side
    expected = "right" if is_encoder_decoder(pipe.require_llm()) else "left"
    if side != expected:
        raise Blip2Error(f"the language model's tokenizer pads on the {side}; batched generation needs {expected} padding")
    encoded = tokenizer(prompts, padding="longest", return_tensors="pt")
    ids, mask = encoded["input_ids"], encoded["attention_mask"]
    empty = mask.sum(dim=1) == 0
    start = start_token_id(pipe) if bool(empty.any()) and pipe.bos_for_empty_prompt else None
    if start is not None:
        if ids.shape[1] == 0:
            pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else start
            ids = torch.full((len(prompts), 1), pad, dtype=ids.dtype)
            mask = torch.zeros((len(prompts), 1), dtype=mask.dtype)
        first = -1 if side == "left" else 0  # the position of the row's first real token
        ids[empty, first] = start
        mask[empty, first] = 1
    return ids.to(pipe.device), mask.to(pipe.device)


def start_token_id(pipe: Pipeline) -> int | None:
    """The token a generation without prompt tokens starts from: a transformers model's
    ``config.bos_token_id`` (what ``Blip2ForConditionalGeneration.generate`` uses), else the
    tokenizer's BOS; None when neither exists (generation then starts from the image alone)."""
    llm = pipe.require_llm()
    if isinstance(llm, TransformersLanguageModel) and isinstance(llm.config.bos_token_id, int):
        return llm.config.bos_token_id
    bos = getattr(llm_tokenizer(pipe), "bos_token_id", None)
    return bos if isinstance(bos, int) else None


def stop_and_pad_ids(pipe: Pipeline) -> tuple[list[int], int | None]:
    """(ids that end a sequence: the LLM's ``stop_token_ids`` (OPT: "\\n") then its EOS; the pad id).

    From the LLM's ``blip2core.protocols.GenerationDefaults``; an LLM without it: no stop ids
    (its ``generate`` applies its own), its tokenizer's pad id."""
    llm = pipe.require_llm()
    if not isinstance(llm, GenerationDefaults):
        return [], getattr(llm.tokenizer, "pad_token_id", None)
    stops = list(dict.fromkeys([*llm.stop_token_ids, *llm.eos_token_ids]))
    pad = llm.pad_token_id
    return stops, pad if pad is not None else getattr(llm.tokenizer, "pad_token_id", None)


def generation_kwargs(pipe: Pipeline, settings: GenerationSettings) -> dict[str, Any]:
    stops, pad = stop_and_pad_ids(pipe)
    return settings.generate_kwargs(stops, pad)


def expand_encoding(encoding: ImageEncoding, batch: int) -> ImageEncoding:
    """One image's encoding (batch 1) repeated, without copying, for ``batch`` prompts."""
    return encoding.expand(batch)


def generate_ids(
    pipe: Pipeline,
    encoding: ImageEncoding,
    prompt_ids: torch.Tensor,
    prompt_mask: torch.Tensor,
    settings: GenerationSettings,
    prefix_cache: Any = None,
    extra_kwargs: dict[str, Any] | None = None,
) -> torch.Tensor:
    """Generate after image + prompt: encoding [B, Q, D], prompt_ids / prompt_mask [B, T]
    -> new token ids [B * num_return_sequences, L] (rows of one input are adjacent).

    ``prefix_cache``: the LLM cache over one image's soft prompt (``build_prefix_cache``; the LLM
    implements ``blip2core.protocols.SupportsPrefixCache``); every row must then carry that
    image's encoding. ``extra_kwargs``: further ``generate`` options (a streamer, stop strings).

    A transformers language model also gets the Hugging Face ids (``<image>`` x Q + prompt) as
    ``input_ids``, so that logits processors see the context transformers' BLIP-2 gives them.
    """
    llm = pipe.require_llm()
    embeds, mask = pipe.build_llm_inputs(encoding, prompt_ids, prompt_mask)
    check_length(llm, embeds.shape[1], prompt_ids.shape[1], settings.max_new_tokens)
    kwargs = {**generation_kwargs(pipe, settings), **(extra_kwargs or {})}
    hf_ids = None
    transformers_llm = isinstance(llm, TransformersLanguageModel)
    if transformers_llm and pipe.image_token_id is not None and embeds.shape[1] == mask.shape[1] > prompt_ids.shape[1]:
        queries = embeds.shape[1] - prompt_ids.shape[1]
        image = torch.full((prompt_ids.shape[0], queries), pipe.image_token_id, dtype=prompt_ids.dtype,
                           device=prompt_ids.device)
        hf_ids = torch.cat([image, prompt_ids], dim=1)
        kwargs["input_ids"] = hf_ids
    if prefix_cache is not None:
        name = pipe.spec.llm.name if pipe.spec.llm is not None else None
        cached = require_protocol(llm, SupportsPrefixCache, "generating from a prefix cache", "language model", name)
        kwargs.update(cached.prefix_cache_kwargs(prefix_cache, prompt_ids.shape[0] * settings.expand_size))
    output = llm.generate(embeds, mask, **kwargs)
    return output[:, hf_ids.shape[1]:] if hf_ids is not None else output


def check_length(llm: Any, total: int, prompt: int, max_new_tokens: int) -> None:
    """Refuse a prompt that cannot fit: image + prompt + max_new_tokens beyond the LLM's
    ``max_position_embeddings`` (OPT's learned positions would fail with an index error)."""
    limit = getattr(getattr(llm, "config", None), "max_position_embeddings", None)
    if isinstance(limit, int) and total + max_new_tokens > limit:
        raise InputError(
            f"the prompt is {prompt} tokens; with the image's {total - prompt} and max_new_tokens={max_new_tokens} "
            f"that is {total + max_new_tokens} positions, more than the language model's {limit}: "
            "shorten the prompt or lower max_new_tokens"
        )


def decode(pipe: Pipeline, token_ids: torch.Tensor) -> list[str]:
    """New token ids [N, L] -> N strings, special tokens dropped, surrounding whitespace (the
    stop newline) stripped."""
    texts = llm_tokenizer(pipe).batch_decode(token_ids.tolist(), skip_special_tokens=True)
    return [text.strip() for text in texts]
