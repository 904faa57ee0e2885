"""Options of the quantizers (``quantize: {llm: {name: int4-weight-only, options: {...}}}``)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class SelectOptions(BaseModel):
    """Which modules a quantizer rewrites.

    Attributes:
        skip: module names (``fnmatch`` globs on the dotted names inside the component, e.g.
            ``model.model.layers.0.*``) left in their original precision.
        include_embeddings: also quantize ``nn.Embedding`` tables and the LLM's output head
            (``lm_head``; tied to the input embedding in OPT / SmolLM2, then stored once).
            ``None`` (the default) lets the method decide: the weight-only methods include them
            on a language model, where the vocabulary table is a fifth of a small LLM's bytes
            (SmolLM2-135M: 0.41x -> 0.25x with int8 at 95 % next-token agreement, see
            docs/quantization.md), and leave them alone elsewhere.
    """

    model_config = ConfigDict(extra="forbid")

    skip: list[str] = Field(default_factory=list)
    include_embeddings: bool | None = None


class CastOptions(BaseModel):
    """``bf16`` / ``fp16``: no options (the whole component is cast)."""

    model_config = ConfigDict(extra="forbid")


class Int8DynamicOptions(SelectOptions):
    """``int8-dynamic``: int8 weights (per output channel) and int8 activations (per call).

    Attributes:
        backend: ``auto`` = torch.ao's fbgemm/x86 kernels on CPU (torchao's CPU path measured 17x
            slower than fp32 on an AVX2 CPU), torchao on CUDA; or force one.
    """

    backend: Literal["auto", "torchao", "torch-ao"] = "auto"


class Int8WeightOnlyOptions(SelectOptions):
    """``int8-weight-only``: int8 weights with one scale per output channel (torchao in an LLM;
    the plain-torch packing in a bridge, whose re-quantization after pipe.save is exact, and in a
    vision encoder, whose modules may read a Linear's weight directly); activations stay in the
    component's dtype. Embeddings, when included: one scale per row."""


class Int4WeightOnlyOptions(SelectOptions):
    """``int4-weight-only``: two 4-bit weights per byte, asymmetric, one scale and one offset per
    ``group_size`` consecutive input weights; dequantised on the fly in forward.

    Attributes:
        group_size: inputs sharing a scale (smaller: more accurate, more bytes).
    """

    group_size: int = Field(64, ge=8, multiple_of=2)
