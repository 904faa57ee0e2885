"""``hf-clip-vision``: transformers ``CLIPVisionModel`` as the tokens of one encoder layer.

pixel_values [B, 3, S, S] -> embeddings (+ interpolated positions if S differs) -> pre_layrnorm
-> layers 0..layer -> [post_layernorm] -> tokens [B, 1 + (S/P)^2, C], CLS first. With
``layer=-2`` this is ``CLIPVisionModel(..., output_hidden_states=True).hidden_states[-2]``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from blip2core.plugin_api import (
    OPENAI_CLIP_MEAN,
    OPENAI_CLIP_STD,
    CheckpointError,
    PreprocessConfig,
    copy_into,
    hf_config_from_fields,
    resolve_layer,
)
from blip2_clip_vit.options import HFClipVisionOptions

logger = logging.getLogger(__name__)

#: PIL resample codes used by HF image processors
_RESAMPLE = {0: "nearest", 1: "lanczos", 2: "bilinear", 3: "bicubic"}


def clip_preprocess_config(model_path: str | None, model_image_size: int, image_size: int | None) -> PreprocessConfig:
    """From the folder's ``preprocessor_config.json`` (CLIPImageProcessor), else CLIP's defaults.

    CLIP resizes the short side to ``size.shortest_edge`` and centre-crops ``crop_size``:
    crop_pct = crop / shortest_edge.
    """
    side = image_size or model_image_size
    defaults = PreprocessConfig(image_size=side, mean=OPENAI_CLIP_MEAN, std=OPENAI_CLIP_STD,
                                interpolation="bicubic", resize_mode="shortest_edge_crop", crop_pct=1.0)
    path = Path(model_path) / "preprocessor_config.json" if model_path else None
    if path is None or not path.is_file():
        return defaults
    raw = json.loads(path.read_text())
    crop = _side(raw.get("crop_size"), "height") or model_image_size
    short = _side(raw.get("size"), "shortest_edge") or crop
    center_crop = raw.get("do_center_crop", True)
    return PreprocessConfig(
        image_size=image_size or crop,
        mean=tuple(raw.get("image_mean", OPENAI_CLIP_MEAN)),
        std=tuple(raw.get("image_std", OPENAI_CLIP_STD)),
        interpolation=_RESAMPLE.get(raw.get("resample", 3), "bicubic"),
        resize_mode="shortest_edge_crop" if center_crop else "squash",
        crop_pct=min(1.0, crop / short) if center_crop else 1.0,
    )


def _side(value: object, key: str) -> int | None:
    if isinstance(value, int):
        return value
    if isinstance(value, Mapping):
        found = value.get(key, value.get("height"))
        return int(found) if found is not None else None
    return None


class HFClipVision(nn.Module):
    """A truncated ``CLIPVisionModel``.

    Attributes:
        width: C (``hidden_size``).
        preprocess_config: see ``clip_preprocess_config``.
        layer_index: 0-based layer whose output is returned (the model keeps layers 0..layer_index).
        model: the transformers ``CLIPVisionModel``.
    """

    def __init__(self, model: nn.Module, layer_index: int, final_norm: bool, image_size: int,
                 preprocess_config: PreprocessConfig) -> None:
        super().__init__()
        self.model = model
        self.layer_index = layer_index
        self.final_norm = final_norm
        self.width = int(model.config.hidden_size)
        self.interpolate = image_size != model.config.image_size
        self.preprocess_config = preprocess_config

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """pixel_values [B, 3, S, S] -> tokens [B, 1 + (S/P)^2, C]."""
        tokens = self.model(pixel_values=pixel_values, interpolate_pos_encoding=self.interpolate).last_hidden_state
        return self.model.post_layernorm(tokens) if self.final_norm else tokens

    def load_foreign_state_dict(
        self, state_dict: Mapping[str, torch.Tensor], layout: str, *, source: str | None = None
    ) -> tuple[list[str], list[str]]:
        """Copy HF CLIP weights in (layout "hf": ``vision_model.*`` or bare ``CLIPVisionModel`` names).

        Returns (missing own names, unexpected source names: text tower, removed layers, ...).
        """
        if layout != "hf":
            raise CheckpointError(f"hf-clip-vision reads layout 'hf', not {layout!r}")
        mapped = {}
        unknown = []
        for key, tensor in state_dict.items():
            if key.startswith(("text_model.", "visual_projection.", "text_projection.", "logit_scale")):
                unknown.append(key)
                continue
            name = key[len("vision_model."):] if key.startswith("vision_model.") else key
            mapped["model." + name] = (key, tensor)
        missing, unexpected = copy_into(self, mapped, source=source or "hf state dict")
        return missing, sorted(set(unexpected) | set(unknown))


def build_hf_clip_vision(options: HFClipVisionOptions) -> HFClipVision:
    """Factory of ``hf-clip-vision``."""
    from transformers import CLIPVisionConfig, CLIPVisionModel

    if options.model_path is not None:
        folder = Path(options.model_path).expanduser()
        if not (folder / "config.json").is_file():
            raise CheckpointError(f"{folder}: not a Hugging Face model folder (no config.json)")
        try:
            model = CLIPVisionModel.from_pretrained(str(folder), local_files_only=True, dtype=torch.float32)
        except Exception as exc:
            raise CheckpointError(f"{folder}: transformers could not load a CLIPVisionModel: {exc}") from None
    else:
        model = CLIPVisionModel(hf_config_from_fields(CLIPVisionConfig, options.config, path="hf-clip-vision config"))
    layers = model.encoder.layers
    index = resolve_layer(options.layer, len(layers), "hf-clip-vision")
    model.encoder.layers = layers[: index + 1]
    model.config.num_hidden_layers = index + 1
    model.eval()
    image_size = options.image_size or model.config.image_size
    preprocess = clip_preprocess_config(options.model_path, model.config.image_size, options.image_size)
    encoder = HFClipVision(model, index, options.final_norm, image_size, preprocess)
    encoder.weights_loaded = options.model_path is not None  # LoadsOwnWeights: else random (config)
    return encoder
