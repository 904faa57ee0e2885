"""Build a ``TransformersLanguageModel`` from ``LanguageModelOptions``.

A plugin supplies the transformers classes of its family and calls ``load_language_model``::

    from transformers import OPTConfig, OPTForCausalLM
    llm = load_language_model(options, config_class=OPTConfig, model_class=OPTForCausalLM)

Weights are read by transformers: safetensors, or ``.bin`` files through ``torch.load`` with
``weights_only=True`` (transformers' default); remote code is never trusted.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from blip2core.errors import CheckpointError
from blip2core.hf_config import hf_config_from_fields
from blip2core.llm.options import LanguageModelOptions
from blip2core.llm.prequantized import check_environment
from blip2core.llm.seq2seq import TransformersSeq2SeqLanguageModel
from blip2core.llm.sources import resolve_folder, resolve_gguf
from blip2core.llm.wrapper import TransformersLanguageModel
from blip2core.precision import torch_dtype

_LOAD_ERRORS = (OSError, ValueError, KeyError, RuntimeError)


def load_language_model(
    options: LanguageModelOptions,
    *,
    config_class: type,
    model_class: type,
    padding_side: str = "left",
    stop_strings: Iterable[str] = (),
) -> TransformersLanguageModel | TransformersSeq2SeqLanguageModel:
    """Load (or build) the language model and its tokenizer, frozen-ready in eval mode: a
    ``TransformersLanguageModel`` for a causal LM, a ``TransformersSeq2SeqLanguageModel`` for an
    encoder-decoder (``model_class`` ``T5ForConditionalGeneration``: config ``is_encoder_decoder``).

    Args:
        options: where the weights/architecture and tokenizer come from.
        config_class, model_class: the family's transformers classes (``LlamaConfig``,
            ``LlamaForCausalLM``); a checkpoint of another ``model_type`` is refused.
        padding_side: set on the tokenizer (``left`` for batched generation from a prefix;
            ``right`` for an encoder-decoder, whose prompts are padded after the text).
        stop_strings: texts whose single token becomes one of ``stop_token_ids`` (OPT: ``"\\n"``);
            one the tokenizer splits into several tokens is skipped with a warning (generation
            then stops at EOS only).
    """
    import torch

    dtype = _dtype(options.torch_dtype)
    if options.config is not None:
        model = model_class(config_from_fields(config_class, options.config))
        model.to(dtype if dtype != "auto" else torch.float32)
        weights_loaded = False
        tokenizer_source = options.tokenizer or options.path
        revision = None if options.tokenizer else options.revision
        tokenizer = load_tokenizer(tokenizer_source, revision) if tokenizer_source else None
    elif options.gguf_file is not None or (options.path or "").endswith(".gguf"):
        model, tokenizer = _load_gguf(options, config_class, model_class, dtype)
        weights_loaded = True
    else:
        model, tokenizer = _load_pretrained(options, config_class, model_class, dtype)
        weights_loaded = True
    model.eval()
    if tokenizer is not None:
        prepare_tokenizer(tokenizer, padding_side)
    stops = single_token_ids(tokenizer, stop_strings, options.tokenizer or options.path) if tokenizer is not None else []
    wrapper = TransformersSeq2SeqLanguageModel if model.config.is_encoder_decoder else TransformersLanguageModel
    return wrapper(model, tokenizer, stop_token_ids=stops, weights_loaded=weights_loaded)


def config_from_fields(config_class: type, fields: Mapping[str, Any]) -> Any:
    """A transformers config from a dict such as a BLIP-2 ``text_config``: numeric strings coerced,
    unknown keys and invalid values refused by name (SpecError; ``blip2core.hf_config``)."""
    fields = dict(fields)
    model_type = fields.pop("model_type", None)
    if model_type not in (None, config_class.model_type):
        raise CheckpointError(
            f"config: model_type {model_type!r} is not {config_class.model_type!r}; "
            f"choose the language-model component of that family"
        )
    return hf_config_from_fields(config_class, fields, path="config")


def load_tokenizer(source: str, revision: str | None = None) -> Any:
    """AutoTokenizer from a local folder or hub id; clear errors offline or when absent."""
    from transformers import AutoTokenizer

    resolved = resolve_folder(source, revision=revision, probe="tokenizer_config.json", what="tokenizer")
    try:
        return AutoTokenizer.from_pretrained(resolved, revision=revision)
    except _LOAD_ERRORS as exc:
        raise CheckpointError(f"{source}: cannot load a tokenizer from it ({exc}); set the tokenizer option") from None


def prepare_tokenizer(tokenizer: Any, padding_side: str) -> None:
    """Set the padding side; give a tokenizer without a pad token its unk (else eos) token."""
    tokenizer.padding_side = padding_side
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.unk_token if tokenizer.unk_token is not None else tokenizer.eos_token


def single_token_ids(tokenizer: Any, texts: Iterable[str], source: str | None = None) -> list[int]:
    """The id of each text that encodes to one token (without special tokens). A text of
    several tokens (or none) cannot be a stop token: it is skipped with a warning naming the
    tokenizer, and generation ends at EOS alone."""
    out = []
    for text in texts:
        ids = tokenizer(text, add_special_tokens=False).input_ids
        if len(ids) == 1:
            out.append(int(ids[0]))
            continue
        warnings.warn(
            f"tokenizer {source or type(tokenizer).__name__}: {text!r} is {len(ids)} tokens, not one, so generation "
            f"cannot stop at it; it stops at EOS only (outputs may run past {text!r})",
            stacklevel=3,
        )
    return out


def _dtype(name: str) -> Any:
    """``torch_dtype`` for ``from_pretrained``: ``"auto"`` (the checkpoint's) or a ``torch.dtype``."""
    return "auto" if name == "auto" else torch_dtype(name)


def _check_model_type(config: Any, config_class: type, source: str) -> None:
    if config.model_type == config_class.model_type:
        return
    hint = ""
    if config.model_type in ("blip-2", "instructblip"):
        hint = (
            "; a whole BLIP-2 checkpoint loads as a pipeline checkpoint, or give its text_config as "
            "this component's config option with the folder as tokenizer"
        )
    raise CheckpointError(
        f"{source}: holds a {config.model_type!r} model, but this component loads "
        f"{config_class.model_type!r} models{hint}"
    )


def _load_pretrained(options: LanguageModelOptions, config_class: type, model_class: type, dtype: Any) -> tuple:
    from transformers import AutoConfig

    assert options.path is not None
    source = resolve_folder(options.path, revision=options.revision)
    try:
        config = AutoConfig.from_pretrained(source, revision=options.revision)
    except _LOAD_ERRORS as exc:
        raise CheckpointError(f"{options.path}: no readable config.json ({exc})") from None
    _check_model_type(config, config_class, options.path)
    check_environment(config, options.path)  # GPTQ / AWQ / bitsandbytes checkpoints: is their library here?
    try:
        model = model_class.from_pretrained(source, config=config, revision=options.revision, dtype=dtype)
    except _LOAD_ERRORS as exc:
        raise CheckpointError(f"{options.path}: cannot load {model_class.__name__} weights: {exc}") from None
    tokenizer = load_tokenizer(options.tokenizer or source, None if options.tokenizer else options.revision)
    return model, tokenizer


def _load_gguf(options: LanguageModelOptions, config_class: type, model_class: type, dtype: Any) -> tuple:
    import torch
    from transformers import AutoConfig

    from blip2core.llm.gguf_cache import dequantised_gguf_folder, gguf_cache_folder, is_complete

    if options.gguf_file is not None:
        gguf = resolve_gguf(options.path, options.gguf_file, revision=options.revision)
    else:  # path itself names the .gguf file
        gguf = resolve_gguf(None, str(Path(options.path or "").expanduser().resolve()))
    if not is_complete(gguf_cache_folder(gguf)):
        _check_gguf_architecture(gguf, config_class)  # ~3 s: only before dequantising
    folder = dequantised_gguf_folder(gguf, model_class)
    config = AutoConfig.from_pretrained(str(folder))
    _check_model_type(config, config_class, str(gguf))
    model = model_class.from_pretrained(str(folder), config=config, dtype=torch.float32 if dtype == "auto" else dtype)
    tokenizer = load_tokenizer(options.tokenizer or str(folder))
    return model, tokenizer


def _check_gguf_architecture(gguf: Path, config_class: type) -> None:
    """Refuse a GGUF of another family before spending time dequantising it."""
    try:
        from gguf import GGUFReader
    except ImportError:
        raise CheckpointError(f"{gguf}: reading GGUF files needs the 'gguf' package (pip install gguf)") from None
    try:
        field = GGUFReader(str(gguf)).fields.get("general.architecture")
        architecture = bytes(field.parts[field.data[0]]).decode() if field is not None else None
    except Exception as exc:  # a truncated or foreign file: gguf raises various errors
        raise CheckpointError(f"{gguf}: not a readable GGUF file ({exc})") from None
    if architecture is not None and architecture != config_class.model_type:
        raise CheckpointError(
            f"{gguf}: holds a {architecture!r} model, but this component loads {config_class.model_type!r} models"
        )
