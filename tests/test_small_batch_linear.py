"""``SmallBatchLinear``: the same layer as ``nn.Linear``, computed as (W @ x.T).T for a few rows at
inference on the CPU (blip2core.small_batch_linear)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

from blip2core.small_batch_linear import MAX_ROWS, MIN_ROWS, SmallBatchLinear, use_small_batch_linears


class CalledFunctions(TorchFunctionMode):
    """Records the torch functions called inside (F.linear vs torch.mm / torch.addmm)."""

    def __init__(self) -> None:
        super().__init__()
        self.names: list[str] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):  # noqa: ANN001 - torch's signature
        self.names.append(getattr(func, "__name__", str(func)))
        return func(*args, **(kwargs or {}))


def layer(in_features: int, out_features: int, bias: bool, seed: int = 0) -> tuple[nn.Linear, SmallBatchLinear]:
    torch.manual_seed(seed)
    plain = nn.Linear(in_features, out_features, bias=bias)
    fast = nn.Linear(in_features, out_features, bias=bias)
    fast.load_state_dict(plain.state_dict())
    use_small_batch_linears(fast)
    assert type(fast) is SmallBatchLinear
    return plain, fast


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("shape", [(2, 96), (5, 96), (3, 7, 96), (MAX_ROWS, 96), (1, 96), (MAX_ROWS + 1, 96), (0, 96)])
def test_inference_output_equals_nn_linear_to_float32_rounding(shape, bias):
    plain, fast = layer(96, 200, bias)
    x = torch.randn(*shape) * 3
    rows = x.numel() // 96
    with torch.no_grad(), CalledFunctions() as called:
        got = fast(x)
    expected = plain(x)
    assert got.shape == expected.shape == (*shape[:-1], 200)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    took_other_form = "linear" not in called.names
    assert took_other_form == (MIN_ROWS <= rows <= MAX_ROWS)
    if not took_other_form:
        assert torch.equal(got, expected)  # one row, many rows: exactly F.linear


def test_inference_mode_takes_the_other_form_too():
    plain, fast = layer(64, 64, True)
    x = torch.randn(2, 4, 64)
    with torch.inference_mode(), CalledFunctions() as called:
        got = fast(x)
    assert "linear" not in called.names and "addmm" in called.names
    torch.testing.assert_close(got, plain(x).detach(), rtol=1e-5, atol=1e-5)


def test_with_autograd_it_is_nn_linear_and_gradients_are_the_same():
    plain, fast = layer(32, 48, True)
    x = torch.randn(4, 32, requires_grad=True)
    x2 = x.detach().clone().requires_grad_()
    with CalledFunctions() as called:
        out = fast(x2)
    assert "linear" in called.names
    expected = plain(x)
    assert torch.equal(out, expected)
    expected.square().sum().backward()
    out.square().sum().backward()
    assert torch.equal(x.grad, x2.grad) and torch.equal(plain.weight.grad, fast.weight.grad)


def test_other_dtypes_keep_f_linear():
    plain, fast = layer(32, 48, True)
    fast.to(torch.bfloat16)
    x = torch.randn(4, 32, dtype=torch.bfloat16)
    with torch.no_grad(), CalledFunctions() as called:
        got = fast(x)
    assert "linear" in called.names and got.dtype == torch.bfloat16


def test_only_plain_linears_change_and_the_state_dict_is_the_same_tensors():
    model = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.MultiheadAttention(8, 2), nn.Linear(8, 3, bias=False))
    before = model.state_dict(keep_vars=True)
    assert use_small_batch_linears(model) == 2
    assert type(model[0]) is SmallBatchLinear and type(model[3]) is SmallBatchLinear
    # MultiheadAttention's out_proj is a subclass of nn.Linear (NonDynamicallyQuantizableLinear): left alone
    assert type(model[2].out_proj) is not SmallBatchLinear
    after = model.state_dict(keep_vars=True)
    assert list(after) == list(before) and all(after[k] is before[k] for k in before)
    assert use_small_batch_linears(model) == 0  # already done


def test_a_linear_holding_a_tensor_subclass_weight_is_left_alone():
    class Marked(torch.Tensor):
        pass

    linear = nn.Linear(8, 8)
    linear.weight = nn.Parameter(linear.weight.detach().as_subclass(Marked), requires_grad=False)
    assert type(linear.weight) is not nn.Parameter
    assert use_small_batch_linears(linear) == 0 and type(linear) is nn.Linear


@pytest.mark.parametrize("make", [
    lambda: torch.randn(96),  # one vector: one row
    lambda: torch.randn(96, 6).t(),  # 6 rows, transposed (non-contiguous)
    lambda: torch.randn(1, 96).expand(4, 96),  # 4 rows, expanded (stride 0)
    lambda: torch.randn(3, 10, 96)[:, ::2],  # sliced
])
def test_odd_input_layouts_give_nn_linears_shape_and_values(make):
    plain, fast = layer(96, 40, True)
    x = make()
    with torch.no_grad():
        got, expected = fast(x), plain(x)
    assert got.shape == expected.shape and got.is_contiguous()
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_a_zero_dim_input_fails_as_nn_linear_does():
    plain, fast = layer(1, 1, True)
    with torch.no_grad(), pytest.raises(RuntimeError) as theirs:
        plain(torch.tensor(1.0))
    with torch.no_grad(), pytest.raises(RuntimeError) as ours:
        fast(torch.tensor(1.0))
    assert str(ours.value) == str(theirs.value)
