"""Registers the CLIP ViT vision encoders. Light on purpose: the heavy modules load inside the factories."""

from __future__ import annotations

from blip2core import hookimpl
from blip2_clip_vit.options import ClipViTOptions, HFClipVisionOptions


def build_clip_vit(options: ClipViTOptions):
    """``clip-vit`` factory -> ``OpenClipViT`` (tokens [B, 257, 1024] for ViT-L/14 at 224 px)."""
    from blip2_clip_vit.open_clip_vit import build_clip_vit as build

    return build(options)


def build_hf_clip_vision(options: HFClipVisionOptions):
    """``hf-clip-vision`` factory -> ``HFClipVision``."""
    from blip2_clip_vit.hf_clip_vision import build_hf_clip_vision as build

    return build(options)


@hookimpl
def register_vision_encoders(register):
    register(
        "clip-vit",
        build_clip_vit,
        options=ClipViTOptions,
        description="open_clip ViT tower (ViT-L-14, ...) as tokens of one block; BLIP-2 ViT-L = layer -2",
    )
    register(
        "hf-clip-vision",
        build_hf_clip_vision,
        options=HFClipVisionOptions,
        description="transformers CLIPVisionModel (local folder or config) as tokens of one layer",
    )
