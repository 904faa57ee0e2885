"""Learning-rate schedule: linear warmup, then cosine decay to a floor."""

from __future__ import annotations

import math


def warmup_cosine_lr(step: int, *, base_lr: float, total_steps: int, warmup_steps: int = 0,
                     warmup_start_lr: float = 0.0, min_lr: float = 0.0) -> float:
    """The learning rate for optimizer step ``step`` (0-based).

    Steps ``0 .. warmup_steps-1`` rise linearly from ``warmup_start_lr`` towards ``base_lr``
    (step ``warmup_steps`` is the first at ``base_lr``); the remaining steps follow half a cosine
    from ``base_lr`` down to ``min_lr``, reached at the last step.
    """
    if step < warmup_steps:
        return warmup_start_lr + (base_lr - warmup_start_lr) * step / warmup_steps
    decay_steps = max(1, total_steps - 1 - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / decay_steps)
    return min_lr + 0.5 * (base_lr - min_lr) * (1.0 + math.cos(math.pi * progress))


class WarmupCosine:
    """Sets the optimizer's lr before each step; its whole state is the step counter."""

    def __init__(self, optimizer, *, base_lr: float, total_steps: int, warmup_steps: int = 0,
                 warmup_start_lr: float = 0.0, min_lr: float = 0.0) -> None:
        self.optimizer = optimizer
        self.kwargs = dict(base_lr=base_lr, total_steps=total_steps, warmup_steps=warmup_steps,
                           warmup_start_lr=warmup_start_lr, min_lr=min_lr)
        self.step_count = 0

    def lr_at(self, step: int) -> float:
        return warmup_cosine_lr(step, **self.kwargs)

    def apply(self) -> float:
        """Set the lr of the coming optimizer step and return it."""
        lr = self.lr_at(self.step_count)
        for group in self.optimizer.param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)
        return lr

    def step(self) -> None:
        self.step_count += 1

    def state_dict(self) -> dict:
        return {"step_count": self.step_count, **self.kwargs}

    def load_state_dict(self, state: dict) -> None:
        self.step_count = int(state["step_count"])
