"""How many bytes a module's weights really take, whatever they are stored as.

Counts every parameter and buffer once (tied weights share a storage), looks inside tensor
subclasses (torchao stores int8 codes + scales inside a ``weight`` parameter) and into torch.ao's
packed dynamic Linear layers (int8 weight + per-channel scales and zero points, bias).
"""

from __future__ import annotations

from itertools import chain

import torch
from torch import nn


def _leaves(tensor: torch.Tensor):
    """The plain tensors behind tensor (recursing through ``__tensor_flatten__`` subclasses)."""
    flatten = getattr(tensor, "__tensor_flatten__", None)
    if flatten is not None and type(tensor) not in (torch.Tensor, nn.Parameter):
        names, _ = flatten()
        for name in names:
            inner = getattr(tensor, name)
            if isinstance(inner, torch.Tensor):
                yield from _leaves(inner)
        return
    yield tensor


def _quantized_tensor_bytes(tensor: torch.Tensor) -> int:
    size = tensor.numel() * tensor.element_size()
    if tensor.qscheme() in (torch.per_channel_affine, torch.per_channel_symmetric):
        scales, zeros = tensor.q_per_channel_scales(), tensor.q_per_channel_zero_points()
        size += scales.numel() * scales.element_size() + zeros.numel() * zeros.element_size()
    else:
        size += 16  # one float64 scale, one int64 zero point
    return size


def parameter_bytes(module: nn.Module) -> int:
    """Bytes of module's parameters and buffers (each storage once), quantized ones as stored."""
    seen: set[int] = set()
    total = 0
    for tensor in chain(module.parameters(), module.buffers()):
        for leaf in _leaves(tensor):
            if leaf.is_quantized:
                total += _quantized_tensor_bytes(leaf)
                continue
            storage = leaf.untyped_storage()
            if storage.data_ptr() in seen:
                continue
            seen.add(storage.data_ptr())
            total += storage.nbytes()
    for sub in module.modules():  # torch.ao dynamic Linear keeps its weights in packed params
        packed = getattr(sub, "_packed_params", None)
        if packed is not None and hasattr(packed, "_weight_bias"):
            weight, bias = packed._weight_bias()
            total += _quantized_tensor_bytes(weight)
            if bias is not None:
                total += bias.numel() * bias.element_size()
    return total
