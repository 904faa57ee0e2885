"""``Pipeline``: a vision encoder, a bridge and a language model composed into one module.

Data flow (shapes as in ``blip2core.protocols``)::

    pixel_values [B,3,S,S] --vision--> vision tokens [B,N,C] --bridge--> query_output [B,Q,H]
                                                                    \\-> llm_inputs [B,Q,D]
    llm_inputs ++ embed_tokens(input_ids) [B,Q+T,D] --llm--> logits [B,Q+T,V] / generated ids

The vision encoder and the LLM are frozen (eval mode, ``requires_grad=False``) and run in the
spec's dtype; the bridge is trainable and stays in float32.

``encode_vision`` is the vision step alone (cast, encode, float32): everything that needs vision
tokens (the bridge's text side, training, the feature cache) starts from it, so each image goes
through the encoder once per call. The inference methods (``caption``, ``answer``, ``match``, ...)
delegate to ``blip2core.inference``, which sees this module only for type checking.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from blip2core.protocols import (
    Bridge,
    BridgeOutput,
    LanguageModel,
    LanguageModelOutput,
    Preprocessor,
    VisionEncoder,
    is_encoder_decoder,
    reads_instruction,
)
from blip2core.checkpoints.copying import frozen_parameter_names
from blip2core.encoding import ImageEncoding
from blip2core.errors import Blip2Error
from blip2core.spec import PipelineSpec

if TYPE_CHECKING:
    from blip2core.checkpoints.apply import LoadReport


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
        llm: LanguageModel | None,
        preprocessor: Preprocessor | None = None,
    ) -> None:
        super().__init__()
        self.spec = spec
        self.vision = vision
        self.bridge = bridge
        self.llm = llm
        self.preprocessor = preprocessor
        self.image_token_id = spec.image_token_id
        self.bos_for_empty_prompt = spec.bos_for_empty_prompt
        self.load_report: LoadReport | None = None
        for frozen in self.frozen_modules():
            freeze(frozen)

    def frozen_modules(self) -> list[nn.Module]:
        return [m for m in (self.vision, self.llm) if m is not None]

    # -- module plumbing -------------------------------------------------------------------
    def train(self, mode: bool = True) -> "Pipeline":
        """Only the bridge changes mode: the frozen parts stay in eval mode (no dropout)."""
        super().train(mode)
        for frozen in self.frozen_modules():
            frozen.eval()
        return self

    @property
    def device(self) -> torch.device:
        return next(self.bridge.parameters()).device

    @property
    def vision_dtype(self) -> torch.dtype:
        return _module_dtype(self.vision)

    @property
    def llm_dtype(self) -> torch.dtype:
        return _module_dtype(self.llm) if self.llm is not None else torch.float32

    def require_llm(self) -> LanguageModel:
        if self.llm is None:
            raise Blip2Error("this pipeline has no language model (its spec has no 'llm'): it can only encode")
        return self.llm

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        """The parameters and buffers that training changes: the bridge's, less its frozen
        parameters (``requires_grad=False``, e.g. a Q-Former's ``freeze_text_side``), which the
        bridge's own construction restores."""
        frozen = frozen_parameter_names(self.bridge)
        return {f"bridge.{k}": v for k, v in self.bridge.state_dict().items() if k not in frozen}

    def save(self, folder: str | Path) -> Path:
        """Write the native format: the spec plus safetensors of the trainable parts only
        (frozen parts stay referenced by name / path). ``load_pipeline(folder)`` reads it back."""
        from blip2core.checkpoints.native import save_pipeline

        return save_pipeline(self, folder)

    # -- computation -----------------------------------------------------------------------
    @property
    def reads_instruction(self) -> bool:
        """Whether the bridge also reads the instruction (question / prompt), as InstructBLIP."""
        return reads_instruction(self.bridge)

    def encode_vision(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """pixel_values [B, 3, S, S] -> frozen vision tokens [B, N, C] float32 (cast to the
        encoder's device and dtype first)."""
        return self.vision(pixel_values.to(self.device, self.vision_dtype)).float()

    def bridge_tokens(self, vision_tokens: torch.Tensor, instruction: list[str] | None = None) -> ImageEncoding:
        """vision tokens [B, N, C] -> ImageEncoding through the bridge. ``instruction`` (B strings)
        reaches only an instruction-aware bridge; others ignore it."""
        if self.reads_instruction:
            bridged: BridgeOutput = self.bridge(vision_tokens, instruction=instruction)
        else:
            bridged = self.bridge(vision_tokens)
        llm_inputs = bridged.llm_inputs.to(self.llm_dtype)
        mask = bridged.llm_attention_mask
        if mask is None:
            mask = torch.ones(llm_inputs.shape[:2], dtype=torch.long, device=llm_inputs.device)
        return ImageEncoding(vision_tokens, bridged.query_output, llm_inputs, mask)

    def encode_images(self, pixel_values: torch.Tensor, instruction: list[str] | None = None) -> ImageEncoding:
        """pixel_values [B, 3, S, S] -> ImageEncoding (vision tokens, query output, LLM inputs).
        ``instruction``: B strings for an instruction-aware bridge (see ``bridge_tokens``)."""
        return self.bridge_tokens(self.encode_vision(pixel_values), instruction)

    def build_llm_inputs(
        self,
        encoding: ImageEncoding,
        input_ids: torch.Tensor | None,
        attention_mask: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Put the image's soft prompt in front of (or into) the text embeddings.

        When input_ids hold ``image_token_id`` placeholders (prompts tokenised the Hugging Face
        way, Q per row), the soft prompt replaces them: inputs_embeds [B, T, D], mask [B, T].
        Otherwise it is prepended: inputs_embeds [B, Q+T, D], attention_mask [B, Q+T].
        """
        if input_ids is None:
            return encoding.llm_inputs, encoding.llm_attention_mask
        llm = self.require_llm()
        input_ids = input_ids.to(self.device)
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        text_embeds = llm.embed_tokens(input_ids).to(self.llm_dtype)
        if self.image_token_id is not None:
            placeholders = input_ids == self.image_token_id
            if placeholders.any():
                return self._fill_placeholders(encoding, text_embeds, placeholders), attention_mask.to(self.device)
        embeds = torch.cat([encoding.llm_inputs, text_embeds], dim=1)
        mask = torch.cat([encoding.llm_attention_mask, attention_mask.to(self.device, torch.long)], dim=1)
        return embeds, mask

    @staticmethod
    def _fill_placeholders(
        encoding: ImageEncoding, text_embeds: torch.Tensor, placeholders: torch.Tensor
    ) -> torch.Tensor:
        expected = encoding.llm_inputs.shape[1]
        counts = placeholders.sum(dim=1)
        if (counts != expected).any():
            raise Blip2Error(
                f"each prompt needs exactly {expected} image tokens (one per query), found {counts.tolist()}"
            )
        return text_embeds.masked_scatter(placeholders.unsqueeze(-1), encoding.llm_inputs)

    def forward(
        self,
        pixel_values: torch.Tensor,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        instruction: list[str] | None = None,
    ) -> LanguageModelOutput:
        """Logits over the image positions and the text, at the same positions as transformers'
        ``Blip2ForConditionalGeneration``: [B, Q+T, V] (or [B, T, V] when input_ids already hold
        the Q image placeholders). With labels [B, T] (-100 = ignore), the loss covers text only.
        ``instruction``: B strings for an instruction-aware bridge.

        An encoder-decoder language model (T5; ``EncoderDecoderLanguageModel``) reads image and
        input_ids in its encoder; labels [B, L] are then its decoder's targets, and the logits
        [B, L, V] those of the decoder, as transformers gives them.
        """
        llm = self.require_llm()
        encoding = self.encode_images(pixel_values, instruction)
        embeds, mask = self.build_llm_inputs(encoding, input_ids, attention_mask)
        if labels is not None and not is_encoder_decoder(llm) and labels.shape[1] < embeds.shape[1]:
            pad = embeds.shape[1] - labels.shape[1]
            prefix = torch.full((labels.shape[0], pad), -100, dtype=torch.long, device=labels.device)
            labels = torch.cat([prefix, labels], dim=1)
        return llm(inputs_embeds=embeds, attention_mask=mask, labels=labels)

    @torch.no_grad()
    def generate(
        self,
        pixel_values: torch.Tensor,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        instruction: list[str] | None = None,
        **generate_kwargs: Any,
    ) -> torch.Tensor:
        """New token ids [B * num_return_sequences, L] continuing image prefix + prompt.
        ``instruction``: B strings for an instruction-aware bridge."""
        llm = self.require_llm()
        encoding = self.encode_images(pixel_values, instruction)
        embeds, mask = self.build_llm_inputs(encoding, input_ids, attention_mask)
        return llm.generate(embeds, mask, **generate_kwargs)

    # -- inference API (the work is done in blip2core.inference; thread-safe) --------------
    def caption(self, images: Any, **options: Any) -> list[str]:
        """Captions [B * num_return_sequences]; options: style, prompt, num_beams, max_new_tokens,
        ... (``blip2core.inference.captioning.caption``)."""
        from blip2core.inference.captioning import caption

        return caption(self, images, **options)

    def answer(self, images: Any, questions: Any, **options: Any) -> list[str]:
        """Answers, one per question; options: template, decoding, prefix_cache, batch_size
        (``blip2core.inference.vqa.answer``)."""
        from blip2core.inference.vqa import answer

        return answer(self, images, questions, **options)

    def chat(self, image: Any, messages: Any, **options: Any) -> Any:
        """The reply to a conversation about one image (a string, or with ``stream=True`` an iterator
        of text pieces); options: stop, decoding (``blip2core.inference.chat.chat``; several turns
        with one encoding of the image: ``blip2core.inference.chat.Conversation``)."""
        from blip2core.inference.chat import chat

        return chat(self, image, messages, **options)

    def extract_features(self, images: Any = None, texts: Any = None, mode: str = "image") -> Any:
        """``Features`` with LAVIS's field names (``blip2core.inference.features.extract_features``)."""
        from blip2core.inference.features import extract_features

        return extract_features(self, images, texts, mode)

    def match(self, images: Any, texts: Any, method: str = "itm") -> torch.Tensor:
        """Scores [P] of image-text pairs by "itm" or "itc" (``blip2core.inference.matching.match``)."""
        from blip2core.inference.matching import match

        return match(self, images, texts, method)

    def retrieve(self, images: Any, texts: Any, k: int = 5,
                 directions: Any = ("image_to_text", "text_to_image")) -> dict[str, list]:
        """ITC top-k re-scored with ITM, in the directions asked (``blip2core.inference.retrieval.retrieve``)."""
        from blip2core.inference.retrieval import retrieve

        return retrieve(self, images, texts, k, directions)

    def classify(self, images: Any, labels: Any, template: str = "a photo of {}", **options: Any) -> list[dict]:
        """Zero-shot label probabilities per image (``blip2core.inference.retrieval.classify``)."""
        from blip2core.inference.retrieval import classify

        return classify(self, images, labels, template, **options)


def _module_dtype(module: nn.Module) -> torch.dtype:
    for tensor in module.parameters():
        if tensor.is_floating_point():
            return tensor.dtype
    return torch.float32
