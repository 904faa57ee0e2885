"""``vision_config`` of Hugging Face BLIP-2 folders (``model_type: blip_2_vision_model``) as an
``eva-vit`` component spec (hook ``register_hf_configs``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from blip2core.plugin_api import CheckpointError, HFConfigSource

#: Blip2VisionConfig fields that are EvaViTOptions of the same name
VISION_OPTION_KEYS = (
    "image_size",
    "patch_size",
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "intermediate_size",
    "layer_norm_eps",
    "qkv_bias",
)


def read_blip2_vision_config(sub_config: Mapping[str, Any], source: HFConfigSource) -> dict[str, Any]:
    """``{"name": "eva-vit", "options": ...}`` rebuilding a ``Blip2VisionConfig``.

    Raises:
        CheckpointError: an activation other than GELU (EVA ViT uses 'gelu').
    """
    if sub_config.get("hidden_act", "gelu") != "gelu":
        raise CheckpointError(
            f"{source.config_file}: vision_config.hidden_act {sub_config['hidden_act']!r} is not supported "
            f"(EVA ViT uses 'gelu')"
        )
    return {"name": "eva-vit", "options": {k: sub_config[k] for k in VISION_OPTION_KEYS if k in sub_config}}
