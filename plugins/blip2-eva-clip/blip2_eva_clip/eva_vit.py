"""``eva-vit``: EVA ViT-g/14 exactly as BLIP-2 uses it, built on timm's ``Eva``.

pixel_values [B, 3, S, S] -> patch embedding (P x P conv) -> prepend CLS -> + learned position
embedding -> 39 pre-norm blocks (LayerNorm eps 1e-6, fused qkv with q/v bias, GELU MLP) ->
final LayerNorm (LAVIS ``ln_vision`` == HF ``post_layernorm``) -> tokens [B, 1 + (S/P)^2, C].

This is HF ``Blip2VisionModel``'s ``last_hidden_state`` and what LAVIS feeds the Q-Former
(``ln_vision(visual_encoder(image))``).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from functools import partial
from pathlib import Path

import torch
from timm.layers import LayerNorm, LayerNormFp32
from timm.models.eva import Eva

from blip2core.plugin_api import (
    OPENAI_CLIP_MEAN,
    OPENAI_CLIP_STD,
    CheckpointError,
    PreprocessConfig,
    copy_into,
    raise_if_missing,
    read_state_dict,
    resample_pos_embed,
    stored_keys,
)
from blip2_eva_clip import eva_keys
from blip2_eva_clip.options import EvaViTOptions

logger = logging.getLogger(__name__)


def eva_preprocess_config(image_size: int = 224) -> PreprocessConfig:
    """BLIP-2 / LAVIS eval transform: squash-resize to S x S (bicubic), OpenAI CLIP mean/std."""
    return PreprocessConfig(
        image_size=image_size,
        mean=OPENAI_CLIP_MEAN,
        std=OPENAI_CLIP_STD,
        interpolation="bicubic",
        resize_mode="squash",
    )


class EvaViT(Eva):
    """EVA ViT with BLIP-2's final LayerNorm; a ``VisionEncoder`` and ``LoadsForeignCheckpoints``.

    Attributes:
        width: C.
        preprocess_config: squash to S x S, bicubic, OpenAI CLIP mean/std.
        num_tokens: N = 1 + (S/P)^2.
    """

    def __init__(self, options: EvaViTOptions) -> None:
        hidden = options.hidden_size
        super().__init__(
            img_size=options.image_size,
            patch_size=options.patch_size,
            num_classes=0,
            global_pool="",
            embed_dim=hidden,
            depth=options.num_hidden_layers,
            num_heads=options.num_attention_heads,
            qkv_bias=options.qkv_bias,
            # int(C * ratio) must give exactly intermediate_size; the half avoids float round-down
            mlp_ratio=(options.intermediate_size + 0.5) / hidden,
            norm_layer=partial(LayerNorm, eps=options.layer_norm_eps),
            use_post_transformer_norm=True,
            use_fc_norm=False,
        )
        post_eps = options.post_layernorm_eps or options.layer_norm_eps
        # LAVIS runs ln_vision in float32 whatever the ViT's dtype; so do we.
        self.norm = LayerNormFp32(hidden, eps=post_eps)
        self.width = hidden
        self.preprocess_config = eva_preprocess_config(options.image_size)
        self.num_tokens = 1 + self.patch_embed.num_patches

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        """pixel_values [B, 3, S, S] -> tokens [B, 1 + (S/P)^2, C] after the final LayerNorm."""
        return self.forward_features(pixel_values)

    def load_foreign_state_dict(
        self, state_dict: Mapping[str, torch.Tensor], layout: str, *, source: str | None = None
    ) -> tuple[list[str], list[str]]:
        """Copy HF (``vision_model.*``), LAVIS (``visual_encoder.*``, ``ln_vision.*``) or raw EVA weights in.

        A position embedding for another input size is interpolated to ours. Returns
        (missing own names, unexpected source names); raises CheckpointError on a shape mismatch.
        """
        mapper = eva_keys.MAPPERS.get(layout)
        if mapper is None:
            raise CheckpointError(f"eva-vit reads layouts {sorted(eva_keys.MAPPERS)}, not {layout!r}")
        mapped, unknown = mapper(state_dict)
        self._fit_pos_embed(mapped)
        missing, unexpected = copy_into(self, mapped, source=source or f"{layout} state dict")
        return missing, sorted(set(unexpected) | set(unknown))

    def _fit_pos_embed(self, mapped: dict[str, tuple[str, torch.Tensor]]) -> None:
        if "pos_embed" not in mapped:
            return
        key, pos = mapped["pos_embed"]
        if pos.dim() == 3 and pos.shape[-1] == self.pos_embed.shape[-1] and pos.shape[1] != self.pos_embed.shape[1]:
            try:
                resized = resample_pos_embed(pos, self.patch_embed.grid_size, num_prefix_tokens=1)
            except ValueError as exc:
                raise CheckpointError(f"key {key!r}: {exc}") from None
            logger.info("eva-vit: position embedding %s -> %s", tuple(pos.shape), tuple(resized.shape))
            mapped["pos_embed"] = (key, resized)

    def load_weights_file(self, path: str | Path, layout: str = "auto", strict: bool = True) -> tuple[list[str], list[str]]:
        """Read a weights file or HF folder (any layout) and copy its vision weights in.

        Raises:
            CheckpointError: unreadable file, shape mismatch, or (``strict``) parameters left unset.
        """
        keys = stored_keys(path)  # safetensors / HF folder: names known before reading tensors
        if keys is not None:
            layout = eva_keys.detect_layout(keys) if layout == "auto" else layout
            state = read_state_dict(path, eva_keys.prefixes_to_read(layout, keys))
        else:  # a torch file: read it, then keep the vision keys
            state = read_state_dict(path)
            layout = eva_keys.detect_layout(list(state)) if layout == "auto" else layout
            prefixes = eva_keys.prefixes_to_read(layout, list(state))
            if prefixes is not None:
                state = {k: v for k, v in state.items() if k.startswith(prefixes)}
        missing, unexpected = self.load_foreign_state_dict(state, layout, source=str(path))
        if strict:
            allowed = ("norm.weight", "norm.bias") if layout == "eva" else ()
            raise_if_missing(missing, f"{path} (layout {layout})", allowed)
        if missing:
            logger.warning("eva-vit: %s left %d weights unset: %s", path, len(missing), missing[:8])
        if unexpected:
            logger.info("eva-vit: %s: %d keys not used: %s", path, len(unexpected), unexpected[:8])
        return missing, unexpected


def build_eva_vit(options: EvaViTOptions) -> EvaViT:
    """Factory of ``eva-vit``."""
    encoder = EvaViT(options)
    if options.weights is not None:
        encoder.load_weights_file(options.weights, options.weights_layout, options.strict)
    encoder.weights_loaded = options.weights is not None  # LoadsOwnWeights: else random until a checkpoint
    return encoder
