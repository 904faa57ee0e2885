"""``QFormerBridge``: BLIP-2's Querying Transformer as a blip2core Bridge.

Shapes: B batch, N vision tokens, C vision width, Q query tokens, H hidden size, E ITC width (``embed_dim``),
T text tokens, V vocabulary, D LLM hidden size.

Passes through the shared transformer (``encoder``):

- queries only (``encode_queries``): queries self-attend, cross-attend to the vision tokens, query FFN.
- text only (``text_features``): bi-directional self-attention, text FFN, no vision (ITC text side).
- queries + text, bi-directional (``multimodal_features`` / ``itm_logits``): ITM.
- queries + text, UniLM mask (``itg_logits``): image-grounded text generation.

It implements ``blip2core.protocols.Bridge``, ``InstructionAwareBridge``, ``TextBridge`` (with or
without text heads: ``has_text_heads``) and ``LoadsForeignCheckpoints``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from blip2core.bridges.qformer.checkpoint_keys import LAYOUTS
from blip2core.bridges.qformer.config import QFormerOptions
from blip2core.bridges.qformer.heads import LanguageModelHead, TextEmbeddings, query_text_similarity
from blip2core.bridges.qformer.layers import QFormerEncoder
from blip2core.bridges.qformer.masks import additive_mask, bidirectional_mask, unilm_mask
from blip2core.bridges.qformer.weight_loading import apply_plan, plan_copy
from blip2core.errors import CheckpointError
from blip2core.protocols import BridgeOutput

logger = logging.getLogger(__name__)

#: ITC temperature at initialisation (BLIP-2)
INITIAL_TEMPERATURE = 0.07


class QFormerBridge(nn.Module):
    """Learned queries that read the vision tokens through cross-attention, plus BLIP-2's text heads.

    Attributes:
        hidden_size: H.
        num_query_tokens: Q.
        vision_width: C, width the cross-attention keys/values read.
        llm_hidden_size: D.
        query_tokens: nn.Parameter [1, Q, H], normal(0, initializer_range).
        tokenizer: a Hugging Face BERT tokenizer for the text side, or None.
        temp: nn.Parameter scalar, ITC temperature (init 0.07); None without text heads.
        init_report: what ``init_from`` copied (``blip2core.bridges.qformer.bert_init.InitReport``) or None.

    Modules: ``encoder`` (``input_norm`` + ``layers``), ``llm_projection`` (Linear(H, D) or None), with
    text heads ``text_embeddings`` and, unless ``with_matching_heads=False``,
    ``vision_projection`` / ``text_projection`` (Linear(H, E)),
    ``itm_head`` (Linear(H, 2)), ``lm_head`` (ITG head tied to the word embeddings).
    """

    def __init__(
        self, options: QFormerOptions, vision_width: int, llm_hidden_size: int | None, tokenizer: Any = None
    ) -> None:
        super().__init__()
        if llm_hidden_size is not None and not options.with_llm_projection and options.hidden_size != llm_hidden_size:
            raise ValueError(
                f"qformer with_llm_projection=False passes query_output straight to the LLM: hidden_size "
                f"must be the LLM's {llm_hidden_size}, got {options.hidden_size}"
            )
        if options.instruction_aware and tokenizer is None:
            raise ValueError("qformer instruction_aware needs a tokenizer: set the option 'tokenizer' or 'init_from'")
        self.options = options
        self.hidden_size = options.hidden_size
        self.num_query_tokens = options.num_query_tokens
        self.vision_width = vision_width
        self.llm_hidden_size = llm_hidden_size
        self.tokenizer = tokenizer
        self.init_report: Any = None

        self.query_tokens = nn.Parameter(torch.empty(1, options.num_query_tokens, options.hidden_size))
        self.encoder = QFormerEncoder(options, vision_width)
        # no LLM (a feature-extraction / retrieval pipeline): nothing to project to
        with_projection = options.with_llm_projection and llm_hidden_size is not None
        self.llm_projection = nn.Linear(options.hidden_size, llm_hidden_size) if with_projection else None

        self.text_embeddings: TextEmbeddings | None = None
        self.vision_projection: nn.Linear | None = None
        self.text_projection: nn.Linear | None = None
        self.itm_head: nn.Linear | None = None
        self.lm_head: LanguageModelHead | None = None
        self.temp: nn.Parameter | None = None
        if options.with_text_heads:
            self.text_embeddings = TextEmbeddings(options)
        if options.with_text_heads and options.with_matching_heads:
            self.vision_projection = nn.Linear(options.hidden_size, options.embed_dim)
            self.text_projection = nn.Linear(options.hidden_size, options.embed_dim)
            self.itm_head = nn.Linear(options.hidden_size, 2)
            self.lm_head = LanguageModelHead(options)
            self.temp = nn.Parameter(torch.tensor(INITIAL_TEMPERATURE))
        self.reset_parameters()
        if options.freeze_text_side:
            for module in self.text_side_modules():
                module.requires_grad_(False)

    def text_side_modules(self) -> list[nn.Module]:
        """The text embeddings and each layer's text feed-forward (what ``freeze_text_side`` freezes)."""
        if self.text_embeddings is None:
            return []
        return [self.text_embeddings, *(layer.text_ffn for layer in self.encoder.layers)]

    # -- initialisation --------------------------------------------------------------------
    @torch.no_grad()
    def reset_parameters(self) -> None:
        """BERT init: linear / embedding weights normal(0, initializer_range), biases 0, LayerNorm 1 / 0,
        queries normal(0, initializer_range), padding row 0, temperature 0.07."""
        std = self.options.initializer_range
        for module in self.modules():
            if isinstance(module, nn.Linear):
                module.weight.normal_(0.0, std)
                if module.bias is not None:
                    module.bias.zero_()
            elif isinstance(module, nn.Embedding):
                module.weight.normal_(0.0, std)
                if module.padding_idx is not None:
                    module.weight[module.padding_idx].zero_()
            elif isinstance(module, nn.LayerNorm):
                module.weight.fill_(1.0)
                module.bias.zero_()
            elif isinstance(module, LanguageModelHead):
                module.bias.zero_()
        self.query_tokens.normal_(0.0, std)
        if self.temp is not None:
            self.temp.fill_(INITIAL_TEMPERATURE)

    # -- the Bridge protocol -----------------------------------------------------------------
    @property
    def instruction_aware(self) -> bool:
        """Whether ``forward`` reads an instruction (``options.instruction_aware``)."""
        return self.options.instruction_aware

    def forward(
        self,
        vision_tokens: torch.Tensor,
        vision_attention_mask: torch.Tensor | None = None,
        instruction: list[str] | None = None,
    ) -> BridgeOutput:
        """vision_tokens [B, N, C] (+ mask [B, N], 1 = real token) ->
        BridgeOutput(query_output [B, Q, H], llm_inputs [B, Q, D], llm_attention_mask None = all visible).

        ``instruction``: B strings, read only by an instruction-aware Q-Former (None = "" for every
        row); the queries then attend to the instruction's tokens in one bi-directional pass.
        """
        if self.instruction_aware:
            query_output = self.encode_instructed_queries(vision_tokens, instruction, vision_attention_mask)
        else:
            query_output = self.encode_queries(vision_tokens, vision_attention_mask)
        return BridgeOutput(query_output=query_output, llm_inputs=self.project_to_llm(query_output))

    def encode_instructed_queries(
        self,
        vision_tokens: torch.Tensor,
        instruction: list[str] | None,
        vision_attention_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """vision_tokens [B, N, C] and B instruction strings -> query_output [B, Q, H]: queries and
        instruction tokens in one bi-directional pass (InstructBLIP), the query positions kept."""
        ids, mask = self.tokenize_instructions(instruction, vision_tokens.shape[0], vision_tokens.device)
        hidden = self.multimodal_features(vision_tokens, ids, mask, vision_attention_mask)
        return hidden[:, : self.num_query_tokens, :]

    def tokenize_instructions(
        self, instruction: list[str] | None, batch: int, device: torch.device
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """B strings (None: B empty ones) -> input_ids, attention_mask [B, T] with [CLS] / [SEP],
        cut at ``max_instruction_length``."""
        if self.tokenizer is None:
            raise RuntimeError("an instruction-aware qformer needs a tokenizer (set 'tokenizer' or 'init_from')")
        texts = [""] * batch if instruction is None else [str(t) for t in instruction]
        if len(texts) != batch:
            raise ValueError(f"got {len(texts)} instructions for {batch} images: give one per image")
        encoded = self.tokenizer(texts, padding="longest", truncation=True,
                                 max_length=self.options.max_instruction_length, return_tensors="pt")
        return encoded["input_ids"].to(device), encoded["attention_mask"].to(device)

    def encode_queries(
        self, vision_tokens: torch.Tensor, vision_attention_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """vision_tokens [B, N, C] (+ mask [B, N]) -> query_output [B, Q, H] (last hidden state)."""
        vision_tokens, vision_bias = self._vision_inputs(vision_tokens, vision_attention_mask)
        queries = self.query_tokens.expand(vision_tokens.shape[0], -1, -1)
        return self.encoder(queries, None, self.num_query_tokens, vision_tokens, vision_bias)

    def project_to_llm(self, query_output: torch.Tensor) -> torch.Tensor:
        """query_output [B, Q, H] -> llm_inputs [B, Q, D]."""
        return query_output if self.llm_projection is None else self.llm_projection(query_output)

    # -- the TextBridge protocol: image-text contrastive (ITC) ------------------------------
    @property
    def has_text_heads(self) -> bool:
        """Whether this Q-Former has its text side with the ITC / ITM / ITG heads
        (``options.with_text_heads`` and ``options.with_matching_heads``)."""
        return self.text_projection is not None

    @property
    def max_text_tokens(self) -> int:
        """The longest text ``text_features`` accepts (``options.max_position_embeddings``)."""
        return self.options.max_position_embeddings

    def image_embeds_proj(self, query_output: torch.Tensor) -> torch.Tensor:
        """query_output [B, Q, H] -> L2-normalised query embeddings [B, Q, E]."""
        return F.normalize(self._text_part(self.vision_projection)(query_output), dim=-1)

    def text_features(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Text-only, bi-directional pass: input_ids [B, T] long (+ attention_mask [B, T]) -> hidden [B, T, H]."""
        embeddings = self._text_part(self.text_embeddings)(input_ids)
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        bias = additive_mask(bidirectional_mask(attention_mask), embeddings.dtype)
        return self.encoder(embeddings, bias, 0)

    def text_embeds_proj(self, text_hidden: torch.Tensor) -> torch.Tensor:
        """text_hidden [B, T, H] -> L2-normalised projection of the first ([CLS]) token [B, E]."""
        return F.normalize(self._text_part(self.text_projection)(text_hidden[:, 0, :]), dim=-1)

    def text_tokens_proj(self, text_hidden: torch.Tensor) -> torch.Tensor:
        """text_hidden [B, T, H] -> L2-normalised projection of every token [B, T, E] (LAVIS's
        ``text_embeds_proj`` feature; ``[:, 0]`` equals ``text_embeds_proj``)."""
        return F.normalize(self._text_part(self.text_projection)(text_hidden), dim=-1)

    def itc_scores(
        self,
        vision_tokens: torch.Tensor,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        vision_attention_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Every image against every text: vision_tokens [B_img, N, C], input_ids / attention_mask [B_txt, T]
        -> cosine similarity [B_img, B_txt], max over the Q queries, *not* divided by ``temp``
        (HF ``Blip2ForImageTextRetrieval(use_image_text_matching_head=False).logits_per_image``)."""
        image_embeds = self.image_embeds_proj(self.encode_queries(vision_tokens, vision_attention_mask))
        text_embeds = self.text_embeds_proj(self.text_features(input_ids, attention_mask))
        return query_text_similarity(image_embeds, text_embeds)

    # -- image-text matching (ITM) -----------------------------------------------------------
    def multimodal_features(
        self,
        vision_tokens: torch.Tensor,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        vision_attention_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Queries and text in one bi-directional pass (pairs: image b with text b).

        vision_tokens [B, N, C], input_ids / attention_mask [B, T] -> hidden [B, Q+T, H] (queries first).
        """
        embeddings, text_mask = self._joint_embeddings(vision_tokens, input_ids, attention_mask)
        query_mask = text_mask.new_ones(text_mask.shape[0], self.num_query_tokens)
        bias = additive_mask(bidirectional_mask(torch.cat([query_mask, text_mask], dim=1)), embeddings.dtype)
        vision_tokens, vision_bias = self._vision_inputs(vision_tokens, vision_attention_mask)
        return self.encoder(embeddings, bias, self.num_query_tokens, vision_tokens, vision_bias)

    def itm_logits(
        self,
        vision_tokens: torch.Tensor,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        vision_attention_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Match logits per pair: vision_tokens [B, N, C], input_ids / attention_mask [B, T] -> [B, 2]
        (index 1 = "matches"): ``itm_head`` on each query position of the joint pass, mean over queries
        (HF ``Blip2ForImageTextRetrieval(use_image_text_matching_head=True).logits_per_image``)."""
        hidden = self.multimodal_features(vision_tokens, input_ids, attention_mask, vision_attention_mask)
        return self._text_part(self.itm_head)(hidden[:, : self.num_query_tokens, :]).mean(dim=1)

    # -- image-grounded text generation (ITG) ------------------------------------------------
    def itg_logits(
        self,
        vision_tokens: torch.Tensor,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        vision_attention_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Next-token logits of the text decoder conditioned on the queries through the UniLM mask.

        vision_tokens [B, N, C], input_ids / attention_mask [B, T] -> logits [B, T, V]; position t
        predicts token t+1 (shift before the loss). BLIP-2 replaces ``input_ids[:, 0]`` ([CLS]) by the
        decoder BOS ("[DEC]") before calling this; queries see only queries, text sees all queries and
        the text up to itself, so the query states equal those of ``encode_queries``.
        """
        embeddings, text_mask = self._joint_embeddings(vision_tokens, input_ids, attention_mask)
        bias = additive_mask(unilm_mask(self.num_query_tokens, text_mask), embeddings.dtype)
        vision_tokens, vision_bias = self._vision_inputs(vision_tokens, vision_attention_mask)
        hidden = self.encoder(embeddings, bias, self.num_query_tokens, vision_tokens, vision_bias)
        text_hidden = hidden[:, self.num_query_tokens :, :]
        return self._text_part(self.lm_head)(text_hidden, self.text_embeddings.word_embeddings.weight)

    # -- foreign checkpoints -----------------------------------------------------------------
    def load_foreign_state_dict(
        self, state_dict: Mapping[str, torch.Tensor], layout: str
    ) -> tuple[list[str], list[str]]:
        """Copy Q-Former weights saved by transformers (``layout="hf"``) or LAVIS (``"lavis"``).

        ``state_dict`` holds the bridge's keys under their full original names (see
        ``blip2core.bridges.qformer.checkpoint_keys`` for the table). Shapes are checked before anything
        is written.

        Returns:
            (missing, unexpected): own parameter names that got nothing, and checkpoint names that fill
            nothing here (e.g. LAVIS' ``Qformer.cls.*`` on a bridge built without text heads). The parts
            transformers never stores (the ITG ``lm_head`` and ``temp``) are not counted missing for
            ``"hf"``: they keep their current values, and a log line says so.

        Raises:
            CheckpointError: unknown layout, or a shape mismatch naming the key, expected and found shape.
        """
        scheme = LAYOUTS.get(layout)
        if scheme is None:
            raise CheckpointError(
                f"unknown checkpoint layout {layout!r} for qformer; expected one of {sorted(LAYOUTS)}"
            )
        own_state = self.state_dict()
        plan = plan_copy(own_state, state_dict, scheme)
        missing = apply_plan(own_state, plan, self)
        kept = [name for name in missing if scheme.cannot_store(name)]
        if kept:
            logger.info("qformer: %s checkpoints have no %s; they keep their current values", layout, ", ".join(kept))
        return [name for name in missing if name not in kept], plan.unexpected

    # -- helpers -----------------------------------------------------------------------------
    def _text_part(self, module: nn.Module | None) -> nn.Module:
        if module is None:
            if self.text_embeddings is None:
                raise RuntimeError(
                    "this qformer was built with with_text_heads=False: it has no text embeddings, ITC/ITM/ITG heads"
                )
            raise RuntimeError(
                "this qformer was built with with_matching_heads=False: its text side is an instruction input "
                "only, with no ITC/ITM/ITG heads"
            )
        return module

    def _vision_inputs(
        self, vision_tokens: torch.Tensor, vision_attention_mask: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Cast vision tokens [B, N, C] to the bridge's dtype; mask [B, N] -> additive [B, 1, 1, N] or None."""
        if vision_tokens.dim() != 3 or vision_tokens.shape[-1] != self.vision_width:
            raise ValueError(
                f"qformer expects vision tokens [B, N, {self.vision_width}], got {list(vision_tokens.shape)}"
            )
        dtype = self.query_tokens.dtype
        vision_tokens = vision_tokens.to(dtype)
        if vision_attention_mask is None:
            return vision_tokens, None
        return vision_tokens, additive_mask(bidirectional_mask(vision_attention_mask), dtype)

    def _joint_embeddings(
        self, vision_tokens: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """[queries ; text embeddings] [B, Q+T, H] and the text mask [B, T] (ones when not given)."""
        if vision_tokens.shape[0] != input_ids.shape[0]:
            raise ValueError(
                f"image-text pairs need as many images as texts: {vision_tokens.shape[0]} vs {input_ids.shape[0]}"
            )
        text = self._text_part(self.text_embeddings)(input_ids)
        queries = self.query_tokens.expand(input_ids.shape[0], -1, -1)
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        return torch.cat([queries, text], dim=1), attention_mask
