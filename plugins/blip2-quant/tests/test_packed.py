"""The plain-torch int8 / int4 packings: real storage, bounded error, idempotent re-quantization."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from blip2_quant import parameter_bytes
from blip2_quant.packed import INT8PACK_MAX_ROWS, Int4Rows, Int8Rows, QuantEmbedding, QuantLinear


@pytest.fixture
def weight():
    return torch.randn(48, 100, generator=torch.Generator().manual_seed(0))  # 100: not a multiple of 64


def test_int4_stores_two_values_per_byte_and_per_group_scales(weight):
    rows = Int4Rows(weight, group_size=64)
    assert rows.packed.dtype == torch.uint8 and rows.packed.shape == (48, 64)  # 2 groups x 64 / 2
    assert rows.scale.shape == rows.offset.shape == (48, 2)
    assert parameter_bytes(rows) == 48 * 64 + 2 * 48 * 2 * 4
    error = (rows.dequantize() - weight).abs()
    assert rows.dequantize().shape == weight.shape
    assert (error <= rows.scale.repeat_interleave(64, dim=1)[:, :100] / 2 + 1e-6).all()  # half a step at most


def test_int8_per_row_error_is_half_a_step(weight):
    rows = Int8Rows(weight)
    assert rows.codes.dtype == torch.int8 and parameter_bytes(rows) == 48 * 100 + 48 * 4
    assert ((rows.dequantize() - weight).abs() <= rows.scale[:, None] / 2 + 1e-6).all()


@pytest.mark.parametrize("packing", [Int8Rows, lambda w: Int4Rows(w, 32)])
def test_requantizing_dequantized_weights_gives_the_same_weights(weight, packing):
    once = packing(weight).dequantize()
    twice = packing(once).dequantize()
    assert torch.allclose(once, twice, atol=1e-6, rtol=0)


def test_quant_linear_state_dict_is_an_nn_linear_one(weight):
    linear = nn.Linear(100, 48)
    quantized = QuantLinear(Int4Rows(linear.weight, 64), linear.bias, torch.float32)
    state = quantized.state_dict()
    assert set(state) == {"weight", "bias"} and state["weight"].shape == (48, 100)
    plain = nn.Linear(100, 48)
    plain.load_state_dict(state)
    x = torch.randn(3, 100)
    assert torch.allclose(plain(x), quantized(x), atol=1e-5)
    assert quantized(x.to(torch.float64)).dtype == torch.float64


def test_quant_embedding_looks_up_rows(weight):
    embedding = QuantEmbedding(Int8Rows(weight), None, torch.float32)
    ids = torch.tensor([[0, 5], [47, 5]])
    out = embedding(ids)
    assert out.shape == (2, 2, 100)
    assert torch.equal(out[0, 1], out[1, 1])
    assert torch.allclose(out[1, 0], weight[47], atol=float(embedding.weights.scale[47]) / 2 + 1e-6)


@pytest.mark.parametrize("shape", [(1, 100), (2, 1, 100), (4, 100), (5, 100), (3, 7, 100)])
def test_int8_matmul_of_few_rows_takes_the_int8_kernel_and_agrees_with_the_cast_path(weight, shape, monkeypatch):
    """Up to INT8PACK_MAX_ROWS rows (decoding) go through torch's int8 weight-only kernel; more rows
    cast the codes. Both compute x @ (codes * scale)^T: same shape, same numbers to float rounding."""
    packed = Int8Rows(weight)
    x = torch.randn(*shape)
    calls = []
    kernel = torch._weight_int8pack_mm
    monkeypatch.setattr(torch, "_weight_int8pack_mm", lambda *args: calls.append(1) or kernel(*args))
    got = packed.matmul(x)
    expected = torch.nn.functional.linear(x, packed.dequantize())
    assert got.shape == (*shape[:-1], weight.shape[0])
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)
    rows = x.numel() // shape[-1]
    assert bool(calls) == (rows <= INT8PACK_MAX_ROWS)


def test_int8_matmul_keeps_gradients_for_few_rows(weight):
    """torch's int8 kernel has no derivative: an input that needs a gradient takes the cast path."""
    x = torch.randn(2, 100, requires_grad=True)
    Int8Rows(weight).matmul(x).sum().backward()
    torch.testing.assert_close(x.grad, Int8Rows(weight).dequantize().sum(dim=0).expand(2, -1))
