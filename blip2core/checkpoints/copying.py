"""Copying named tensors into a module with shape checks, and reporting what was left unset.

The one shape-checked copy of blip2core and its plugins: ``check_shapes`` validates every tensor
against the parameter or buffer it is meant for before anything is written; ``write_tensors``
writes them in place; ``copy_into`` does both for a module and says what was missing or unexpected.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping

import torch
from torch import nn

from blip2core.checkpoints.deferred import assign_tensor, keeps_checkpoint_dtype, tied_names
from blip2core.errors import CheckpointError

#: (source key, own key, expected shape, found shape) -> the CheckpointError message
MismatchMessage = Callable[[str, str, tuple[int, ...], tuple[int, ...]], str]


def check_shapes(
    own_state: Mapping[str, torch.Tensor],
    mapped: Mapping[str, tuple[str, torch.Tensor]],
    *,
    source: str = "",
    leading_rows_ok: Collection[str] = (),
    message: MismatchMessage | None = None,
) -> list[str]:
    """Check that each tensor fits the own tensor it is meant for (its shape; and a floating-point
    one takes only floating-point values: an int, bool or complex tensor would be cast silently);
    nothing is written.

    Args:
        own_state: the module's ``state_dict()`` (own name -> tensor).
        mapped: own name -> (name in the source, tensor); own names absent from ``own_state``
            are skipped (``copy_into`` reports them as unexpected).
        source: where the tensors came from, for the default message.
        leading_rows_ok: own names (embedding tables, a vocabulary bias) that may take a tensor
            with fewer rows and otherwise the same shape; the remaining rows keep their values.
        message: builds the error text; default ``"<source>: key 'k' (for 'own') has the wrong
            shape: expected (..), found (..)"``.

    Returns:
        The own names that take only leading rows, in ``mapped`` order.

    Raises:
        CheckpointError: the first tensor whose shape or kind of values does not fit.
    """
    partial: list[str] = []
    for own_key, (source_key, tensor) in mapped.items():
        target = own_state.get(own_key)
        if target is None:
            continue
        if target.is_floating_point() and not tensor.is_floating_point():  # int, bool, complex: no silent cast
            raise CheckpointError(
                f"{source + ': ' if source else ''}key {source_key!r} (for {own_key!r}) holds {tensor.dtype} values, "
                f"where {target.dtype} weights were expected"
            )
        expected, found = tuple(target.shape), tuple(tensor.shape)
        if found == expected:
            continue
        if _fits_leading_rows(expected, found) and own_key in leading_rows_ok:
            partial.append(own_key)
            continue
        text = message(source_key, own_key, expected, found) if message else (
            f"{source}: key {source_key!r} (for {own_key!r}) has the wrong shape: "
            f"expected {expected}, found {found}"
        )
        raise CheckpointError(text)
    return partial


@torch.no_grad()
def write_tensors(
    own_state: Mapping[str, torch.Tensor], tensors: Mapping[str, torch.Tensor], module: nn.Module | None = None
) -> None:
    """Write checked tensors (own name -> tensor) in place, cast to each own tensor's dtype and device.

    ``own_state`` must share storage with the module (``module.state_dict()`` does). A tensor
    with fewer rows (see ``check_shapes``' ``leading_rows_ok``) fills only the leading rows.

    An own tensor on the ``meta`` device (a component built by ``deferred.parameters_on_meta``) has no
    storage to write into: the tensor itself becomes ``module``'s parameter or buffer
    (``deferred.assign_tensor``: no copy, tied names stay tied; a tensor meant for two own names that
    are not tied is copied for the second, so that writing one never changes the other). One that fills only leading rows is
    skipped: it stays on ``meta``, and the component is then built the ordinary way
    (``blip2core.compose``). A parameter marked by ``deferred.keep_checkpoint_dtypes`` (a component
    quantized while loading) is assigned too when a later checkpoint fills it again, so its values
    are never rounded into the first checkpoint's dtype.

    Raises:
        ValueError: an own tensor is on ``meta`` and no ``module`` was given.
    """
    ties = None
    assigned: set[int] = set()  # addresses handed out: one source tensor filling two own names is copied once
    for own_key, tensor in tensors.items():
        target = own_state[own_key]
        rows = tensor.shape[0] if tensor.dim() else None
        if target.is_meta and module is None:
            raise ValueError(f"{own_key!r} is on the meta device: write_tensors needs the module to assign it")
        # assigned: a meta target, or one kept in its checkpoint's dtype (a second checkpoint for a
        # component quantized while loading: its values as stored, not rounded into the first's dtype)
        assign = target.is_meta or (module is not None and keeps_checkpoint_dtype(module, own_key))
        if assign and tuple(tensor.shape) == tuple(target.shape):
            ties = ties if ties is not None else tied_names(module)
            if tensor.numel() and tensor.data_ptr() in assigned:  # e.g. BERT's FFN -> text and query FFN
                tensor = tensor.clone()
            assigned.add(tensor.data_ptr())
            assign_tensor(module, own_key, tensor, ties)
            continue
        if target.is_meta:  # leading rows only: stays on meta, the component is built again
            continue
        destination = target if rows is None or rows == target.shape[0] else target[:rows]
        destination.copy_(tensor.to(device=target.device, dtype=target.dtype))


def copy_into(
    module: nn.Module,
    mapped: Mapping[str, tuple[str, torch.Tensor]],
    *,
    source: str,
    leading_rows_ok: Collection[str] = (),
    message: MismatchMessage | None = None,
) -> tuple[list[str], list[str]]:
    """Copy tensors into ``module`` by its own parameter/buffer names.

    Every shape is checked before anything is written, so a failed check leaves ``module`` as it was.

    Args:
        module: receives the tensors (in place).
        mapped: own name -> (name in the source, tensor). Each tensor must have exactly the shape
            of ``module.state_dict()[own name]`` (or fewer rows, for the names in ``leading_rows_ok``).
        source: where the tensors came from, for error messages (a file path or a layout).
        leading_rows_ok, message: see ``check_shapes``.

    Returns:
        (missing, unexpected): own names that got no tensor, in ``state_dict`` order, and
        source names (sorted, without repeats) whose own name does not exist in ``module``.

    Raises:
        CheckpointError: a tensor's shape differs from the parameter it is meant for; the message
            names ``source``, the source key, the own key, the expected and the found shape.
    """
    own = module.state_dict()
    check_shapes(own, mapped, source=source, leading_rows_ok=leading_rows_ok, message=message)
    usable = {own_key: tensor for own_key, (_, tensor) in mapped.items() if own_key in own}
    write_tensors(own, usable, module)
    unexpected = sorted({source_key for own_key, (source_key, _) in mapped.items() if own_key not in own})
    missing = [k for k in own if k not in usable]
    return missing, unexpected


def _fits_leading_rows(expected: tuple[int, ...], found: tuple[int, ...]) -> bool:
    return len(found) == len(expected) and len(found) > 0 and found[1:] == expected[1:] and found[0] <= expected[0]


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
