"""Copy foreign tensors into the bridge by name, with shape checks (no torch ``load_state_dict``).

``plan_copy`` decides which foreign tensor fills which own parameter and validates shapes before anything
is written; ``apply_plan`` writes. A failed check raises ``CheckpointError`` and leaves the model untouched.
The checks and the writes are blip2core's one shape-checked copy (``blip2core.checkpoints.copying``).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field

import torch
from torch import nn

from blip2core.bridges.qformer.checkpoint_keys import KeyScheme
from blip2core.checkpoints.copying import check_shapes, write_tensors
from blip2core.errors import CheckpointError


@dataclass
class CopyPlan:
    """Attributes:
    assignments: own name -> (foreign name, tensor).
    unexpected: foreign names that fill nothing here (unknown, or a part this bridge was built without).
    partial_rows: own names that get only the leading rows of a shorter foreign table.
    """

    assignments: dict[str, tuple[str, torch.Tensor]] = field(default_factory=dict)
    unexpected: list[str] = field(default_factory=list)
    partial_rows: list[str] = field(default_factory=list)


def plan_copy(
    own_state: Mapping[str, torch.Tensor],
    foreign_state: Mapping[str, torch.Tensor],
    scheme: KeyScheme,
    *,
    leading_rows_ok: Collection[str] = (),
) -> CopyPlan:
    """Match ``foreign_state`` onto ``own_state`` through ``scheme``; check every shape.

    Args:
        own_state: the bridge's ``state_dict()``.
        foreign_state: tensors under their original foreign names.
        scheme: the foreign naming scheme.
        leading_rows_ok: own names (embedding tables, vocab bias) that may take a foreign tensor with
            fewer rows; the remaining rows keep their values.

    Raises:
        CheckpointError: a shape mismatch (naming both keys, expected and found shapes), or two foreign
            tensors for one own parameter (e.g. an untied LM decoder) that differ.
    """
    plan = CopyPlan()
    for foreign_name, tensor in foreign_state.items():
        if scheme.is_ignored(foreign_name):
            continue
        targets = [own for own in scheme.own_names(foreign_name) if own in own_state]
        if not targets:
            plan.unexpected.append(foreign_name)
            continue
        for own_name in targets:
            plan.partial_rows += check_shapes(
                own_state, {own_name: (foreign_name, tensor)}, leading_rows_ok=leading_rows_ok, message=_mismatch
            )
            if own_name in plan.assignments:
                previous_name, previous = plan.assignments[own_name]
                if previous.shape != tensor.shape or not torch.equal(previous, tensor):
                    raise CheckpointError(
                        f"checkpoint keys {previous_name!r} and {foreign_name!r} both fill qformer "
                        f"{own_name!r} but differ (an untied LM head is not supported)"
                    )
            plan.assignments[own_name] = (foreign_name, tensor)
    return plan


@torch.no_grad()
def apply_plan(own_state: Mapping[str, torch.Tensor], plan: CopyPlan, module: nn.Module | None = None) -> list[str]:
    """Write the planned tensors in place (casting to each parameter's dtype / device).

    ``own_state`` must share storage with the module (``module.state_dict()`` does); a parameter of
    ``module`` on the meta device gets the tensor itself (``blip2core.checkpoints.copying.write_tensors``).

    Returns:
        missing: own names that received nothing, in ``own_state`` order.
    """
    write_tensors(own_state, {own_name: tensor for own_name, (_, tensor) in plan.assignments.items()}, module)
    return [name for name in own_state if name not in plan.assignments]


def _mismatch(foreign_name: str, own_name: str, expected: tuple[int, ...], found: tuple[int, ...]) -> str:
    return (
        f"checkpoint key {foreign_name!r} (-> qformer {own_name!r}): expected shape "
        f"{list(expected)}, found {list(found)}{_hint(own_name)}"
    )


def _hint(own_name: str) -> str:
    if own_name == "text_embeddings.word_embeddings.weight" or own_name == "lm_head.bias":
        return " (set the qformer option vocab_size to the checkpoint's vocabulary, e.g. 30523 for BLIP-2)"
    if own_name == "query_tokens":
        return " (set num_query_tokens / hidden_size to the checkpoint's)"
    if ".cross_attention.key." in own_name or ".cross_attention.value." in own_name:
        return " (the vision encoder's width must match the checkpoint's)"
    return ""
