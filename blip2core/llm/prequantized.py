"""Checkpoints an LLM was saved in already quantized (GPTQ, AWQ, bitsandbytes, ...).

transformers loads them itself when the method's library (and, for some, a CUDA device) is
present: its ``config.json`` has a ``quantization_config``. Before loading, ``check_environment``
asks transformers' quantizer for that method whether this machine can; when it cannot, the error
names the method, the packages that are missing and what transformers said.
"""

from __future__ import annotations

import importlib.util
from typing import Any

from blip2core.errors import CheckpointError

#: quant_method -> the packages transformers needs to load it (hint only: transformers decides)
REQUIRED_PACKAGES: dict[str, tuple[str, ...]] = {
    "gptq": ("optimum", "gptqmodel"),
    "awq": ("gptqmodel", "accelerate"),
    "bitsandbytes": ("bitsandbytes", "accelerate"),
    "torchao": ("torchao",),
    "quanto": ("optimum.quanto", "accelerate"),
    "hqq": ("hqq",),
    "aqlm": ("aqlm",),
    "eetq": ("eetq",),
}


def quantization_method(config: Any) -> str | None:
    """The ``quant_method`` of a transformers config's ``quantization_config``, or None."""
    qconfig = getattr(config, "quantization_config", None)
    if qconfig is None:
        return None
    method = qconfig.get("quant_method") if isinstance(qconfig, dict) else getattr(qconfig, "quant_method", None)
    return str(getattr(method, "value", method)) if method is not None else "unknown"


def missing_packages(method: str) -> list[str]:
    """The packages of REQUIRED_PACKAGES[method] that are not importable here."""
    missing = []
    for name in REQUIRED_PACKAGES.get(method, ()):
        try:
            found = importlib.util.find_spec(name) is not None
        except ModuleNotFoundError:  # a dotted name whose parent is absent
            found = False
        if not found:
            missing.append(name)
    return missing


def check_environment(config: Any, source: str) -> None:
    """Raise CheckpointError when ``config`` describes a pre-quantized checkpoint that this machine
    cannot load; do nothing for ordinary checkpoints."""
    method = quantization_method(config)
    if method is None:
        return
    missing = missing_packages(method)
    try:
        import torch
        from transformers.quantizers import AutoHfQuantizer

        quantizer = AutoHfQuantizer.from_config(config.quantization_config, pre_quantized=True)
        quantizer.validate_environment(device_map=None, weights_only=True, dtype=torch.float32)
        problem = None
    except (ImportError, RuntimeError, ValueError, KeyError, TypeError, AttributeError) as exc:
        problem = str(exc).strip() or type(exc).__name__
    if problem is None and not missing:
        return
    needs = f"missing: {', '.join(missing)}" if missing else "its library is present"
    device = "" if torch.cuda.is_available() else " (no CUDA device here)"
    raise CheckpointError(
        f"{source}: a {method}-quantized checkpoint; transformers loads it with "
        f"{', '.join(REQUIRED_PACKAGES.get(method, ('its quantization library',)))}{device}; {needs}"
        + (f"; transformers says: {problem}" if problem else "")
    )
