"""Weights stored in int8 or int4 with their scales, dequantised on the fly (plain torch).

Shapes: R rows (output features of a Linear, vocabulary of an Embedding), K inputs per row,
G = ceil(K / group_size) groups per row.

- ``Int8Rows``: int8 [R, K] and one float32 scale per row (symmetric, scale = max|w| / 127).
- ``Int4Rows``: uint8 [R, G * group_size / 2] holding two 4-bit values per byte (low nibble =
  even column), and float32 scale and offset [R, G] per group (asymmetric: w = q * scale + offset,
  q in 0..15). Rows are zero-padded to a whole number of groups.

Both are idempotent: quantizing the dequantised weights again gives the same codes and scales
(up to float rounding), so a saved-then-requantized pipeline computes the same outputs.
Their buffers are not persistent: the modules using them write dequantised ``weight`` tensors
into state dicts (``QuantLinear`` / ``QuantEmbedding``).
"""

from __future__ import annotations

import torch
from torch import nn


#: at most this many rows of activations take torch's int8 weight-only CPU kernel; from 8 rows on,
#: casting the codes and a float matmul is faster (SmolLM2's head, AMD EPYC, fma avx f16c avx2: 8 rows
#: 161 ms against 105 ms; benchmarks/quantization_kernels.py --int8-head --tokens 1,2,4,8,40)
INT8PACK_MAX_ROWS = 4
INT8PACK_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


class Int8Rows(nn.Module):
    """A [R, K] weight as int8 codes [R, K] + scales [R] (float32)."""

    def __init__(self, weight: torch.Tensor) -> None:
        super().__init__()
        weight = weight.detach().float()
        scale = weight.abs().amax(dim=1).clamp(min=1e-12) / 127.0
        codes = (weight / scale[:, None]).round_().clamp_(-127, 127).to(torch.int8)  # in place: one float temporary
        self.register_buffer("codes", codes, persistent=False)
        self.register_buffer("scale", scale, persistent=False)
        self.shape = tuple(weight.shape)

    def dequantize(self, rows: torch.Tensor | None = None, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """rows [M] long (None: all) -> weights [M, K] (or [R, K]) in dtype."""
        codes = self.codes if rows is None else self.codes[rows]
        scale = self.scale if rows is None else self.scale[rows]
        return (codes.to(dtype) * scale[:, None].to(dtype))

    def matmul(self, x: torch.Tensor) -> torch.Tensor:
        """x [..., K] -> x @ W^T [..., R]: the int8 codes are cast, the scale applied to the output.

        A few rows on the CPU (one token per sequence: decoding) go through torch's int8
        weight-only kernel instead, which reads the int8 codes as they are: casting a whole
        vocabulary head (SmolLM2: 49,152 x 576) for one token took 60 ms against 20 ms on an AVX2
        CPU (AMD EPYC, fma avx f16c avx2; benchmarks/quantization_kernels.py --int8-head)."""
        rows = x.numel() // x.shape[-1] if x.numel() else 0
        no_grad_needed = not (torch.is_grad_enabled() and x.requires_grad)  # the kernel has no derivative
        if 0 < rows <= INT8PACK_MAX_ROWS and x.device.type == "cpu" and x.dtype in INT8PACK_DTYPES and no_grad_needed:
            flat = x.reshape(rows, x.shape[-1]).contiguous()
            out = torch._weight_int8pack_mm(flat, self.codes, self.scale.to(x.dtype))
            return out.view(*x.shape[:-1], self.shape[0])
        return nn.functional.linear(x, self.codes.to(x.dtype)) * self.scale.to(x.dtype)


class Int4Rows(nn.Module):
    """A [R, K] weight as packed 4-bit codes + per-group scale and offset (float32)."""

    def __init__(self, weight: torch.Tensor, group_size: int = 64) -> None:
        super().__init__()
        if group_size % 2:
            raise ValueError(f"group_size {group_size}: must be even (two 4-bit values per byte)")
        weight = weight.detach().float()
        rows, cols = weight.shape
        groups = -(-cols // group_size)
        padded = torch.zeros(rows, groups * group_size, dtype=torch.float32, device=weight.device)
        padded[:, :cols] = weight
        if cols % group_size:  # padding repeats the row's last group values so it does not widen the range
            padded[:, cols:] = weight[:, -1:].expand(rows, groups * group_size - cols)
        grouped = padded.view(rows, groups, group_size)
        low = grouped.amin(dim=2)
        high = grouped.amax(dim=2)
        scale = ((high - low) / 15.0).clamp(min=1e-12)
        codes = (grouped - low[..., None]).div_(scale[..., None]).round_().clamp_(0, 15).to(torch.uint8)
        codes = codes.view(rows, -1)
        packed = codes[:, 0::2] | (codes[:, 1::2] << 4)
        self.register_buffer("packed", packed.contiguous(), persistent=False)
        self.register_buffer("scale", scale, persistent=False)
        self.register_buffer("offset", low, persistent=False)
        self.shape = (rows, cols)
        self.group_size = group_size

    def dequantize(self, rows: torch.Tensor | None = None, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """rows [M] long (None: all) -> weights [M, K] (or [R, K]) in dtype."""
        packed = self.packed if rows is None else self.packed[rows]
        scale = self.scale if rows is None else self.scale[rows]
        offset = self.offset if rows is None else self.offset[rows]
        count = packed.shape[0]
        codes = torch.stack((packed & 0x0F, packed >> 4), dim=-1).view(count, -1, self.group_size)
        weight = codes.to(dtype) * scale[..., None].to(dtype) + offset[..., None].to(dtype)
        return weight.view(count, -1)[:, : self.shape[1]]

    def matmul(self, x: torch.Tensor) -> torch.Tensor:
        """x [..., K] -> x @ W^T [..., R]."""
        return nn.functional.linear(x, self.dequantize(dtype=x.dtype))


PackedRows = Int8Rows | Int4Rows


def pack(weight: torch.Tensor, bits: int, group_size: int = 64) -> PackedRows:
    """weight [R, K] -> Int8Rows (bits=8) or Int4Rows (bits=4)."""
    if bits == 8:
        return Int8Rows(weight)
    if bits == 4:
        return Int4Rows(weight, group_size)
    raise ValueError(f"bits {bits}: expected 8 or 4")


class QuantLinear(nn.Module):
    """``nn.Linear`` with packed weights: x [..., K] -> [..., R] in x's dtype.

    ``state_dict`` holds ``weight`` (dequantised, in the original dtype) and ``bias``, as an
    ``nn.Linear`` would, so a saved quantized module loads into an unquantized one.
    """

    def __init__(self, weights: PackedRows, bias: torch.Tensor | None, dtype: torch.dtype) -> None:
        super().__init__()
        self.weights = weights
        # a buffer, not a frozen Parameter: Pipeline.trainable_state_dict drops frozen parameters,
        # and a quantized bridge must still save its bias (written by _save_to_state_dict)
        self.register_buffer("bias", bias.detach().clone() if bias is not None else None, persistent=False)
        self.in_features = weights.shape[1]
        self.out_features = weights.shape[0]
        self.original_dtype = dtype

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.weights.matmul(x)
        return out + self.bias.to(out.dtype) if self.bias is not None else out

    @property
    def weight(self) -> torch.Tensor:
        """The dequantised weight [R, K] (computed on each access)."""
        return self.weights.dequantize(dtype=self.original_dtype)

    def _save_to_state_dict(self, destination, prefix, keep_vars):  # noqa: D401 - torch hook
        destination[prefix + "weight"] = self.weight
        if self.bias is not None:
            destination[prefix + "bias"] = self.bias.detach()

    def extra_repr(self) -> str:
        bits = 8 if isinstance(self.weights, Int8Rows) else 4
        return f"in_features={self.in_features}, out_features={self.out_features}, bits={bits}"


class QuantEmbedding(nn.Module):
    """``nn.Embedding`` with packed rows: ids [...] -> embeddings [..., D] in the original dtype."""

    def __init__(self, weights: PackedRows, padding_idx: int | None, dtype: torch.dtype) -> None:
        super().__init__()
        self.weights = weights
        self.num_embeddings, self.embedding_dim = weights.shape
        self.padding_idx = padding_idx
        self.original_dtype = dtype

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        rows = self.weights.dequantize(ids.reshape(-1), dtype=self.original_dtype)
        return rows.view(*ids.shape, self.embedding_dim)

    @property
    def weight(self) -> torch.Tensor:
        """The dequantised table [V, D] (computed on each access)."""
        return self.weights.dequantize(dtype=self.original_dtype)

    def _save_to_state_dict(self, destination, prefix, keep_vars):  # noqa: D401 - torch hook
        destination[prefix + "weight"] = self.weight

    def extra_repr(self) -> str:
        bits = 8 if isinstance(self.weights, Int8Rows) else 4
        return f"{self.num_embeddings}, {self.embedding_dim}, bits={bits}"
