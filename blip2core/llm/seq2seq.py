"""``TransformersSeq2SeqLanguageModel``: a transformers encoder-decoder LM (T5 / FlanT5) behind the
``LanguageModel`` and ``EncoderDecoderLanguageModel`` protocols.

BLIP-2 with FlanT5 (LAVIS ``blip2_t5``, transformers ``Blip2ForConditionalGeneration`` with a T5
``text_config``) feeds ``[soft prompt | prompt | pad]`` to the encoder and generates with the
decoder; the training target goes to the decoder as labels.

Shapes: B = batch, T = encoder length, L = decoder length, D = input-embedding width,
V = vocabulary size.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from blip2core.llm.loss import IGNORE_INDEX
from blip2core.llm.wrapper import TransformersModel
from blip2core.protocols import LanguageModelOutput


class TransformersSeq2SeqLanguageModel(TransformersModel):
    """A frozen transformers ``*ForConditionalGeneration`` encoder-decoder fed with input embeddings.

    Implements ``LanguageModel``, ``EncoderDecoderLanguageModel`` (``is_encoder_decoder`` True),
    ``GenerationDefaults``, ``LoadsOwnWeights`` and ``LoadsForeignCheckpoints`` (attributes:
    ``TransformersModel``); not ``SupportsPrefixCache``: the encoder reads the soft prompt and the
    prompt together, so there is no image-only prefix to reuse.
    """

    is_encoder_decoder = True

    @property
    def decoder_start_token_id(self) -> int:
        """The id the decoder starts from (T5: the pad id, 0)."""
        start = getattr(self.model.generation_config, "decoder_start_token_id", None)
        if start is None:
            start = self.model.config.decoder_start_token_id
        if start is None:
            raise ValueError(f"{type(self.model).__name__}: its config names no decoder_start_token_id")
        return int(start)

    def forward(
        self,
        inputs_embeds: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        decoder_input_ids: torch.Tensor | None = None,
    ) -> LanguageModelOutput:
        """Encoder inputs_embeds [B, T, D] and attention_mask [B, T] (1 = attend); decoder side:

        - labels [B, L] (-100 = ignore): the targets; the decoder reads them shifted right behind
          the start token (transformers' rule). Returns logits [B, L, V] (position l predicts
          label l) and their mean cross-entropy.
        - else decoder_input_ids [B, L]: logits [B, L, V], no loss.
        - neither: one decoder step from the start token, logits [B, 1, V].
        """
        if attention_mask is not None:
            attention_mask = attention_mask.to(inputs_embeds.device, torch.long)
        decoder: dict[str, Any] = {}
        if labels is not None:
            decoder["labels"] = labels.to(inputs_embeds.device)
        elif decoder_input_ids is not None:
            decoder["decoder_input_ids"] = decoder_input_ids.to(inputs_embeds.device)
        else:
            start = torch.full((inputs_embeds.shape[0], 1), self.decoder_start_token_id, dtype=torch.long)
            decoder["decoder_input_ids"] = start.to(inputs_embeds.device)
        output = self.model(inputs_embeds=inputs_embeds, attention_mask=attention_mask, use_cache=False, **decoder)
        loss = None
        if labels is not None:
            logits = output.logits.float()
            loss = F.cross_entropy(
                logits.reshape(-1, logits.shape[-1]), decoder["labels"].reshape(-1), ignore_index=IGNORE_INDEX
            )
        return LanguageModelOutput(logits=output.logits, loss=loss)

    @torch.no_grad()
    def generate(
        self, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor | None = None, **kwargs: Any
    ) -> torch.Tensor:
        """Encode inputs_embeds [B, T, D] (mask [B, T]; padding anywhere) and decode.

        kwargs are transformers generation options (``max_new_tokens``, ``num_beams``,
        ``eos_token_id``, ...). Returns the decoder's new ids [B * num_return_sequences, L] long,
        without its start token, padded with ``pad_token_id`` after a sequence ends.
        """
        if attention_mask is None:
            attention_mask = torch.ones(inputs_embeds.shape[:2], dtype=torch.long, device=inputs_embeds.device)
        attention_mask = attention_mask.to(inputs_embeds.device, torch.long)
        kwargs = self._with_pad_token(kwargs)
        output = self.model.generate(inputs_embeds=inputs_embeds, attention_mask=attention_mask, **kwargs)
        sequences = getattr(output, "sequences", output)
        return sequences[:, 1:]
