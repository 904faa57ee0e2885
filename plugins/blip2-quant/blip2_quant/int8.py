"""int8 Linear layers through the libraries that have kernels for the device.

- ``dynamic_int8_linear``: int8 weights and per-call int8 activations. CPU: torch.ao's
  fbgemm / x86 kernels (``torch.ao.nn.quantized.dynamic.Linear``, per-channel weights); torchao's
  ``Int8DynamicActivationInt8WeightConfig`` ran 17x slower than fp32 on an AVX2 CPU, so it is used
  on CUDA only (or when forced).
- ``weight_only_int8_linear``: torchao ``Int8WeightOnlyConfig`` (int8 weights, one scale per
  output channel; CPU and CUDA).

Both results write a dequantised ``weight`` (and ``bias``) into state dicts, like ``nn.Linear``.
"""

from __future__ import annotations

import warnings

import torch
from torch import nn


class DynamicInt8Linear(nn.Module):
    """torch.ao dynamic int8 Linear: x [..., K] (any float dtype) -> [..., R] in x's dtype
    (the kernel computes from float32 activations)."""

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        from torch.ao.nn.quantized.dynamic import Linear as AoDynamicLinear
        from torch.ao.quantization import per_channel_dynamic_qconfig

        source = nn.Linear(linear.in_features, linear.out_features, bias=linear.bias is not None)
        source.load_state_dict({k: v.detach().float().cpu() for k, v in linear.state_dict().items()})
        source.qconfig = per_channel_dynamic_qconfig
        with warnings.catch_warnings():  # torch.ao.quantization is deprecated in favour of torchao
            warnings.simplefilter("ignore")
            self.inner = AoDynamicLinear.from_float(source)
        self.in_features = linear.in_features
        self.out_features = linear.out_features
        self.original_dtype = linear.weight.dtype

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x.float()).to(x.dtype)

    @property
    def weight(self) -> torch.Tensor:
        """The dequantised weight [R, K]."""
        return self.inner.weight().dequantize().to(self.original_dtype)

    def _save_to_state_dict(self, destination, prefix, keep_vars):  # noqa: D401 - torch hook
        destination[prefix + "weight"] = self.weight
        bias = self.inner.bias()
        if bias is not None:
            destination[prefix + "bias"] = bias.detach().to(self.original_dtype)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, int8 dynamic (torch.ao)"


def _torchao_linear(linear: nn.Linear, config) -> nn.Linear:
    from torchao.quantization import quantize_

    quantize_(linear, config)
    linear._register_state_dict_hook(_dequantised_weight)
    return linear


def _dequantised_weight(module: nn.Module, state_dict: dict, prefix: str, local_metadata: dict) -> None:
    """state-dict hook: torchao's quantized tensor -> a plain dequantised weight (loadable anywhere)."""
    weight = state_dict.get(prefix + "weight")
    if weight is not None and hasattr(weight, "dequantize") and type(weight) is not torch.Tensor:
        state_dict[prefix + "weight"] = weight.dequantize().detach()


def dynamic_int8_linear(linear: nn.Linear, backend: str = "auto") -> nn.Module:
    """linear -> its int8-dynamic replacement for the device its weight is on."""
    on_cuda = linear.weight.is_cuda
    if backend == "torchao" or (backend == "auto" and on_cuda):
        from torchao.quantization import Int8DynamicActivationInt8WeightConfig

        return _torchao_linear(linear, Int8DynamicActivationInt8WeightConfig())
    if on_cuda:
        raise ValueError("int8-dynamic backend torch-ao has CPU kernels only; use backend auto or torchao on CUDA")
    return DynamicInt8Linear(linear)


def weight_only_int8_linear(linear: nn.Linear) -> nn.Linear:
    """linear with its weight replaced by torchao's int8 weight-only tensor (same module object)."""
    from torchao.quantization import Int8WeightOnlyConfig

    return _torchao_linear(linear, Int8WeightOnlyConfig())
