"""Deferred initialisation: build a component whose weights a checkpoint will supply without drawing
random weights that are thrown away, and load the checkpoint's tensors without a second copy.

Inside ``parameters_on_meta()`` every parameter a module registers is created on the ``meta``
device (shape and dtype, no memory, no random initialisation: ``normal_`` / ``uniform_`` on a meta
tensor do nothing). Buffers are computed as usual (``position_ids``, rotary ``inv_freq``, masks),
so nothing that is derived at construction has to be recomputed. Loading then *assigns* the
checkpoint's tensors (``assign_tensor``; ``blip2core.checkpoints.copying.write_tensors`` does it for a
meta target): safetensors are memory-mapped copy-on-write by ``read_state_dict``, so each weight
exists once, in the page cache, and only when it is first read. Parameters tied to one another
(OPT's ``lm_head`` and ``embed_tokens``) stay tied: every name of the tied parameter gets the new one.

A component that will be quantized while loading (``blip2core.protocols.Quantizer``) is marked by
``keep_checkpoint_dtypes``: its parameters take the checkpoint's tensors in their stored dtype, and
the quantizer casts one layer at a time.

What no checkpoint filled stays on ``meta``: ``meta_tensor_names`` lists it, and
``blip2core.compose`` then builds that component again the ordinary way (random, under its
``seeded_construction``) and loads the checkpoints into it, so a part a checkpoint does not cover
has exactly the values (and seed) it has without deferral.

The patch of ``nn.Module.register_parameter`` is installed once and acts only in a thread inside
``parameters_on_meta()``; other threads build modules as usual.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

_state = threading.local()
_install_lock = threading.Lock()
_original_register_parameter = nn.Module.register_parameter


def _active() -> bool:
    return getattr(_state, "depth", 0) > 0


def _register_parameter_on_meta(module: nn.Module, name: str, param: nn.Parameter | None) -> None:
    _original_register_parameter(module, name, param)
    if param is None or not _active() or type(param) is not nn.Parameter or param.is_meta:
        return  # parameter subclasses (lazy, quantized) are left as their library made them
    module._parameters[name] = nn.Parameter(param.to("meta"), requires_grad=param.requires_grad)


def _install() -> None:
    with _install_lock:
        if nn.Module.register_parameter is not _register_parameter_on_meta:
            nn.Module.register_parameter = _register_parameter_on_meta  # type: ignore[method-assign]


#: in-place ops that only change values: on a meta tensor they do nothing, so they are skipped
#: (torch runs several of them on meta through Python reference kernels: ~25 ms a call, and the
#: first call imports torch._refs / torch._prims, seconds)
VALUE_FILLS = frozenset({
    "normal_", "uniform_", "trunc_normal_", "zero_", "fill_", "copy_", "erfinv_", "mul_", "add_", "sub_", "div_",
    "clamp_", "clamp_min_", "clamp_max_", "exponential_", "bernoulli_", "random_", "log_normal_", "cauchy_",
    "geometric_", "fill_diagonal_", "masked_fill_", "index_fill_", "__setitem__",
})


class _SkipValueFillsOnMeta(TorchFunctionMode):
    """Returns a meta tensor unchanged from the ops in ``VALUE_FILLS`` instead of running them."""

    def __torch_function__(self, func, types, args=(), kwargs=None):  # noqa: ANN001 - torch's signature
        if getattr(func, "__name__", None) in VALUE_FILLS and args and isinstance(args[0], torch.Tensor) and args[0].is_meta:
            return args[0]
        return func(*args, **(kwargs or {}))


@contextmanager
def parameters_on_meta() -> Iterator[None]:
    """Modules built inside get their parameters on the ``meta`` device (buffers stay real), and
    value fills of meta tensors (random init, ``zero_``, ...) are skipped; nested use is fine.
    Only the calling thread is affected."""
    _install()
    _state.depth = getattr(_state, "depth", 0) + 1
    try:
        with _SkipValueFillsOnMeta():
            yield
    finally:
        _state.depth -= 1


def meta_tensor_names(module: nn.Module) -> list[str]:
    """Names (as in ``module.state_dict()``) of the parameters and buffers still on ``meta``."""
    names = [name for name, p in module.named_parameters(remove_duplicate=False) if p.is_meta]
    return names + [name for name, b in module.named_buffers(remove_duplicate=False) if b.is_meta]


def tied_names(module: nn.Module) -> dict[int, list[str]]:
    """``id(parameter)`` -> every name it has in ``module`` (one per tie)."""
    groups: dict[int, list[str]] = {}
    for name, param in module.named_parameters(remove_duplicate=False):
        groups.setdefault(id(param), []).append(name)
    return groups


#: attribute of a meta parameter that takes the checkpoint's tensor in its own dtype (not cast)
KEEP_CHECKPOINT_DTYPE = "_blip2_keep_checkpoint_dtype"


def keep_checkpoint_dtypes(module: nn.Module) -> None:
    """Mark every floating-point ``meta`` parameter of ``module`` to take the checkpoint's tensor as
    it is stored (``assign_tensor`` casts nothing): a component quantized while loading casts one
    layer at a time itself (``blip2core.protocols.Quantizer``)."""
    for param in module.parameters():
        if param.is_meta and param.is_floating_point():
            setattr(param, KEEP_CHECKPOINT_DTYPE, True)


def keeps_checkpoint_dtype(module: nn.Module, name: str) -> bool:
    """Whether parameter ``name`` of ``module`` takes checkpoint tensors as stored (``keep_checkpoint_dtypes``)."""
    owner_name, _, attr = name.rpartition(".")
    try:
        param = module.get_submodule(owner_name)._parameters.get(attr)
    except AttributeError:
        return False
    return bool(getattr(param, KEEP_CHECKPOINT_DTYPE, False))


@torch.no_grad()
def assign_tensor(module: nn.Module, name: str, tensor: torch.Tensor, ties: dict[int, list[str]] | None = None) -> None:
    """Make ``tensor`` (cast to the current tensor's dtype unless that is marked by
    ``keep_checkpoint_dtypes``; on its own device) the parameter or buffer
    ``name`` of ``module``, without copying it when the dtype already matches. A parameter keeps its
    ``requires_grad``; every name tied to it (``ties``, from ``tied_names``; computed when None) gets
    the same new parameter.

    Raises:
        KeyError: ``module`` has no parameter or buffer ``name``.
    """
    owner_name, _, attr = name.rpartition(".")
    owner = module.get_submodule(owner_name)
    if attr in owner._parameters:
        old = owner._parameters[attr]
        if old is None:
            raise KeyError(name)
        keep = getattr(old, KEEP_CHECKPOINT_DTYPE, False) and tensor.is_floating_point()
        new = nn.Parameter(tensor if keep else tensor.to(dtype=old.dtype), requires_grad=old.requires_grad)
        if keep:  # a later checkpoint's tensor for it is assigned too, not rounded into this dtype
            setattr(new, KEEP_CHECKPOINT_DTYPE, True)
        ties = ties if ties is not None else tied_names(module)
        for alias in ties.get(id(old), [name]):
            alias_owner, _, alias_attr = alias.rpartition(".")
            module.get_submodule(alias_owner)._parameters[alias_attr] = new
    elif attr in owner._buffers and owner._buffers[attr] is not None:
        owner._buffers[attr] = tensor.to(dtype=owner._buffers[attr].dtype)
    else:
        raise KeyError(name)
