"""Copying named tensors into a module with shape checks, and reporting what was left unset."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch
from torch import nn

from blip2core.errors import CheckpointError


def copy_into(
    module: nn.Module,
    mapped: Mapping[str, tuple[str, torch.Tensor]],
    *,
    source: str,
) -> tuple[list[str], list[str]]:
    """Copy tensors into ``module`` by its own parameter/buffer names.

    Args:
        module: receives the tensors (``load_state_dict(..., strict=False)``).
        mapped: own name -> (name in the source, tensor). Each tensor must have exactly the shape
            of ``module.state_dict()[own name]``.
        source: where the tensors came from, for error messages (a file path or a layout).

    Returns:
        (missing, unexpected): own names that got no tensor, in ``state_dict`` order, and
        source names (sorted, without repeats) whose own name does not exist in ``module``.

    Raises:
        CheckpointError: a tensor's shape differs from the parameter it is meant for; the message
            names ``source``, the source key, the own key, the expected and the found shape.
    """
    own = module.state_dict()
    usable: dict[str, torch.Tensor] = {}
    unexpected: list[str] = []
    for own_key, (source_key, tensor) in mapped.items():
        target = own.get(own_key)
        if target is None:
            unexpected.append(source_key)
            continue
        if tuple(target.shape) != tuple(tensor.shape):
            raise CheckpointError(
                f"{source}: key {source_key!r} (for {own_key!r}) has the wrong shape: "
                f"expected {tuple(target.shape)}, found {tuple(tensor.shape)}"
            )
        usable[own_key] = tensor
    module.load_state_dict(usable, strict=False)
    missing = [k for k in own if k not in usable]
    return missing, sorted(set(unexpected))


def raise_if_missing(missing: list[str], source: str, allowed: Iterable[str] = ()) -> None:
    """Raise a CheckpointError listing the parameters ``source`` left unset (``allowed`` excepted).

    Args:
        missing: own names that got no tensor (the first list ``copy_into`` returns).
        source: the weights file (and layout), for the message.
        allowed: names that may stay unset.
    """
    allowed = set(allowed)
    left = [k for k in missing if k not in allowed]
    if left:
        shown = ", ".join(left[:8]) + (f", ... ({len(left)} in all)" if len(left) > 8 else "")
        raise CheckpointError(f"{source}: weights missing for {shown}")


def frozen_parameter_names(module: nn.Module) -> set[str]:
    """Names (as in ``module.state_dict()``) of the parameters that get no gradient."""
    return {name for name, parameter in module.named_parameters() if not parameter.requires_grad}
