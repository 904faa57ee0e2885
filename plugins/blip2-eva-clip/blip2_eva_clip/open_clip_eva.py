"""``open-clip-eva``: the vision tower of an open_clip EVA model (EVA01-g-14, EVA02-B-16, ...) as tokens.

open_clip builds these towers as a timm ``Eva`` trunk (named by the model config's
``vision_cfg.timm_model_name``) plus a pooling/projection head. This encoder builds the same
trunk with timm (no download), drops the head and the blocks after ``layer``, and returns every
token of that block, CLS first: [B, 1 + (S/P)^2, C].

Its parameters are named ``visual.trunk.*`` exactly as in an open_clip checkpoint, so open_clip
files load without renaming.
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
from blip2_eva_clip.options import OpenClipEvaOptions

logger = logging.getLogger(__name__)


class OpenClipEva(nn.Module):
    """Tokens of one block of an open_clip timm-EVA vision tower.

    Attributes:
        width: C, the trunk's embed dim.
        preprocess_config: from open_clip's preprocess defaults at this image size.
        layer_index: 0-based block whose output is returned.
        visual.trunk: the timm ``Eva``, truncated after ``layer_index``.
    """

    def __init__(self, trunk: nn.Module, layer_index: int, final_norm: bool, preprocess_config: PreprocessConfig) -> None:
        super().__init__()
        self.visual = nn.Module()
        self.visual.trunk = trunk
        self.layer_index = layer_index
        self.final_norm = final_norm
        self.width = int(trunk.embed_dim)
        self.preprocess_config = preprocess_config

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """pixel_values [B, 3, S, S] -> tokens [B, prefix + (S/P)^2, C] of block ``layer_index``."""
        ((patches, prefix),) = self.visual.trunk.forward_intermediates(
            pixel_values,
            indices=[self.layer_index],
            return_prefix_tokens=True,
            norm=self.final_norm,
            stop_early=True,
            output_fmt="NLC",
            intermediates_only=True,
        )
        return torch.cat([prefix, patches], dim=1)

    def load_foreign_state_dict(
        self, state_dict: Mapping[str, torch.Tensor], layout: str, *, source: str | None = None
    ) -> tuple[list[str], list[str]]:
        """Copy open_clip weights in: layout "open_clip" (``visual.trunk.*``, or a bare ``trunk.*`` tower).

        Keys of the text tower, the head and dropped blocks come back as unexpected.
        """
        if layout != "open_clip":
            raise CheckpointError(f"open-clip-eva reads layout 'open_clip', not {layout!r}")
        mapped = {}
        for key, tensor in state_dict.items():
            own = key if key.startswith("visual.") else "visual." + key
            mapped[own] = (key, tensor)
        pos_key = "visual.trunk.pos_embed"
        trunk = self.visual.trunk
        if pos_key in mapped and trunk.pos_embed is not None:
            key, pos = mapped[pos_key]
            if pos.dim() == 3 and pos.shape[1] != trunk.pos_embed.shape[1] and pos.shape[-1] == trunk.pos_embed.shape[-1]:
                prefix = 0 if trunk.no_embed_class else trunk.num_prefix_tokens
                mapped[pos_key] = (key, resample_pos_embed(pos, trunk.patch_embed.grid_size, prefix))
        return copy_into(self, mapped, source=source or f"{layout} state dict")


def build_open_clip_eva(options: OpenClipEvaOptions) -> OpenClipEva:
    """Factory of ``open-clip-eva``."""
    import timm

    model_cfg, preprocess_overlay = open_clip_model_config(options.model_name)
    vision_cfg = model_cfg.get("vision_cfg", {})
    timm_name = vision_cfg.get("timm_model_name")
    if not timm_name or "eva" not in timm_name:
        raise SpecError(
            f"open_clip model {options.model_name!r} has no timm EVA vision tower "
            f"(timm_model_name={timm_name!r}); use the clip-vit or timm encoder"
        )
    image_size = options.image_size or image_side(vision_cfg.get("image_size", 224))
    trunk = timm.create_model(timm_name, pretrained=False, num_classes=0, global_pool="", img_size=image_size)
    index = resolve_layer(options.layer, len(trunk.blocks), f"open-clip-eva {options.model_name}")
    trunk.prune_intermediate_layers([index], prune_norm=not options.final_norm, prune_head=True)
    preprocess = open_clip_preprocess_config(preprocess_overlay, vision_cfg, image_size)
    encoder = OpenClipEva(trunk, index, options.final_norm, preprocess)
    if options.pretrained is not None:
        keys = stored_keys(options.pretrained)
        visual_only = keys is not None and any(k.startswith("visual.") for k in keys)
        state = read_state_dict(options.pretrained, ("visual.",) if visual_only else None)
        if any(k.startswith("visual.") for k in state):
            state = {k: v for k, v in state.items() if k.startswith("visual.")}
        missing, unexpected = encoder.load_foreign_state_dict(state, "open_clip", source=options.pretrained)
        if options.strict:
            raise_if_missing(missing, options.pretrained)
        if unexpected:
            logger.info("open-clip-eva: %s: %d keys not used (head, dropped blocks): %s",
                        options.pretrained, len(unexpected), unexpected[:8])
    encoder.weights_loaded = options.pretrained is not None  # LoadsOwnWeights: else random until a checkpoint
    return encoder

