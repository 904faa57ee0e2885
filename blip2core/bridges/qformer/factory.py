"""``build_qformer``: the ``qformer`` bridge factory (options -> a ready ``QFormerBridge``)."""

from __future__ import annotations

from typing import Any

from blip2core.bridges.qformer.bert_init import check_bert_config, init_from_bert
from blip2core.bridges.qformer.config import QFormerOptions
from blip2core.bridges.qformer.modeling import QFormerBridge
from blip2core.errors import CheckpointError


def build_qformer(options: QFormerOptions, *, vision_width: int, llm_hidden_size: int | None) -> QFormerBridge:
    """Build the Q-Former whose cross-attention reads C = ``vision_width`` and whose projection writes
    D = ``llm_hidden_size`` (None: no LLM, no projection); initialise from ``options.init_from`` and load the tokenizer when given."""
    if options.init_from is not None:
        check_bert_config(options, options.init_from)  # before building: fail in milliseconds, not seconds
    tokenizer = load_tokenizer(options)
    bridge = QFormerBridge(options, vision_width=vision_width, llm_hidden_size=llm_hidden_size, tokenizer=tokenizer)
    if options.init_from is not None:
        bridge.init_report = init_from_bert(bridge, options.init_from)
    return bridge


def load_tokenizer(options: QFormerOptions) -> Any:
    """The BERT tokenizer from ``options.tokenizer`` (else ``init_from``), with ``decoder_bos_token`` added
    as ``bos_token`` when set; None when no folder is named.

    Raises:
        CheckpointError: the folder holds no tokenizer, or the tokenizer outgrows ``vocab_size``.
    """
    folder = options.tokenizer_folder
    if folder is None:
        return None
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(folder)
    except (OSError, ValueError) as error:
        raise CheckpointError(f"qformer tokenizer: cannot load a tokenizer from {folder!r}: {error}") from error
    if options.decoder_bos_token is not None:
        tokenizer.add_special_tokens({"bos_token": options.decoder_bos_token})
    if options.with_text_heads and len(tokenizer) > options.vocab_size:
        raise CheckpointError(
            f"qformer tokenizer from {folder!r} has {len(tokenizer)} tokens but vocab_size is "
            f"{options.vocab_size}: set vocab_size to at least {len(tokenizer)}"
        )
    return tokenizer
