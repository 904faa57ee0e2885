"""Which library wrote a state dict, and which pipeline component each key belongs to.

Layouts:
    ``native``: ``Pipeline.save`` / ``Pipeline.state_dict`` names (``vision.*``, ``bridge.*``, ``llm.*``).
    ``hf``: transformers ``Blip2ForConditionalGeneration`` / ``Blip2ForImageTextRetrieval``.
    ``lavis``: Salesforce LAVIS BLIP-2 models.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch

from blip2core.errors import CheckpointError

SLOTS = ("vision", "bridge", "llm")

#: layout -> ordered (key prefix, slot); a prefix ending in "." matches a subtree, else an exact key
PREFIXES: dict[str, tuple[tuple[str, str], ...]] = {
    "native": (("vision.", "vision"), ("bridge.", "bridge"), ("llm.", "llm")),
    "hf": (
        ("vision_model.", "vision"),
        ("query_tokens", "bridge"),
        ("qformer.", "bridge"),
        ("language_projection.", "bridge"),
        ("vision_projection.", "bridge"),
        ("text_projection.", "bridge"),
        ("itm_head.", "bridge"),
        ("embeddings.", "bridge"),
        ("language_model.", "llm"),
        ("lm_head.", "llm"),
    ),
    "lavis": (
        ("visual_encoder.", "vision"),
        ("ln_vision.", "vision"),
        ("query_tokens", "bridge"),
        ("Qformer.", "bridge"),
        ("opt_proj.", "bridge"),
        ("llm_proj.", "bridge"),
        ("t5_proj.", "bridge"),
        ("vision_proj.", "bridge"),
        ("text_proj.", "bridge"),
        ("itm_head.", "bridge"),
        ("temp", "bridge"),
        ("opt_model.", "llm"),
        ("llm_model.", "llm"),
        ("t5_model.", "llm"),
    ),
}

#: a key that only one layout has, to tell them apart
_MARKERS = {
    "native": ("bridge.",),
    "hf": ("qformer.", "vision_model.", "language_projection.", "language_model."),
    "lavis": ("Qformer.", "visual_encoder.", "ln_vision.", "opt_proj.", "llm_proj.", "t5_proj.", "opt_model.", "t5_model."),
}


def _matches(key: str, prefix: str) -> bool:
    return key.startswith(prefix) if prefix.endswith(".") else key == prefix


def detect_layout(keys: Iterable[str], source: str = "checkpoint") -> str:
    """``native``, ``hf`` or ``lavis``, judged by key names; error if none or several fit."""
    keys = list(keys)
    found = [
        layout for layout, markers in _MARKERS.items() if any(_matches(k, m) for k in keys for m in markers)
    ]
    if len(found) == 1:
        return found[0]
    sample = ", ".join(keys[:5])
    if not found:
        raise CheckpointError(
            f"{source}: cannot tell which library wrote it (first keys: {sample}); expected "
            "blip2core (bridge.*), Hugging Face (qformer.*, vision_model.*) or LAVIS (Qformer.*, visual_encoder.*) names"
        )
    raise CheckpointError(f"{source}: mixes key names of {' and '.join(found)} layouts (first keys: {sample})")


def split_by_slot(
    state_dict: Mapping[str, torch.Tensor], layout: str
) -> tuple[dict[str, dict[str, torch.Tensor]], list[str]]:
    """Group keys by component (full names kept); returns (slot -> sub-dict, keys of no component)."""
    parts: dict[str, dict[str, torch.Tensor]] = {slot: {} for slot in SLOTS}
    unrouted = []
    for key, tensor in state_dict.items():
        slot = next((s for prefix, s in PREFIXES[layout] if _matches(key, prefix)), None)
        if slot is None:
            unrouted.append(key)
        else:
            parts[slot][key] = tensor
    return parts, unrouted
