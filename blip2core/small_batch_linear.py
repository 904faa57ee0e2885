"""Faster ``nn.Linear`` for a few rows on the CPU: ``SmallBatchLinear`` and ``use_small_batch_linears``.

``nn.Linear`` computes ``y = x @ W.T`` (x: [rows, in], W: [out, in]). On the CPU, with 2 to 128
rows, oneMKL's float32 GEMM runs the same product written the other way round, ``(W @ x.T).T``,
faster: 1.5-4.4x at 2-8 rows, 1.1-1.4x at 128 (benchmarks/linear_layouts.py, AMD EPYC with AVX2;
e.g. OPT-125m's 50,272 x 768 output head with the 5 rows of a 5-beam search, 62 -> 14 ms; the same
with weights memory-mapped at unaligned addresses, as a checkpoint gives them). Those row counts are
exactly what generation runs: every decoding step of a beam search (rows = beams x images), a batch of
captions or questions, the Q-Former's 32 queries, the language model's prefix. One row (greedy
decoding) and hundreds of rows (a vision tower's patches, training batches) gain nothing and keep
``F.linear``.

The results are the same dot products summed in another order: equal to float32 rounding
(relative differences up to ~1e-6; tests/test_small_batch_linear.py), not bit-identical. Only calls
with autograd off take the other form: training steps (forward and backward) are unchanged, while
what a trainer computes under ``torch.no_grad`` (evaluation, hard-negative mining) may differ from
before by that rounding.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

#: the row counts that take ``(W @ x.T).T``: one row and large batches are as fast with ``F.linear``
MIN_ROWS, MAX_ROWS = 2, 128
_PLAIN = (nn.Parameter, torch.Tensor)


class SmallBatchLinear(nn.Linear):
    """An ``nn.Linear`` (same parameters, state-dict names and hooks) whose inference forward on the
    CPU in float32 computes ``(W @ x.T).T`` for ``MIN_ROWS``..``MAX_ROWS`` rows.

    Shapes: x [..., in_features] -> [..., out_features]; rows = x.numel() // in_features.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.weight
        if (
            type(weight) not in _PLAIN  # a tensor subclass (a quantized weight) keeps its own F.linear
            or x.dim() == 0
            or x.device.type != "cpu"
            or x.dtype != torch.float32
            or weight.dtype != torch.float32
            or torch.is_grad_enabled()
            or x.shape[-1] != weight.shape[1]
            or not MIN_ROWS <= x.numel() // max(weight.shape[1], 1) <= MAX_ROWS
        ):
            return F.linear(x, weight, self.bias)
        out = transposed_linear(x.reshape(-1, weight.shape[1]), weight, self.bias)
        return out.view(*x.shape[:-1], weight.shape[0])


def transposed_linear(rows: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """``F.linear(rows, weight, bias)`` computed as ``(W @ rows.T).T``: rows [R, in] -> [R, out], contiguous."""
    if bias is None:
        out = torch.mm(weight, rows.t())  # [out, R]
    else:
        out = torch.addmm(bias.unsqueeze(1), weight, rows.t())
    return out.t().contiguous()


def use_small_batch_linears(module: nn.Module) -> int:
    """Make every plain ``nn.Linear`` inside ``module`` a ``SmallBatchLinear`` in place (its class
    only: parameters, buffers, hooks and state-dict names stay as they are). Subclasses of
    ``nn.Linear`` (quantized or library-specific layers) and linears whose weight is a tensor
    subclass (torchao's quantized tensors) are left alone. Returns how many changed."""
    changed = 0
    for child in module.modules():
        if type(child) is nn.Linear and type(child.weight) in _PLAIN:
            child.__class__ = SmallBatchLinear
            changed += 1
    return changed
