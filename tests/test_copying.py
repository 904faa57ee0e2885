"""``blip2core.checkpoints.copying``: the one shape-checked copy (checkpoints, vision plugins, the
Q-Former's BERT / HF / LAVIS loading)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from blip2core.checkpoints.copying import check_shapes, copy_into
from blip2core.errors import CheckpointError


class Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(5, 3)
        self.proj = nn.Linear(3, 2)
        self.norm = nn.BatchNorm1d(2)


def test_copy_into_writes_casts_and_reports_missing_and_unexpected():
    module = Tiny()
    weight = torch.arange(6, dtype=torch.float64).view(2, 3)
    missing, unexpected = copy_into(
        module, {"proj.weight": ("p.w", weight), "gone.weight": ("g.w", torch.zeros(1))}, source="ckpt.safetensors"
    )
    assert torch.equal(module.proj.weight, weight.float()) and module.proj.weight.dtype == torch.float32
    assert unexpected == ["g.w"]
    assert missing == [k for k in module.state_dict() if k != "proj.weight"]
    assert module.proj.weight.requires_grad  # still the module's parameter, written in place


def test_a_wrong_shape_is_named_and_nothing_is_written():
    module = Tiny()
    before = {k: v.clone() for k, v in module.state_dict().items()}
    with pytest.raises(CheckpointError, match=r"ckpt\.pth: key 'p\.b' \(for 'proj\.bias'\) has the wrong shape: expected \(2,\), found \(3,\)"):
        copy_into(module, {"proj.weight": ("p.w", torch.ones(2, 3)), "proj.bias": ("p.b", torch.ones(3))}, source="ckpt.pth")
    assert all(torch.equal(before[k], v) for k, v in module.state_dict().items())


def test_leading_rows_fill_a_larger_table_only_where_allowed():
    module = Tiny()
    rest = module.embed.weight[3:].clone()
    rows = torch.ones(3, 3)
    with pytest.raises(CheckpointError, match="wrong shape"):
        copy_into(module, {"embed.weight": ("e", rows)}, source="bert")
    copy_into(module, {"embed.weight": ("e", rows)}, source="bert", leading_rows_ok=["embed.weight"])
    assert torch.equal(module.embed.weight[:3], rows) and torch.equal(module.embed.weight[3:], rest)


def test_check_shapes_takes_the_callers_message_and_reports_partial_rows():
    own = Tiny().state_dict()
    partial = check_shapes(own, {"embed.weight": ("e", torch.ones(2, 3))}, leading_rows_ok={"embed.weight"})
    assert partial == ["embed.weight"]
    with pytest.raises(CheckpointError, match=r"^w\.pth: key 'x' does not line up with timm 'proj\.weight': expected \(2, 3\), found \(3, 2\)$"):
        check_shapes(own, {"proj.weight": ("x", torch.ones(3, 2))}, message=lambda src, dst, expected, found: (
            f"w.pth: key {src!r} does not line up with timm {dst!r}: expected {expected}, found {found}"
        ))
