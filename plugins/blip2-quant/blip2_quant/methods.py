"""The quantizers: each turns one frozen (or bridge) component into its quantized form.

| method | weights | activations | library |
|---|---|---|---|
| ``none`` | unchanged | unchanged | - |
| ``bf16`` / ``fp16`` | 16-bit float | 16-bit float | torch casts |
| ``int8-dynamic`` | int8 per channel | int8 per call | torch.ao (CPU), torchao (CUDA) |
| ``int8-weight-only`` | int8 per channel | component dtype | torchao in an LLM; elsewhere plain torch |
| ``int4-weight-only`` | 4-bit, per group of 64 | component dtype | plain torch (torchao has no CPU int4 kernel here) |

Every quantizer rewrites ``nn.Linear`` layers in place (and, with ``include_embeddings``, by
default for the weight-only methods on a language model, ``nn.Embedding`` tables and the LLM
output head), one layer at a time, so the float weights of a
layer are freed as soon as its quantized copy exists. The int8 / int4 quantizers set
``quantizes_while_loading``: on the CPU the pipeline then hands over a frozen component still in
its checkpoint's dtype, with ``dtype``, and each layer is cast just before it is quantized
(``blip2_quant.streaming``). ``none`` and the casts take the component already cast, as before.
"""

from __future__ import annotations

import warnings

import torch
from torch import nn

from blip2core import LanguageModel
from blip2core.plugin_api import checked_dtype, dtype_name
from blip2_quant.casts import cast_component
from blip2_quant.int8 import dynamic_int8_linear, weight_only_int8_linear
from blip2_quant.options import (
    Int4WeightOnlyOptions,
    Int8DynamicOptions,
    Int8WeightOnlyOptions,
    SelectOptions,
)
from blip2_quant.packed import PackedRows, QuantEmbedding, QuantLinear, pack
from blip2_quant.streaming import LayerRewrite
from blip2_quant.targets import embedding_targets, linear_targets


class QuantizationWarning(UserWarning):
    """A quantization that is known to lose much of the component's accuracy."""


def with_embedding_default(options: SelectOptions, include: bool) -> SelectOptions:
    """options with ``include_embeddings`` decided: as given, or ``include`` when left at None."""
    if options.include_embeddings is not None:
        return options
    return options.model_copy(update={"include_embeddings": include})


def _device_of(module: nn.Module) -> str:
    tensor = next(module.parameters(), None)
    return str(tensor.device) if tensor is not None else "cpu"


class NoQuantizer:
    """``none``: the component unchanged (to override a spec's entry from the CLI)."""

    def quantize(self, module: nn.Module) -> nn.Module:
        return module


class CastQuantizer:
    """``bf16`` / ``fp16``: half-precision weights (see ``blip2_quant.casts``); warns on a device
    without native support for it."""

    def __init__(self, dtype: torch.dtype) -> None:
        self.dtype = dtype

    def quantize(self, module: nn.Module) -> nn.Module:
        checked_dtype(dtype_name(self.dtype), _device_of(module), what="quantize")
        return cast_component(module, self.dtype)


class Int8DynamicQuantizer:
    """``int8-dynamic``: every selected Linear -> int8 weights + dynamically quantized activations."""

    quantizes_while_loading = True  # blip2core hands over the component uncast, with dtype

    def __init__(self, options: Int8DynamicOptions) -> None:
        self.options = options

    def quantize(self, module: nn.Module, dtype: torch.dtype | None = None) -> nn.Module:
        if isinstance(module, LanguageModel):
            warnings.warn(
                "int8-dynamic quantizes each Linear's input with one scale per call; a language model's "
                "activation outliers make that lossy (SmolLM2-135M kept 39% of its next tokens, "
                "docs/quantization.md): prefer int8-weight-only for an LLM, and check with "
                "`blip2 quantize-report`", QuantizationWarning, stacklevel=2)
        options = with_embedding_default(self.options, include=False)
        rewrite = LayerRewrite(module, dtype)
        for name, linear in linear_targets(module, options):
            rewrite.install(name, linear, dynamic_int8_linear(rewrite.cast(linear), self.options.backend))
        return rewrite.finish()


class WeightOnlyQuantizer:
    """``int8-weight-only`` / ``int4-weight-only``: packed weights, activations unchanged.

    Embedding tables (with ``include_embeddings``) are packed row-wise; an output head sharing an
    embedding's weight shares its packed rows too (stored once).
    """

    quantizes_while_loading = True  # blip2core hands over the component uncast, with dtype

    def __init__(self, bits: int, options: SelectOptions) -> None:
        self.bits = bits
        self.options = options
        self.group_size = getattr(options, "group_size", 64)

    def quantize(self, module: nn.Module, dtype: torch.dtype | None = None) -> nn.Module:
        options = with_embedding_default(self.options, include=isinstance(module, LanguageModel))
        # torchao's int8 tensor only inside an LLM (HF modules call their Linears). A bridge is
        # written by pipe.save (dequantised) and quantized again at load: it gets the plain-torch
        # packing, whose re-quantization is exact (torchao's rescales by 127/127.5). So does a
        # vision encoder: timm's EVA attention calls F.linear(x, weight=self.qkv.weight), which
        # torchao's tensor cannot take by keyword; QuantLinear.weight dequantises for such callers.
        torchao_int8 = isinstance(module, LanguageModel)
        shared: dict[int, PackedRows] = {}  # id(original embedding weight) -> its packed rows
        rewrite = LayerRewrite(module, dtype)
        for name, embedding in embedding_targets(module, options):
            packed = pack(rewrite.cast(embedding).weight, self.bits, self.group_size)
            shared[id(embedding.weight)] = packed
            rewrite.install(name, embedding, QuantEmbedding(packed, embedding.padding_idx, embedding.weight.dtype))
        for name, linear in linear_targets(module, options):
            tied = shared.get(id(linear.weight))
            rewrite.cast(linear)  # a tied weight is the embedding's, already cast: no change
            if tied is not None:
                replacement = QuantLinear(tied, linear.bias, linear.weight.dtype)
            elif self.bits == 8 and torchao_int8:
                replacement = weight_only_int8_linear(linear)
            else:
                replacement = QuantLinear(pack(linear.weight, self.bits, self.group_size), linear.bias, linear.weight.dtype)
            rewrite.install(name, linear, replacement)
        return rewrite.finish()


def build_none(options: None) -> NoQuantizer:
    return NoQuantizer()


def build_bf16(options: None) -> CastQuantizer:
    return CastQuantizer(torch.bfloat16)


def build_fp16(options: None) -> CastQuantizer:
    return CastQuantizer(torch.float16)


def build_int8_dynamic(options: Int8DynamicOptions) -> Int8DynamicQuantizer:
    return Int8DynamicQuantizer(options)


def build_int8_weight_only(options: Int8WeightOnlyOptions) -> WeightOnlyQuantizer:
    return WeightOnlyQuantizer(8, options)


def build_int4_weight_only(options: Int4WeightOnlyOptions) -> WeightOnlyQuantizer:
    return WeightOnlyQuantizer(4, options)
