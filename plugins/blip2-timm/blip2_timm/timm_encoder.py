"""``timm``: any timm model as a vision encoder.

``forward_features`` gives either tokens [B, N, C] (ViTs, CLS/register tokens first, after the
final norm) or a feature map: [B, C, h, w] (CNNs) or [B, h, w, C] (Swin and other ``NHWC``
models). A feature map becomes N = h*w tokens in row-major order: [B, h*w, C].
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping

import torch
from torch import nn

from blip2core.plugin_api import (
    CheckpointError,
    PreprocessConfig,
    SpecError,
    copy_into,
    raise_if_missing,
    read_state_dict,
)
from blip2_timm.options import TimmOptions

logger = logging.getLogger(__name__)

_INTERPOLATIONS = {"bicubic", "bilinear", "nearest", "lanczos"}


def timm_preprocess_config(model: nn.Module, image_size: int | None = None) -> PreprocessConfig:
    """The model's timm eval transform as a PreprocessConfig.

    timm resizes the short side to S / crop_pct and centre-crops S ("center" crop mode), which is
    ``shortest_edge_crop``; its "squash" mode is ``squash``.
    """
    from timm.data import resolve_data_config

    data = resolve_data_config({}, model=model)
    interpolation = data.get("interpolation", "bicubic")
    return PreprocessConfig(
        image_size=image_size or model_image_size(model) or int(data["input_size"][-1]),
        mean=tuple(data["mean"]),
        std=tuple(data["std"]),
        interpolation=interpolation if interpolation in _INTERPOLATIONS else "bicubic",
        resize_mode="squash" if data.get("crop_mode") == "squash" else "shortest_edge_crop",
        crop_pct=min(1.0, float(data.get("crop_pct", 1.0))),
    )


def model_image_size(model: nn.Module) -> int | None:
    """S a patch-embedding model was built for (None for CNNs, which take any size)."""
    img_size = getattr(getattr(model, "patch_embed", None), "img_size", None)
    if img_size is None:
        return None
    return int(img_size if isinstance(img_size, int) else img_size[0])


class TimmEncoder(nn.Module):
    """A timm model's features as tokens.

    Attributes:
        width: C (``num_features``).
        preprocess_config: the eval transform the weights expect.
        trunk: the timm model (its classifier removed).
        drop_prefix_tokens: drop the ``num_prefix_tokens`` CLS/register tokens of token outputs.
    """

    def __init__(self, trunk: nn.Module, preprocess_config: PreprocessConfig, drop_prefix_tokens: bool = False) -> None:
        super().__init__()
        self.trunk = trunk
        self.width = int(trunk.num_features)
        self.preprocess_config = preprocess_config
        self.drop_prefix_tokens = drop_prefix_tokens
        self.num_prefix_tokens = int(getattr(trunk, "num_prefix_tokens", 0) or 0)
        self.channels_last = getattr(trunk, "output_fmt", "NCHW") == "NHWC"

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """pixel_values [B, 3, S, S] -> tokens [B, N, C]."""
        features = self.trunk.forward_features(pixel_values)
        if features.dim() == 4:
            return features.flatten(1, 2) if self.channels_last else features.flatten(2).transpose(1, 2)
        if features.dim() == 3:
            return features[:, self.num_prefix_tokens:] if self.drop_prefix_tokens else features
        raise RuntimeError(f"timm forward_features gave shape {tuple(features.shape)}; expected 3 or 4 dims")

    def load_foreign_state_dict(
        self, state_dict: Mapping[str, torch.Tensor], layout: str, *, source: str | None = None
    ) -> tuple[list[str], list[str]]:
        """Copy timm-named weights in (layout "timm"), after the model's timm checkpoint filter.

        Returns (missing own names ``trunk.*``, unexpected source names, e.g. the classifier's).
        """
        if layout != "timm":
            raise CheckpointError(f"the timm encoder reads layout 'timm', not {layout!r}")
        filtered = apply_timm_filter(dict(state_dict), self.trunk, source or "timm state dict")
        mapped = {"trunk." + k: (k, v) for k, v in filtered.items()}
        return copy_into(self, mapped, source=source or "timm state dict")


def apply_timm_filter(state_dict: dict[str, torch.Tensor], model: nn.Module, source: str) -> dict[str, torch.Tensor]:
    """Run the ``checkpoint_filter_fn`` of the model's timm module (format conversion, pos-embed resize)."""
    filter_fn = getattr(sys.modules.get(type(model).__module__), "checkpoint_filter_fn", None)
    if filter_fn is None:
        return state_dict
    try:
        return dict(filter_fn(state_dict, model))
    except Exception as exc:
        raise CheckpointError(f"{source}: timm's checkpoint filter for {type(model).__name__} failed: {exc}") from None


def create_timm_model(model_name: str, image_size: int | None, **kwargs) -> nn.Module:
    """``timm.create_model`` without classifier or download; ``img_size`` only where accepted."""
    import timm

    if not timm.is_model(model_name):
        close = timm.list_models(f"*{model_name.split('_')[0]}*")[:10]
        raise SpecError(f"unknown timm model {model_name!r}" + (f"; similar: {', '.join(close)}" if close else ""))
    kwargs = {"pretrained": False, "num_classes": 0, **kwargs}
    if image_size is not None:
        try:
            return timm.create_model(model_name, img_size=image_size, **kwargs)
        except TypeError as exc:
            if "img_size" not in str(exc):
                raise SpecError(f"timm model {model_name!r}: {exc}") from None
    try:
        return timm.create_model(model_name, **kwargs)
    except TypeError as exc:
        raise SpecError(f"timm model {model_name!r}: {exc}") from None


def build_timm_encoder(options: TimmOptions) -> TimmEncoder:
    """Factory of ``timm``."""
    trunk = create_timm_model(options.model_name, options.image_size, **options.model_kwargs)
    encoder = TimmEncoder(trunk, timm_preprocess_config(trunk, options.image_size), options.drop_prefix_tokens)
    if options.checkpoint_path is not None:
        state = read_state_dict(options.checkpoint_path)
        missing, unexpected = encoder.load_foreign_state_dict(state, "timm", source=options.checkpoint_path)
        if options.strict:
            raise_if_missing(missing, options.checkpoint_path)
        if unexpected:
            logger.info("timm: %s: %d keys not used: %s", options.checkpoint_path, len(unexpected), unexpected[:8])
    encoder.weights_loaded = options.checkpoint_path is not None  # LoadsOwnWeights: else random, see spec seed
    return encoder
