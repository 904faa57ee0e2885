"""The contracts a component must meet. Code written against these keeps working.

Shapes use B = batch, N = vision tokens, C = vision width, Q = query tokens, H = bridge
hidden size, D = LLM hidden size, T = text tokens, V = vocabulary size.

All protocols are ``runtime_checkable``: ``isinstance(obj, VisionEncoder)`` checks that the
attributes and methods exist (not their signatures).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import torch
from torch import nn

from blip2core.preprocess_config import PreprocessConfig


@runtime_checkable
class VisionEncoder(Protocol):
    """A frozen image encoder; an ``nn.Module``.

    Attributes:
        width: C, channels of each output token.
        preprocess_config: the input size, mean/std and interpolation it was trained with.
    """

    width: int
    preprocess_config: PreprocessConfig

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """pixel_values [B, 3, S, S] float (normalised) -> vision tokens [B, N, C].

        A CNN flattens its last feature map [B, C, h, w] into N = h*w tokens.
        """
        ...


@dataclass
class BridgeOutput:
    """What a bridge gives the pipeline.

    Attributes:
        query_output: [B, Q, H] the bridge's own representation before projection to the LLM
            (for the Q-Former: the last hidden state of the query tokens).
        llm_inputs: [B, Q, D] soft prompt in the LLM's input-embedding space.
        llm_attention_mask: [B, Q] long, or None meaning "attend to every position".
    """

    query_output: torch.Tensor
    llm_inputs: torch.Tensor
    llm_attention_mask: torch.Tensor | None = None


@runtime_checkable
class Bridge(Protocol):
    """The trainable module between the vision encoder and the LLM; an ``nn.Module``.

    Bridge factories are called as ``factory(options, vision_width=C, llm_hidden_size=D)``.

    Attributes:
        hidden_size: H of ``BridgeOutput.query_output``.
    """

    hidden_size: int

    def forward(
        self, vision_tokens: torch.Tensor, vision_attention_mask: torch.Tensor | None = None
    ) -> BridgeOutput:
        """vision_tokens [B, N, C] (+ optional mask [B, N]) -> BridgeOutput."""
        ...


@runtime_checkable
class InstructionAwareBridge(Protocol):
    """A bridge that also reads the instruction (InstructBLIP): the question of a VQA call, the
    prompt of a caption call, the prompt of a training example.

    Attributes:
        instruction_aware: True when ``forward`` uses ``instruction`` (a bridge class may support
            both modes and switch by option).
    """

    instruction_aware: bool

    def forward(
        self,
        vision_tokens: torch.Tensor,
        vision_attention_mask: torch.Tensor | None = None,
        instruction: list[str] | None = None,
    ) -> BridgeOutput:
        """vision_tokens [B, N, C] (+ mask [B, N]) and B instruction strings (None: empty) -> BridgeOutput."""
        ...


def reads_instruction(bridge: Any) -> bool:
    """Whether a bridge wants the instruction passed to ``forward``."""
    return isinstance(bridge, InstructionAwareBridge) and bool(bridge.instruction_aware)


@dataclass
class LanguageModelOutput:
    """logits [B, T, V] float; loss: scalar, present when labels were given."""

    logits: torch.Tensor
    loss: torch.Tensor | None = None


@runtime_checkable
class LanguageModel(Protocol):
    """A frozen causal LM; an ``nn.Module``.

    Attributes:
        hidden_size: D, width of its input embeddings.
        tokenizer: a Hugging Face tokenizer (``__call__``, ``batch_decode``, ``pad_token_id``, ...).
    """

    hidden_size: int
    tokenizer: Any

    def embed_tokens(self, input_ids: torch.Tensor) -> torch.Tensor:
        """input_ids [B, T] long -> embeddings [B, T, D]."""
        ...

    def forward(
        self,
        inputs_embeds: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
    ) -> LanguageModelOutput:
        """inputs_embeds [B, T, D], attention_mask [B, T], labels [B, T] (-100 = ignore)."""
        ...

    def generate(
        self, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor, **kwargs: Any
    ) -> torch.Tensor:
        """Continue from a prefix of embeddings [B, T, D]; returns new token ids [B', L] long.

        B' = B * num_return_sequences. kwargs are Hugging Face generation options.
        """
        ...


@runtime_checkable
class Preprocessor(Protocol):
    """Turns user images into the pixel_values an encoder expects.

    Preprocessor factories are called as ``factory(options, preprocess_config=encoder_config)``.
    """

    config: PreprocessConfig

    def __call__(self, images: Sequence[Any], *, train: bool = False) -> torch.Tensor:
        """images (paths, bytes, PIL, arrays, tensors) -> pixel_values [B, 3, S, S] float32."""
        ...


@runtime_checkable
class Loss(Protocol):
    """A training objective computed from the pipeline and a batch."""

    def __call__(self, pipeline: nn.Module, batch: Mapping[str, Any]) -> torch.Tensor:
        """Returns a scalar loss tensor that requires grad through the trainable parts."""
        ...


@runtime_checkable
class Task(Protocol):
    """What to train or evaluate: which data fields it reads, which losses, which metrics.

    Attributes:
        data_fields: the keys each example must have (e.g. ``("image", "text_input")``).
        losses: loss name -> weight.
        metrics: names of the metrics ``evaluate`` returns.
    """

    data_fields: tuple[str, ...]
    losses: Mapping[str, float]
    metrics: tuple[str, ...]

    def evaluate(self, pipeline: nn.Module, examples: Sequence[Mapping[str, Any]]) -> dict[str, float]:
        """Compute this task's metrics on examples."""
        ...


@runtime_checkable
class Quantizer(Protocol):
    """Rewrites a frozen module to use less memory (int8, 4-bit, ...)."""

    def quantize(self, module: nn.Module) -> nn.Module:
        """Returns the quantized module (may be the same object, modified in place)."""
        ...


@runtime_checkable
class LoadsForeignCheckpoints(Protocol):
    """Optional: a component that can read weights saved by another library.

    ``blip2core.checkpoints`` splits a Hugging Face or LAVIS BLIP-2 state dict by component and
    hands each component the keys that belong to it, with their original full names:

    - layout ``"hf"`` (transformers ``Blip2*`` models): ``vision_model.*`` to the vision encoder;
      ``query_tokens``, ``qformer.*``, ``language_projection.*``, ``vision_projection.*``,
      ``text_projection.*``, ``itm_head.*``, ``embeddings.*`` to the bridge; ``language_model.*``
      (and a top-level ``lm_head.*`` if present) to the LLM.
    - layout ``"lavis"`` (LAVIS ``.pth``): ``visual_encoder.*`` and ``ln_vision.*`` to the vision
      encoder; ``query_tokens``, ``Qformer.*``, ``opt_proj.*`` / ``llm_proj.*`` / ``t5_proj.*``,
      ``vision_proj.*``, ``text_proj.*``, ``itm_head.*``, ``temp`` to the bridge; ``opt_model.*`` /
      ``llm_model.*`` to the LLM.
    """

    def load_foreign_state_dict(
        self, state_dict: Mapping[str, torch.Tensor], layout: str
    ) -> tuple[list[str], list[str]]:
        """Copy the weights in; returns (missing keys, unexpected keys) in the component's own names
        (missing) and the source's names (unexpected)."""
        ...
