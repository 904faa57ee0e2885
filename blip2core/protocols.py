"""The contracts a component must meet. Code written against these keeps working.

Shapes use B = batch, N = vision tokens, C = vision width, Q = query tokens, H = bridge
hidden size, E = ITC embedding width, D = LLM hidden size, T = text tokens, V = vocabulary size.

Required of every component of its kind: ``VisionEncoder``, ``Bridge``, ``LanguageModel``,
``Preprocessor``, ``Task``, ``Loss``, ``Quantizer``.

Optional: the core checks them with ``isinstance`` where it needs them, and an operation that
needs a capability a component lacks raises ``MissingProtocolError`` naming both:

- ``InstructionAwareBridge``: the bridge reads the question / prompt (InstructBLIP).
- ``TextBridge``: the bridge's text side (ITC / ITM / ITG): ``match``, ``retrieve``, ``classify``,
  text and multimodal ``extract_features``, the runner's itc / itm / itg losses.
- ``GenerationDefaults``: the LLM says which tokens end a generated sequence and which pad it.
- ``EncoderDecoderLanguageModel``: the LLM is an encoder-decoder (T5 / FlanT5): the soft prompt and
  the prompt go into its encoder, the text comes out of its decoder.
- ``SupportsPrefixCache``: the LLM reuses the key/value cache of one image's soft prompt for
  many questions (``answer(prefix_cache=True)``); without it every question runs in full.
- ``BatchPreprocessor``: the preprocessor lists bad inputs instead of raising (``blip2 features``).
- ``LoadsForeignCheckpoints``, ``LoadsOwnWeights``: how a component takes part in loading weights.

All protocols are ``runtime_checkable``: ``isinstance(obj, VisionEncoder)`` checks that the
attributes and methods exist (not their signatures).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, runtime_checkable

import torch
from torch import nn

from blip2core.errors import Blip2Error
from blip2core.preprocess_config import PreprocessConfig

if TYPE_CHECKING:
    from blip2core.preprocess.preprocessor import BatchResult

P = TypeVar("P")


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


@runtime_checkable
class TextBridge(Protocol):
    """Optional: a bridge with BLIP-2's text side, what ITC, ITM, ITG and text features need.

    Used by ``match`` / ``retrieve`` / ``classify`` (``blip2core.inference``), ``extract_features``
    in modes "text" and "multimodal" (and ``image_embeds_proj`` in mode "image"), LAVIS's
    feature-extractor / ITM models (``blip2core.compat.lavis``) and the runner's itc / itm / itg
    losses. The built-in ``qformer`` bridge implements it. The image side of every method takes
    vision tokens (``Pipeline.encode_vision``), not pixels; the ITC similarity of an image and a
    text is the best query's cosine (``blip2core.bridges.qformer.heads.query_text_similarity``).

    Attributes:
        has_text_heads: False when this instance was built without its text side (e.g. the
            Q-Former of a ``Blip2ForConditionalGeneration`` checkpoint) or with it as an
            instruction input only (InstructBLIP: no ITC / ITM / ITG heads); its text methods then raise.
        tokenizer: the Hugging Face tokenizer of the text side (BERT's for the Q-Former), or None.
        max_text_tokens: the longest text ``text_features`` accepts (position embeddings), or None.
        num_query_tokens: Q.
        temp: the learned ITC temperature, a scalar tensor (``nn.Parameter`` when trainable), or
            None without text heads; ITC logits are similarities / ``temp``.
    """

    has_text_heads: bool
    tokenizer: Any
    max_text_tokens: int | None
    num_query_tokens: int
    temp: torch.Tensor | None

    def encode_queries(
        self, vision_tokens: torch.Tensor, vision_attention_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """vision_tokens [B, N, C] (+ mask [B, N]) -> query_output [B, Q, H], without reading any
        instruction (the image side of ITC)."""
        ...

    def image_embeds_proj(self, query_output: torch.Tensor) -> torch.Tensor:
        """query_output [B, Q, H] -> L2-normalised ITC query embeddings [B, Q, E]."""
        ...

    def text_features(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Text-only pass: input_ids [B, T] long (+ attention_mask [B, T]) -> hidden [B, T, H]."""
        ...

    def text_embeds_proj(self, text_hidden: torch.Tensor) -> torch.Tensor:
        """text_hidden [B, T, H] -> L2-normalised ITC text embedding [B, E] (of the first token)."""
        ...

    def text_tokens_proj(self, text_hidden: torch.Tensor) -> torch.Tensor:
        """text_hidden [B, T, H] -> L2-normalised ITC projection of every token [B, T, E]."""
        ...

    def multimodal_features(
        self,
        vision_tokens: torch.Tensor,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        vision_attention_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Pairs (image b with text b): vision_tokens [B, N, C], input_ids / attention_mask [B, T]
        -> hidden [B, Q+T, H] of one joint, bi-directional pass (queries first)."""
        ...

    def itm_logits(
        self,
        vision_tokens: torch.Tensor,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        vision_attention_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Pairs: vision_tokens [B, N, C], input_ids / attention_mask [B, T] -> match logits [B, 2]
        (index 1 = "matches")."""
        ...

    def itg_logits(
        self,
        vision_tokens: torch.Tensor,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        vision_attention_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Image-grounded text generation: vision_tokens [B, N, C], input_ids / attention_mask [B, T]
        -> next-token logits [B, T, V] (position t predicts token t+1)."""
        ...


@dataclass
class LanguageModelOutput:
    """logits [B, T, V] float; loss: scalar, present when labels were given."""

    logits: torch.Tensor
    loss: torch.Tensor | None = None


@runtime_checkable
class LanguageModel(Protocol):
    """A frozen causal LM (or, with ``EncoderDecoderLanguageModel``, an encoder-decoder); an ``nn.Module``.

    The shapes below are those of a decoder-only model; an encoder-decoder reads ``forward`` and
    ``generate`` as ``EncoderDecoderLanguageModel`` says.

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
class EncoderDecoderLanguageModel(Protocol):
    """Optional on a LanguageModel: an encoder-decoder (T5 / FlanT5, ``is_encoder_decoder`` True).

    The input embeddings [B, T, D] (soft prompt, then the prompt's tokens) go into the encoder,
    bi-directionally; text is produced by the decoder. What changes against a decoder-only model:

    - ``forward(inputs_embeds, attention_mask, labels=...)``: labels [B, L] are the *decoder's*
      targets (the answer / caption ids ending with EOS, -100 = ignore), not a copy of the input
      positions; the decoder reads them shifted right behind its start token. Returns decoder
      logits [B, L, V] (position l predicts label l, no shift) and their mean cross-entropy.
      Without labels the decoder makes one step: logits [B, 1, V] of the first output token.
    - ``generate(inputs_embeds, attention_mask, **kwargs)`` returns the decoder's new ids [B', L]
      without its start token; the prompt is never part of the output.
    - prompts are padded on the right: ``[soft prompt | prompt | pad .. pad]``, as transformers'
      ``Blip2Processor`` and LAVIS build them for T5 (relative positions count padding).
    - no ``SupportsPrefixCache``: the encoder reads the image and the question together.

    Decoder-only language models need not declare anything: a model without the attribute is
    decoder-only (``is_encoder_decoder(llm)``).

    Attributes:
        is_encoder_decoder: True.
    """

    is_encoder_decoder: bool


def is_encoder_decoder(llm: Any) -> bool:
    """Whether a language model is an encoder-decoder (``EncoderDecoderLanguageModel``)."""
    return isinstance(llm, EncoderDecoderLanguageModel) and bool(llm.is_encoder_decoder)


@runtime_checkable
class GenerationDefaults(Protocol):
    """Optional on a LanguageModel: the token ids that end a generated sequence and pad it.

    ``caption`` / ``answer`` stop at ``[*stop_token_ids, *eos_token_ids]`` and pad with
    ``pad_token_id``; the runner's LM loss ends each target with ``stop_token_ids[0]`` when there
    is one. Without it: no stop tokens beyond what ``generate`` does itself, the tokenizer's pad id.

    Attributes:
        stop_token_ids: tokens that end an answer besides EOS (OPT in BLIP-2: ``"\\n"``), or ().
        eos_token_ids: the model's end-of-sequence ids (may be several, or none).
        pad_token_id: what ``generate`` pads finished rows with, or None.
    """

    stop_token_ids: tuple[int, ...]
    eos_token_ids: tuple[int, ...]
    pad_token_id: int | None


@runtime_checkable
class SupportsPrefixCache(Protocol):
    """Optional on a LanguageModel: run once over a shared prefix (one image's soft prompt) and
    continue every prompt about that image from the cached keys / values.

    ``answer(one image, many questions, prefix_cache=True)`` uses it; the answers equal those of
    uncached generation. The transformers-backed language models implement it.
    """

    def build_prefix_cache(self, prefix_embeds: torch.Tensor) -> Any:
        """prefix_embeds [1, P, D] -> an opaque cache of the model's keys / values over the P positions."""
        ...

    def prefix_cache_kwargs(self, cache: Any, rows: int) -> dict[str, Any]:
        """Keyword arguments for ``generate`` that continue from ``cache`` for ``rows`` rows
        (prompts x beams), whose inputs start with the cached prefix; ``cache`` itself is not
        changed (``generate`` gets a private copy)."""
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
class BatchPreprocessor(Protocol):
    """Optional on a Preprocessor: a batch whose bad inputs are listed instead of raised.

    ``blip2core.inference.images.load_batch`` (``blip2 features`` over a folder) uses it; without
    it one bad input fails the whole batch.
    """

    def preprocess_batch(self, images: Sequence[Any], *, train: bool = False) -> BatchResult:
        """images -> ``BatchResult``: pixel_values [G, 3, S, S] float32 of the G inputs that loaded,
        their indices and names, and one failure (index, name, message) per input that did not."""
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

    def text_batch(self, examples: Sequence[Mapping[str, Any]]) -> Mapping[str, Any]:
        """The text part of a training batch of B examples: lists of B entries under the keys this
        task's losses read (e.g. ``"prompt"``, ``"target"``, ``"instruction"``, ``"text_input"``);
        the trainer adds the images."""
        ...

    def evaluate(self, pipeline: nn.Module, examples: Sequence[Mapping[str, Any]]) -> dict[str, float]:
        """Compute this task's metrics on examples."""
        ...


@runtime_checkable
class Quantizer(Protocol):
    """Rewrites a frozen module to use less memory (int8, 4-bit, ...).

    Quantizing while loading (optional): a quantizer with the class attribute
    ``quantizes_while_loading = True`` is called as ``quantize(module, dtype=...)`` and handed a
    frozen component (vision encoder, LLM) on the CPU *as loaded*, in its checkpoint's dtype, its
    weights memory-mapped where the checkpoint allows, instead of the component cast whole to the
    pipeline's dtype first. It casts each layer to ``dtype`` just before quantizing it, and returns
    the component with every floating-point tensor it did not quantize in ``dtype``. So a bf16
    checkpoint quantized in a float32 pipeline never exists as a whole float32 copy. A bridge, a
    component on another device, and a quantizer without the attribute get the component already
    cast, and no ``dtype``.

    A quantizer sees the component's own layers (plain ``nn.Linear``, not yet ``SmallBatchLinear``:
    ``blip2core.compose`` changes the float linears it leaves, after quantizing).
    """

    def quantize(self, module: nn.Module) -> nn.Module:
        """Returns the quantized module (may be the same object, modified in place).

        Takes ``dtype`` too when the quantizer sets ``quantizes_while_loading`` (see the class)."""
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
      ``llm_model.*`` / ``t5_model.*`` to the LLM.
    """

    def load_foreign_state_dict(
        self, state_dict: Mapping[str, torch.Tensor], layout: str
    ) -> tuple[list[str], list[str]]:
        """Copy the weights in; returns (missing keys, unexpected keys) in the component's own names
        (missing) and the source's names (unexpected)."""
        ...


@runtime_checkable
class LoadsOwnWeights(Protocol):
    """Optional: a component that may load its pretrained weights itself when built.

    Attributes:
        weights_loaded: True when it did; a checkpoint that covers only part of it then leaves
            the rest as loaded instead of reporting it missing, and ``Pipeline.save`` does not
            store it. False: its weights are random (``Pipeline.save`` stores them unless a
            checkpoint covered them or the spec has a ``seed``).
    """

    weights_loaded: bool


class MissingProtocolError(Blip2Error):
    """An operation needs an optional protocol that a pipeline's component does not implement."""


def require_protocol(
    component: Any, protocol: type[P], needed_by: str, role: str = "component", name: str | None = None
) -> P:
    """``component`` when it implements ``protocol``; else a ``MissingProtocolError`` saying which
    operation needs which protocol (and its members) and which component lacks it.

    Args:
        needed_by: the operation, e.g. ``"retrieve"`` or ``"the itc loss"``.
        role: what the component is in the pipeline: ``"bridge"``, ``"language model"``, ...
        name: the component's registered name (the spec's), when known.
    """
    if isinstance(component, protocol):
        return component
    members = ", ".join(protocol_members(protocol))
    kind = type(component)
    qualified = f"{kind.__module__}.{kind.__qualname__}"
    called = f"{name!r} ({qualified})" if name else qualified
    raise MissingProtocolError(
        f"{needed_by} needs a {role} that implements {protocol.__module__}.{protocol.__qualname__} "
        f"({members}); this pipeline's {role} {called} does not"
    )


def protocol_members(protocol: type) -> list[str]:
    """The attribute and method names ``isinstance(obj, protocol)`` checks, sorted."""
    members = getattr(protocol, "__protocol_attrs__", None)  # Python >= 3.12
    if members is None:
        members = {
            member
            for cls in protocol.__mro__[:-1]
            if cls is not Protocol and getattr(cls, "_is_protocol", False)
            for member in (*vars(cls), *vars(cls).get("__annotations__", {}))
            if not member.startswith("_")
        }
    return sorted(members)
