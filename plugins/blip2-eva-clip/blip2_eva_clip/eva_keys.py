"""Weight names of EVA ViT-g as Hugging Face, LAVIS and the EVA release store them.

The encoder (``EvaViT``) uses timm's ``Eva`` names, which are LAVIS's without the prefix:

==========================================  ==================================================
own (timm / LAVIS ``visual_encoder.*``)     Hugging Face (``vision_model.*``)
==========================================  ==================================================
cls_token [1, 1, C]                         embeddings.class_embedding
pos_embed [1, 1 + h*w, C]                   embeddings.position_embedding
patch_embed.proj.{weight,bias}              embeddings.patch_embedding.{weight,bias}
blocks.{i}.norm1 / norm2                    encoder.layers.{i}.layer_norm1 / layer_norm2
blocks.{i}.attn.qkv.weight [3C, C]          encoder.layers.{i}.self_attn.qkv.weight
blocks.{i}.attn.q_bias, v_bias [C]          encoder.layers.{i}.self_attn.qkv.bias [3C] = (q, k, v)
blocks.{i}.attn.proj                        encoder.layers.{i}.self_attn.projection
blocks.{i}.mlp.fc1 / fc2                    encoder.layers.{i}.mlp.fc1 / fc2
norm (LAVIS ``ln_vision``)                  post_layernorm
==========================================  ==================================================

HF keeps one fused qkv bias whose key third is zeros in converted BLIP-2 checkpoints. A key bias
never changes attention (it adds q.b_k to every logit of a query row, which softmax removes), so
only the q and v thirds are kept.

Each mapper returns ``own name -> (source name, tensor)``; the caller reports source names that do
not exist in the model as unexpected.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import torch

from blip2core.plugin_api import CheckpointError

Mapped = dict[str, tuple[str, torch.Tensor]]

HF_PREFIX = "vision_model."
LAVIS_PREFIX = "visual_encoder."
LAVIS_LN = "ln_vision."

_HF_RULES: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"^embeddings\.class_embedding$"), "cls_token"),
    (re.compile(r"^embeddings\.position_embedding$"), "pos_embed"),
    (re.compile(r"^embeddings\.patch_embedding\.(weight|bias)$"), r"patch_embed.proj.\1"),
    (re.compile(r"^encoder\.layers\.(\d+)\.layer_norm1\.(weight|bias)$"), r"blocks.\1.norm1.\2"),
    (re.compile(r"^encoder\.layers\.(\d+)\.layer_norm2\.(weight|bias)$"), r"blocks.\1.norm2.\2"),
    (re.compile(r"^encoder\.layers\.(\d+)\.self_attn\.qkv\.weight$"), r"blocks.\1.attn.qkv.weight"),
    (re.compile(r"^encoder\.layers\.(\d+)\.self_attn\.projection\.(weight|bias)$"), r"blocks.\1.attn.proj.\2"),
    (re.compile(r"^encoder\.layers\.(\d+)\.mlp\.(fc1|fc2)\.(weight|bias)$"), r"blocks.\1.mlp.\2.\3"),
    (re.compile(r"^post_layernorm\.(weight|bias)$"), r"norm.\1"),
]
_HF_QKV_BIAS = re.compile(r"^encoder\.layers\.(\d+)\.self_attn\.qkv\.bias$")


def from_hf(state_dict: Mapping[str, torch.Tensor]) -> tuple[Mapped, list[str]]:
    """HF ``Blip2VisionModel`` names (with or without ``vision_model.``) -> own names.

    Returns:
        (mapped, unrecognised source keys).
    """
    mapped: Mapped = {}
    unknown: list[str] = []
    for key, tensor in state_dict.items():
        name = key[len(HF_PREFIX):] if key.startswith(HF_PREFIX) else key
        match = _HF_QKV_BIAS.match(name)
        if match:
            q_bias, _k_bias, v_bias = _split_qkv_bias(key, tensor)
            mapped[f"blocks.{match.group(1)}.attn.q_bias"] = (key, q_bias)
            mapped[f"blocks.{match.group(1)}.attn.v_bias"] = (key, v_bias)
            continue
        for pattern, replacement in _HF_RULES:
            if pattern.match(name):
                mapped[pattern.sub(replacement, name)] = (key, tensor)
                break
        else:
            unknown.append(key)
    return mapped, unknown


def _split_qkv_bias(key: str, bias: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    if bias.dim() != 1 or bias.shape[0] % 3:
        raise CheckpointError(f"key {key!r}: expected a fused [3C] qkv bias, found shape {tuple(bias.shape)}")
    return tuple(bias.chunk(3))  # type: ignore[return-value]


def from_lavis(state_dict: Mapping[str, torch.Tensor]) -> tuple[Mapped, list[str]]:
    """LAVIS ``visual_encoder.*`` (same names as ours) and ``ln_vision.*`` (our ``norm``)."""
    mapped: Mapped = {}
    unknown: list[str] = []
    for key, tensor in state_dict.items():
        if key.startswith(LAVIS_PREFIX):
            mapped[key[len(LAVIS_PREFIX):]] = (key, tensor)
        elif key.startswith(LAVIS_LN):
            mapped["norm." + key[len(LAVIS_LN):]] = (key, tensor)
        else:
            unknown.append(key)
    return mapped, unknown


#: EVA-CLIP heads and final norms: they follow the 40th block, not BLIP-2's ``ln_vision``.
_EVA_NOT_OURS = re.compile(r"^(norm|fc_norm|head|lm_head)\.")


def from_eva(state_dict: Mapping[str, torch.Tensor]) -> tuple[Mapped, list[str]]:
    """A raw EVA / EVA-CLIP vision checkpoint (bare names, or ``visual.*`` in a full CLIP file).

    Its ``norm`` / ``fc_norm`` / ``head`` belong to the full 40-block model and are not mapped
    onto ``ln_vision``; blocks beyond the kept depth come back as unexpected.
    """
    mapped: Mapped = {}
    unknown: list[str] = []
    full_clip = any(k.startswith("visual.") for k in state_dict)
    for key, tensor in state_dict.items():
        if full_clip and not key.startswith("visual."):
            unknown.append(key)  # the text tower, logit_scale, ...
            continue
        name = key[len("visual."):] if full_clip else key
        if _EVA_NOT_OURS.match(name):
            unknown.append(key)
        else:
            mapped[name] = (key, tensor)
    return mapped, unknown


MAPPERS = {"hf": from_hf, "lavis": from_lavis, "eva": from_eva}


def detect_layout(keys: list[str]) -> str:
    """Guess "hf", "lavis" or "eva" from the key names of a file."""
    if any(k.startswith((LAVIS_PREFIX, LAVIS_LN)) for k in keys):
        return "lavis"
    if any(k.startswith((HF_PREFIX, "embeddings.class_embedding")) for k in keys):
        return "hf"
    return "eva"


def prefixes_to_read(layout: str, keys: list[str]) -> tuple[str, ...] | None:
    """The key prefixes of a file that belong to the vision encoder (None: every key)."""
    if layout == "lavis":
        return (LAVIS_PREFIX, LAVIS_LN)
    if layout == "hf" and any(k.startswith(HF_PREFIX) for k in keys):
        return (HF_PREFIX,)
    if layout == "eva" and any(k.startswith("visual.") for k in keys):
        return ("visual.",)
    return None
