from __future__ import annotations

import math

import pytest
import torch

from blip2_runner.schedule import WarmupCosine, warmup_cosine_lr


def test_linear_warmup_then_cosine_to_min_lr():
    kw = dict(base_lr=1e-4, total_steps=11, warmup_steps=4, warmup_start_lr=1e-6, min_lr=1e-5)
    lrs = [warmup_cosine_lr(s, **kw) for s in range(11)]
    assert lrs[0] == pytest.approx(1e-6)
    assert lrs[2] == pytest.approx(1e-6 + (1e-4 - 1e-6) * 2 / 4)
    assert lrs[4] == pytest.approx(1e-4)  # first step after warmup: the peak
    # half-way through the decay (6 decay steps: 4..10): cosine at pi/2 -> the mean of peak and floor
    assert lrs[7] == pytest.approx(1e-5 + 0.5 * (1e-4 - 1e-5) * (1 + math.cos(math.pi * 3 / 6)))
    assert lrs[10] == pytest.approx(1e-5)  # the last step reaches the floor
    assert all(a >= b for a, b in zip(lrs[4:], lrs[5:]))


def test_scheduler_sets_optimizer_lr_and_restores_from_state():
    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.AdamW([param], lr=1.0)
    sched = WarmupCosine(opt, base_lr=0.1, total_steps=10, warmup_steps=2)
    for _ in range(3):
        sched.apply()
        sched.step()
    other = WarmupCosine(opt, base_lr=0.1, total_steps=10, warmup_steps=2)
    other.load_state_dict(sched.state_dict())
    assert other.apply() == sched.lr_at(3) == opt.param_groups[0]["lr"]
