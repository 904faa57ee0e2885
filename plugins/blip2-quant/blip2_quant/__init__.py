"""blip2-quant: quantizers for blip2core components (registered through ``register_quantizers``).

Methods: ``none``, ``bf16``, ``fp16``, ``int8-dynamic``, ``int8-weight-only``, ``int4-weight-only``.
See docs/quantization.md for which library each uses on which device, and measured numbers.
"""

from blip2_quant.methods import QuantizationWarning
from blip2_quant.sizes import parameter_bytes

__all__ = ["QuantizationWarning", "parameter_bytes"]
