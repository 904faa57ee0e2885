"""Which submodules of a component a quantizer rewrites.

By default: every ``nn.Linear`` (or blip2core's ``SmallBatchLinear``, the same layer), except the
output head of a language model (any module returned by some submodule's
``get_output_embeddings()``, or a Linear whose weight is an embedding's) and names matching ``skip``. ``nn.Embedding`` tables only with ``include_embeddings``.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterator

from torch import nn

from blip2_quant.options import SelectOptions
from blip2core.plugin_api import SmallBatchLinear

#: the float linear layers a quantizer replaces (a composed pipeline's are ``SmallBatchLinear``)
PLAIN_LINEARS = (nn.Linear, SmallBatchLinear)


def output_heads(component: nn.Module) -> set[int]:
    """ids of the modules that produce vocabulary logits (``lm_head``) or share an embedding's weight."""
    heads: set[int] = set()
    embedding_weights = {id(m.weight) for m in component.modules() if isinstance(m, nn.Embedding)}
    for module in component.modules():
        get = getattr(module, "get_output_embeddings", None)
        if callable(get) and not isinstance(module, nn.Embedding):
            try:
                head = get()
            except (AttributeError, NotImplementedError, TypeError):
                head = None
            if isinstance(head, nn.Module):
                heads.add(id(head))
        if isinstance(module, nn.Linear) and id(module.weight) in embedding_weights:
            heads.add(id(module))
    return heads


def _skipped(name: str, patterns: list[str]) -> bool:
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns)


def _one_by_one(component: nn.Module, names: list[str]) -> Iterator[tuple[str, nn.Module]]:
    """(name, module) for each name, the module looked up as it is reached: callers may replace
    modules while iterating, and a replaced module (with its float weights) is not kept alive here."""
    for name in names:
        yield name, component.get_submodule(name)


def linear_targets(component: nn.Module, options: SelectOptions) -> Iterator[tuple[str, nn.Linear]]:
    """(dotted name, module) of every ``nn.Linear`` to quantize (the names are listed first, so
    callers may replace modules while iterating)."""
    heads = output_heads(component)
    chosen = []
    for name, module in component.named_modules():
        if type(module) not in PLAIN_LINEARS or _skipped(name, options.skip):
            continue
        if id(module) in heads and not options.include_embeddings:
            continue
        chosen.append(name)
    yield from _one_by_one(component, chosen)


def embedding_targets(component: nn.Module, options: SelectOptions) -> Iterator[tuple[str, nn.Embedding]]:
    """(dotted name, module) of every ``nn.Embedding`` to quantize: none unless include_embeddings."""
    if not options.include_embeddings:
        return
    chosen = [
        name
        for name, module in component.named_modules()
        if type(module) is nn.Embedding and not _skipped(name, options.skip)
    ]
    yield from _one_by_one(component, chosen)


def set_submodule(root: nn.Module, name: str, module: nn.Module) -> None:
    """Replace ``root.<name>`` (a dotted path) by module."""
    parent_name, _, child = name.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, child, module)
