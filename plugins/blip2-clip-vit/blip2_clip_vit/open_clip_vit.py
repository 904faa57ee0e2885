"""``clip-vit``: an open_clip ViT vision tower as the tokens of one block.

pixel_values [B, 3, S, S] -> conv patch embedding -> CLS + learned position embedding -> ln_pre
-> blocks 0..layer -> [ln_post] -> [ln_vision] -> tokens [B, 1 + (S/P)^2, C], CLS first.

BLIP-2's ViT-L variant is ``model_name="ViT-L-14-quickgelu"`` (OpenAI weights), ``layer=-2``
(23 of 24 blocks), ``ln_vision=True``: [B, 257, 1024] at 224 px.

Parameters are named ``visual.*`` as in open_clip / OpenAI checkpoints, plus ``ln_vision.*`` as in
LAVIS, so those files load without renaming (LAVIS's ``visual_encoder.`` becomes ``visual.``).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import torch
from torch import nn

from blip2core.plugin_api import (
    CheckpointError,
    PreprocessConfig,
    SpecError,
    copy_into,
    image_side,
    open_clip_model_config,
    open_clip_preprocess_config,
    raise_if_missing,
    read_state_dict,
    resample_pos_embed,
    resolve_layer,
    stored_keys,
)
from blip2_clip_vit.options import ClipViTOptions

logger = logging.getLogger(__name__)

LAYOUTS = ("open_clip", "lavis", "tower")


class OpenClipViT(nn.Module):
    """Tokens of one block of an open_clip ``VisionTransformer``.

    Attributes:
        width: C.
        preprocess_config: open_clip's preprocessing for this model at S.
        layer_index: 0-based block whose output is returned (the tower keeps blocks 0..layer_index).
        visual: the open_clip tower, without projection (and without ``ln_post`` unless final_norm).
        ln_vision: BLIP-2's extra LayerNorm, or None.
    """

    def __init__(
        self,
        tower: nn.Module,
        layer_index: int,
        final_norm: bool,
        ln_vision: bool,
        preprocess_config: PreprocessConfig,
    ) -> None:
        super().__init__()
        from open_clip.transformer import LayerNormFp32

        self.visual = tower
        self.layer_index = layer_index
        self.final_norm = final_norm
        self.width = int(tower.conv1.out_channels)
        self.ln_vision = LayerNormFp32(self.width, eps=1e-5) if ln_vision else None
        self.preprocess_config = preprocess_config

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """pixel_values [B, 3, S, S] -> tokens [B, 1 + (S/P)^2, C] of block ``layer_index``."""
        out = self.visual.forward_intermediates(
            pixel_values,
            indices=[self.layer_index],
            stop_early=True,
            normalize_intermediates=self.final_norm,
            intermediates_only=True,
            output_fmt="NLC",
            output_extra_tokens=True,
        )
        tokens = torch.cat([out["image_intermediates_prefix"][0], out["image_intermediates"][0]], dim=1)
        return self.ln_vision(tokens) if self.ln_vision is not None else tokens

    def load_foreign_state_dict(
        self, state_dict: Mapping[str, torch.Tensor], layout: str, *, source: str | None = None
    ) -> tuple[list[str], list[str]]:
        """Copy weights in from layout "open_clip" (``visual.*``), "lavis" (``visual_encoder.*``,
        ``ln_vision.*``) or "tower" (bare tower names such as ``conv1.weight``).

        A position embedding for another input size is interpolated. Returns (missing own names,
        unexpected source names: text tower, dropped blocks, ``proj``, ...).
        """
        if layout not in LAYOUTS:
            raise CheckpointError(f"clip-vit reads layouts {list(LAYOUTS)}, not {layout!r}")
        mapped: dict[str, tuple[str, torch.Tensor]] = {}
        unknown: list[str] = []
        for key, tensor in state_dict.items():
            own = _own_name(key, layout)
            if own is None:
                unknown.append(key)
            else:
                mapped[own] = (key, tensor)
        self._fit_pos_embed(mapped)
        missing, unexpected = copy_into(self, mapped, source=source or f"{layout} state dict")
        return missing, sorted(set(unexpected) | set(unknown))

    def _fit_pos_embed(self, mapped: dict[str, tuple[str, torch.Tensor]]) -> None:
        own = "visual.positional_embedding"
        if own not in mapped:
            return
        key, pos = mapped[own]
        target = self.visual.positional_embedding
        if pos.dim() == 2 and pos.shape[0] != target.shape[0] and pos.shape[1] == target.shape[1]:
            mapped[own] = (key, resample_pos_embed(pos, tuple(self.visual.grid_size), num_prefix_tokens=1))

    def load_weights_file(self, path: str, strict: bool = True) -> tuple[list[str], list[str]]:
        """Read a weights file in any of the three layouts (told apart by their names)."""
        keys = stored_keys(path)
        prefixes = _prefixes(keys) if keys is not None else None
        state = read_state_dict(path, prefixes)
        layout = detect_layout(list(state))
        prefixes = _prefixes(list(state))
        if prefixes is not None:
            state = {k: v for k, v in state.items() if k.startswith(prefixes)}
        missing, unexpected = self.load_foreign_state_dict(state, layout, source=path)
        if strict:
            raise_if_missing(missing, f"{path} (layout {layout})")
        if unexpected:
            logger.info("clip-vit: %s: %d keys not used: %s", path, len(unexpected), unexpected[:8])
        return missing, unexpected


def _own_name(key: str, layout: str) -> str | None:
    if layout == "open_clip":
        return key if key.startswith("visual.") else None
    if layout == "lavis":
        if key.startswith("visual_encoder."):
            return "visual." + key[len("visual_encoder."):]
        return key if key.startswith("ln_vision.") else None
    return "visual." + key


def detect_layout(keys: list[str]) -> str:
    """"lavis", "open_clip" or "tower" from the key names."""
    if any(k.startswith(("visual_encoder.", "ln_vision.")) for k in keys):
        return "lavis"
    if any(k.startswith("visual.") for k in keys):
        return "open_clip"
    return "tower"


def _prefixes(keys: list[str]) -> tuple[str, ...] | None:
    layout = detect_layout(keys)
    return {"lavis": ("visual_encoder.", "ln_vision."), "open_clip": ("visual.",)}.get(layout)


def build_clip_vit(options: ClipViTOptions) -> OpenClipViT:
    """Factory of ``clip-vit``."""
    model_cfg, preprocess_overlay = open_clip_model_config(options.model_name)
    vision_cfg = dict(model_cfg.get("vision_cfg", {}))
    if vision_cfg.get("timm_model_name") or isinstance(vision_cfg.get("layers", 12), (list, tuple)):
        raise SpecError(
            f"open_clip model {options.model_name!r} has no open_clip ViT tower "
            f"(timm_model_name={vision_cfg.get('timm_model_name')!r}, layers={vision_cfg.get('layers')!r}); "
            f"use open-clip-eva for EVA towers or the timm encoder for timm/ResNet towers"
        )
    depth = int(vision_cfg.get("layers", 12))
    index = resolve_layer(options.layer, depth, f"clip-vit {options.model_name}")
    image_size = options.image_size or image_side(vision_cfg.get("image_size", 224))
    vision_cfg.update(layers=index + 1, image_size=image_size)  # blocks after `layer` are never built
    quick_gelu = model_cfg.get("quick_gelu", False) if options.quick_gelu is None else options.quick_gelu
    tower = _build_tower(model_cfg.get("embed_dim", 512), vision_cfg, quick_gelu)
    tower.prune_intermediate_layers([index], prune_norm=not options.final_norm, prune_head=True)
    if getattr(tower, "attn_pool", None) is not None:  # CoCa's pooler is not on the token path
        tower.attn_pool = tower.attn_pool_contrastive = None
    preprocess = open_clip_preprocess_config(preprocess_overlay, vision_cfg, image_size)
    encoder = OpenClipViT(tower, index, options.final_norm, options.ln_vision, preprocess)
    if options.pretrained is not None:
        encoder.load_weights_file(options.pretrained, options.strict)
    encoder.weights_loaded = options.pretrained is not None  # LoadsOwnWeights: else random until a checkpoint
    return encoder


def _build_tower(embed_dim: int, vision_cfg: dict, quick_gelu: bool) -> nn.Module:
    """open_clip's own vision-tower builder (no text tower, no download)."""
    from open_clip.model import _build_vision_tower

    return _build_vision_tower(embed_dim, vision_cfg, quick_gelu=quick_gelu, cast_dtype=None)
