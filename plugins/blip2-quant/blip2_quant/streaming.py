"""Quantizing while loading: each layer is cast to the pipeline's dtype just before it is quantized.

``blip2core`` hands a quantizer that sets ``quantizes_while_loading`` the frozen component as loaded,
on the CPU, in its checkpoint's dtype (memory-mapped where the checkpoint allows), with the ``dtype``
to cast to (``blip2core.protocols.Quantizer``).
Casting one layer, quantizing it and dropping its float copy keeps the peak at the quantized
component plus one layer, where casting the whole component first would hold all of it in the
pipeline's dtype (a bf16 LLM in a float32 pipeline: twice its checkpoint). The result is the same:
a layer cast and then quantized is what the whole-component cast gave that layer.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools

import torch
from torch import nn

from blip2_quant.targets import set_submodule


@functools.cache
def _malloc_trim():
    """glibc's ``malloc_trim``, or None elsewhere (musl, macOS, Windows)."""
    name = ctypes.util.find_library("c")
    try:
        return getattr(ctypes.CDLL(name), "malloc_trim", None) if name else None
    except OSError:
        return None


def release_freed_memory() -> None:
    """Hand memory freed by the last layer back to the system. glibc keeps freed blocks of a few
    MiB in its heap (its mmap threshold rises after the first large free), so without this the
    per-layer float copies pile up in the heap and the peak approaches the whole float component."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


def cast_layer(module: nn.Module, dtype: torch.dtype | None) -> nn.Module:
    """``module`` with its floating-point tensors in ``dtype`` (None: as they are); in place."""
    if dtype is not None:
        module.to(dtype=dtype)
    return module


def cast_rest(component: nn.Module, dtype: torch.dtype | None, quantized: set[int]) -> None:
    """Cast every floating-point parameter and buffer of ``component`` to ``dtype``, except inside
    the modules whose ids are in ``quantized`` (their scales keep the dtype they were made in).
    Tied parameters stay tied (torch casts a parameter's data in place)."""
    if dtype is None:
        return

    def cast(tensor: torch.Tensor) -> torch.Tensor:
        return tensor.to(dtype) if tensor.is_floating_point() else tensor

    def visit(module: nn.Module) -> None:
        if id(module) in quantized:
            return
        module._apply(cast, recurse=False)
        for child in module.children():
            visit(child)

    visit(component)


class LayerRewrite:
    """Replaces a component's layers by their quantized forms, one at a time.

    ``cast(layer)`` casts a layer to ``dtype`` (the pipeline's, when quantizing while loading; None:
    the component arrived cast); ``install(name, old, new)`` puts the quantized layer in place
    (nothing to replace when it was quantized in place) and, while loading, hands the freed memory
    back; ``finish()`` casts what was not quantized and returns the component.
    """

    def __init__(self, component: nn.Module, dtype: torch.dtype | None) -> None:
        self.component = component
        self.dtype = dtype
        self.quantized: set[int] = set()  # ids of the installed modules: cast_rest leaves them alone

    def cast(self, layer: nn.Module) -> nn.Module:
        return cast_layer(layer, self.dtype)

    def install(self, name: str, old: nn.Module, new: nn.Module) -> None:
        self.quantized.add(id(new))
        if new is not old:
            set_submodule(self.component, name, new)
        if self.dtype is not None:
            release_freed_memory()

    def finish(self) -> nn.Module:
        cast_rest(self.component, self.dtype, self.quantized)
        return self.component
