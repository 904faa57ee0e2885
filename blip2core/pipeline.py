"""``Pipeline``: a vision encoder, a bridge and a language model composed into one module.

Data flow (shapes as in ``blip2core.protocols``)::

    pixel_values [B,3,S,S] --vision--> vision tokens [B,N,C] --bridge--> query_output [B,Q,H]
                                                                    \\-> llm_inputs [B,Q,D]
    llm_inputs ++ embed_tokens(input_ids) [B,Q+T,D] --llm--> logits [B,Q+T,V] / generated ids

The vision encoder and the LLM are frozen (eval mode, ``requires_grad=False``) and run in the
spec's dtype; the bridge is trainable and stays in float32.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from blip2core.protocols import Bridge, BridgeOutput, LanguageModel, LanguageModelOutput, Preprocessor, VisionEncoder
from blip2core.spec import PipelineSpec

DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
}


@dataclass
class ImageEncoding:
    """Everything ``Pipeline.encode_images`` computes for a batch of images.

    Attributes:
        vision_tokens: [B, N, C] frozen encoder output (float32).
        query_output: [B, Q, H] bridge output before projection (float32).
        llm_inputs: [B, Q, D] soft prompt, in the LLM's dtype.
        llm_attention_mask: [B, Q] long.
    """

    vision_tokens: torch.Tensor
    query_output: torch.Tensor
    llm_inputs: torch.Tensor
    llm_attention_mask: torch.Tensor


def freeze(module: nn.Module) -> nn.Module:
    """Eval mode and no gradients for every parameter of module."""
    module.eval()
    for parameter in module.parameters():
        parameter.requires_grad_(False)
    return module


class Pipeline(nn.Module):
    """A composed BLIP-2-style model. Build one with ``blip2core.load_pipeline``."""

    def __init__(
        self,
        spec: PipelineSpec,
        vision: VisionEncoder,
        bridge: Bridge,
        llm: LanguageModel,
        preprocessor: Preprocessor | None = None,
    ) -> None:
        super().__init__()
        self.spec = spec
        self.vision = vision
        self.bridge = bridge
        self.llm = llm
        self.preprocessor = preprocessor
        freeze(self.vision)
        freeze(self.llm)

    # -- module plumbing -------------------------------------------------------------------
    def train(self, mode: bool = True) -> "Pipeline":
        """Only the bridge changes mode: the frozen parts stay in eval mode (no dropout)."""
        super().train(mode)
        self.vision.eval()
        self.llm.eval()
        return self

    @property
    def device(self) -> torch.device:
        return next(self.bridge.parameters()).device

    @property
    def vision_dtype(self) -> torch.dtype:
        return _module_dtype(self.vision)

    @property
    def llm_dtype(self) -> torch.dtype:
        return _module_dtype(self.llm)

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        """The parameters and buffers that training changes: the bridge's."""
        return {f"bridge.{k}": v for k, v in self.bridge.state_dict().items()}

    # -- computation -----------------------------------------------------------------------
    def encode_images(self, pixel_values: torch.Tensor) -> ImageEncoding:
        """pixel_values [B, 3, S, S] -> ImageEncoding (vision tokens, query output, LLM inputs)."""
        pixel_values = pixel_values.to(self.device, self.vision_dtype)
        vision_tokens = self.vision(pixel_values).float()
        bridged: BridgeOutput = self.bridge(vision_tokens)
        llm_inputs = bridged.llm_inputs.to(self.llm_dtype)
        mask = bridged.llm_attention_mask
        if mask is None:
            mask = torch.ones(llm_inputs.shape[:2], dtype=torch.long, device=llm_inputs.device)
        return ImageEncoding(vision_tokens, bridged.query_output, llm_inputs, mask)

    def build_llm_inputs(
        self,
        encoding: ImageEncoding,
        input_ids: torch.Tensor | None,
        attention_mask: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Prefix the text embeddings with the image's soft prompt.

        Returns inputs_embeds [B, Q+T, D] and attention_mask [B, Q+T].
        """
        if input_ids is None:
            return encoding.llm_inputs, encoding.llm_attention_mask
        input_ids = input_ids.to(self.device)
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        text_embeds = self.llm.embed_tokens(input_ids).to(self.llm_dtype)
        embeds = torch.cat([encoding.llm_inputs, text_embeds], dim=1)
        mask = torch.cat([encoding.llm_attention_mask, attention_mask.to(self.device, torch.long)], dim=1)
        return embeds, mask

    def forward(
        self,
        pixel_values: torch.Tensor,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
    ) -> LanguageModelOutput:
        """Logits [B, Q+T, V] over the image prefix and the text; loss when labels [B, T] are given
        (labels of the image positions are ignored)."""
        encoding = self.encode_images(pixel_values)
        embeds, mask = self.build_llm_inputs(encoding, input_ids, attention_mask)
        if labels is not None:
            prefix = torch.full(encoding.llm_attention_mask.shape, -100, dtype=torch.long, device=labels.device)
            labels = torch.cat([prefix, labels], dim=1)
        return self.llm(inputs_embeds=embeds, attention_mask=mask, labels=labels)

    @torch.no_grad()
    def generate(
        self,
        pixel_values: torch.Tensor,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        **generate_kwargs: Any,
    ) -> torch.Tensor:
        """New token ids [B * num_return_sequences, L] continuing image prefix + prompt."""
        encoding = self.encode_images(pixel_values)
        embeds, mask = self.build_llm_inputs(encoding, input_ids, attention_mask)
        return self.llm.generate(embeds, mask, **generate_kwargs)


def _module_dtype(module: nn.Module) -> torch.dtype:
    for tensor in module.parameters():
        if tensor.is_floating_point():
            return tensor.dtype
    return torch.float32
