"""``bf16`` / ``fp16``: store a component's weights in half precision.

A vision encoder or language model is cast whole: the pipeline already feeds each in its own
dtype (``Pipeline.vision_dtype`` / ``llm_dtype``). Anything else (a bridge, whose inputs and
outputs the pipeline keeps in float32 and whose methods other code calls directly) is cast leaf
by leaf: each module holding parameters and no children (Linear, LayerNorm, Embedding, ...) gets
half-precision weights and computes in them, taking any float input and returning float32. Parameters
of non-leaf modules (the Q-Former's query tokens) stay float32.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from blip2core import LanguageModel, VisionEncoder


def cast_component(component: nn.Module, dtype: torch.dtype) -> nn.Module:
    """component with its weights in dtype (whole for an encoder / LLM, leaf by leaf otherwise)."""
    if isinstance(component, (VisionEncoder, LanguageModel)):
        return component.to(dtype=dtype)
    for module in component.modules():
        if next(module.children(), None) is not None:
            continue
        if not any(p.is_floating_point() for p in module.parameters(recurse=False)):
            continue
        module.to(dtype=dtype)
        module.register_forward_pre_hook(_inputs_to(dtype))
        module.register_forward_hook(_outputs_back)
    return component


def _convert(value: Any, dtype: torch.dtype) -> Any:
    if isinstance(value, torch.Tensor) and value.is_floating_point():
        return value.to(dtype)
    if isinstance(value, tuple):
        return tuple(_convert(v, dtype) for v in value)
    return value


def _inputs_to(dtype: torch.dtype):
    def hook(module: nn.Module, args: tuple) -> tuple:
        return _convert(args, dtype)

    return hook


def _outputs_back(module: nn.Module, args: tuple, output: Any) -> Any:
    """Leaves of a non-encoder / non-LLM component run inside a float32 computation: return float32
    (stateless, so one quantized pipeline can serve several threads)."""
    return _convert(output, torch.float32)
