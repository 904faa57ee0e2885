"""blip2-quant: quantizers for blip2core components (registered through ``register_quantizers``).

Methods: ``none``, ``bf16``, ``fp16``, ``int8-dynamic``, ``int8-weight-only``, ``int4-weight-only``.
See docs/quantization.md for which library each uses on which device, and measured numbers.

Importing this package stays light (every ``blip2`` command imports ``blip2_quant.plugin``):
its names import their modules, and torch, on first use (PEP 562).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from blip2_quant.methods import QuantizationWarning
    from blip2_quant.sizes import parameter_bytes

_EXPORTS = {"QuantizationWarning": "blip2_quant.methods", "parameter_bytes": "blip2_quant.sizes"}


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["QuantizationWarning", "parameter_bytes"]
