"""Options of the ``qformer`` bridge. Imports only pydantic, so plugin discovery stays cheap.

Field names follow transformers' ``Blip2QFormerConfig`` (and ``Blip2Config`` for ``num_query_tokens``
and ``embed_dim`` = ``image_text_hidden_size``); defaults are BLIP-2's (BERT-base sized Q-Former).
"""

from __future__ import annotations

import os
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

#: activations the Q-Former's feed-forward blocks and ITG head accept (transformers' names)
HiddenAct = Literal["gelu", "gelu_new", "gelu_pytorch_tanh", "relu", "silu"]


class QFormerOptions(BaseModel):
    """Options of ``qformer``.

    Attributes:
        num_query_tokens: Q, learned queries (BLIP-2: 32).
        hidden_size: H, Q-Former width (BERT-base: 768).
        num_hidden_layers: transformer layers (BLIP-2: 12).
        num_attention_heads: heads of every attention block; must divide ``hidden_size``.
        intermediate_size: feed-forward width (BERT-base: 3072).
        cross_attention_frequency: layer ``i`` cross-attends to the vision tokens when
            ``i % cross_attention_frequency == 0`` (BLIP-2: 2, i.e. layers 0, 2, 4, ...).
        layer_norm_eps: epsilon of every LayerNorm.
        hidden_act: feed-forward activation ("gelu" is the exact erf GELU).
        hidden_dropout_prob: dropout after embeddings and after each attention / FFN output.
        attention_probs_dropout_prob: dropout on attention probabilities.
        max_position_embeddings: longest text (in tokens) the text side accepts.
        vocab_size: text vocabulary (BERT: 30522; LAVIS / HF ITM checkpoints: 30523 with "[DEC]").
        pad_token_id: padding row of the word embeddings (gets no gradient).
        embed_dim: E, width of the ITC projections (``vision_projection`` / ``text_projection``).
        initializer_range: std of the normal init of linear / embedding weights and of the queries.
        with_text_heads: build the text side: word/position embeddings, the text feed-forward of every
            layer, the ITC projections, the ITM head and the ITG LM head (stage-1 pre-training and
            retrieval). ``False`` gives the lean stage-2 bridge (HF ``Blip2ForConditionalGeneration``).
        with_matching_heads: with ``with_text_heads``, also build the ITC projections, the ITM head,
            the ITG LM head and the temperature. ``False`` keeps the text side an input only (word /
            position embeddings and the text feed-forward), as InstructBLIP checkpoints hold it
            (HF ``InstructBlipForConditionalGeneration``, LAVIS ``blip2_*_instruct``).
        with_llm_projection: add ``Linear(H, D)`` into the LLM's embedding space; without it
            ``llm_inputs`` is ``query_output`` and H must equal the LLM's D.
        init_from: folder of a BERT-architecture checkpoint (``config.json`` + ``model.safetensors`` or
            ``pytorch_model.bin``) to initialise from, as BLIP-2 does from bert-base-uncased: embeddings,
            self-attention and FFN weights are copied (the FFN into both the text and the query FFN);
            cross-attention stays random. Its width / FFN / heads must match these options.
        tokenizer: folder of a BERT tokenizer; default: ``init_from``'s. ``None`` and no ``init_from``
            means no tokenizer (``bridge.tokenizer is None``).
        decoder_bos_token: when set (LAVIS uses "[DEC]"), added to the tokenizer as its ``bos_token``
            for image-grounded text generation; ``vocab_size`` must cover the grown tokenizer.
        instruction_aware: the instruction (the question, or the caption prompt) also enters the
            Q-Former, as in InstructBLIP: its tokens share the queries' self-attention in a
            bi-directional pass, so the queries extract what the instruction asks for. Needs the
            text heads and a tokenizer.
        max_instruction_length: instruction tokens kept (with [CLS] / [SEP]).
        freeze_text_side: the word / position embeddings and every layer's text feed-forward keep
            their initial (``init_from``) values: no gradient, and not part of the trainable state
            a checkpoint stores (a pipeline rebuilds them from ``init_from``). Self-attention,
            cross-attention, the query feed-forward, the queries and the heads still learn.
    """

    model_config = ConfigDict(extra="forbid")

    num_query_tokens: int = Field(32, gt=0)
    hidden_size: int = Field(768, gt=0)
    num_hidden_layers: int = Field(12, gt=0)
    num_attention_heads: int = Field(12, gt=0)
    intermediate_size: int = Field(3072, gt=0)
    cross_attention_frequency: int = Field(2, gt=0)
    layer_norm_eps: float = Field(1e-12, gt=0)
    hidden_act: HiddenAct = "gelu"
    hidden_dropout_prob: float = Field(0.1, ge=0, lt=1)
    attention_probs_dropout_prob: float = Field(0.1, ge=0, lt=1)
    max_position_embeddings: int = Field(512, gt=0)
    vocab_size: int = Field(30522, gt=0)
    pad_token_id: int = Field(0, ge=0)
    embed_dim: int = Field(256, gt=0)
    initializer_range: float = Field(0.02, gt=0)
    with_text_heads: bool = True
    with_matching_heads: bool = True
    with_llm_projection: bool = True
    init_from: str | None = None
    tokenizer: str | None = None
    decoder_bos_token: str | None = None
    instruction_aware: bool = False
    max_instruction_length: int = Field(32, gt=2)
    freeze_text_side: bool = False

    @field_validator("init_from", "tokenizer", mode="before")
    @classmethod
    def _path_to_str(cls, value: Any) -> Any:
        return os.fspath(value) if isinstance(value, os.PathLike) else value

    @model_validator(mode="after")
    def _check_consistency(self) -> "QFormerOptions":
        if self.hidden_size % self.num_attention_heads != 0:
            raise ValueError(
                f"hidden_size ({self.hidden_size}) must be a multiple of num_attention_heads "
                f"({self.num_attention_heads}): each head gets hidden_size / num_attention_heads channels"
            )
        if self.freeze_text_side and not self.with_text_heads:
            raise ValueError("freeze_text_side needs with_text_heads=True: without text heads there is no text side")
        if not self.with_matching_heads and not self.with_text_heads:
            raise ValueError("with_matching_heads=False needs with_text_heads=True: it drops the heads, not the text side")
        if self.instruction_aware and not self.with_text_heads:
            raise ValueError("instruction_aware needs with_text_heads=True: the instruction is embedded by the text side")
        if self.pad_token_id >= self.vocab_size:
            raise ValueError(f"pad_token_id ({self.pad_token_id}) must be < vocab_size ({self.vocab_size})")
        return self

    @property
    def tokenizer_folder(self) -> str | None:
        """The folder the tokenizer loads from: ``tokenizer``, else ``init_from``, else None."""
        return self.tokenizer or self.init_from

    def has_cross_attention(self, layer_index: int) -> bool:
        """Whether layer ``layer_index`` cross-attends to the vision tokens."""
        return layer_index % self.cross_attention_frequency == 0
