"""A transformers BLIP-2 state dict renamed to LAVIS's key names, written from the conversion
table in shared/reference/blip2-facts.md read backwards. Used to check that LAVIS checkpoints
load to the same numbers as the Hugging Face ones."""

from __future__ import annotations

import torch

_VISION_RENAMES = (
    ("layer_norm1", "norm1"),
    ("layer_norm2", "norm2"),
    ("self_attn.qkv", "attn.qkv"),
    ("self_attn.projection", "attn.proj"),
)
_BRIDGE_PREFIXES = (
    ("qformer.layernorm.", "Qformer.bert.embeddings.LayerNorm."),
    ("qformer.embeddings.layernorm.", "Qformer.bert.embeddings.LayerNorm."),  # InstructBLIP
    ("qformer.embeddings.", "Qformer.bert.embeddings."),
    ("qformer.encoder.", "Qformer.bert.encoder."),
    ("embeddings.", "Qformer.bert.embeddings."),
    ("language_projection.", "opt_proj."),
    ("vision_projection.", "vision_proj."),
    ("text_projection.", "text_proj."),
)


def vision_key_to_lavis(key: str, value: torch.Tensor) -> dict[str, torch.Tensor]:
    """One ``vision_model.*``-relative HF key -> its LAVIS key(s) (qkv.bias splits in two)."""
    if key == "embeddings.class_embedding":
        return {"visual_encoder.cls_token": value}
    if key == "embeddings.position_embedding":
        return {"visual_encoder.pos_embed": value}
    if key.startswith("embeddings.patch_embedding."):
        return {"visual_encoder.patch_embed.proj." + key.rsplit(".", 1)[1]: value}
    if key.startswith("post_layernorm."):
        return {"ln_vision." + key.rsplit(".", 1)[1]: value}
    _, _, index, *rest = key.split(".")
    prefix, rest = f"visual_encoder.blocks.{index}.", ".".join(rest)
    if rest == "self_attn.qkv.bias":
        q, _, v = value.chunk(3)  # LAVIS has no key bias
        return {prefix + "attn.q_bias": q, prefix + "attn.v_bias": v}
    for old, new in _VISION_RENAMES:
        rest = rest.replace(old, new)
    return {prefix + rest: value}


def bridge_key_to_lavis(key: str) -> str:
    for hf_prefix, lavis_prefix in _BRIDGE_PREFIXES:
        if key.startswith(hf_prefix):
            key = lavis_prefix + key[len(hf_prefix):]
            break
    return key.replace(".attention.attention.", ".attention.self.").replace(
        ".crossattention.attention.", ".crossattention.self."
    )


def hf_blip2_to_lavis(state_dict: dict[str, torch.Tensor], llm_prefix: str = "opt_model.") -> dict[str, torch.Tensor]:
    """Every key of a Blip2ForConditionalGeneration / Blip2ForImageTextRetrieval /
    InstructBlipForConditionalGeneration state dict."""
    out: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        if key.startswith("vision_model."):
            out.update(vision_key_to_lavis(key[len("vision_model."):], value))
        elif key.startswith("language_model."):
            out[llm_prefix + key[len("language_model."):]] = value
        else:
            out[bridge_key_to_lavis(key)] = value
    return out
