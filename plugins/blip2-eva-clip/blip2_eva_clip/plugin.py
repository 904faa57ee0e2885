"""Registers the EVA vision encoders and claims the ``vision_config`` of Hugging Face BLIP-2 folders.
Light on purpose: the heavy modules load inside the factories."""

from __future__ import annotations

from blip2core import hookimpl
from blip2_eva_clip.options import EvaViTOptions, OpenClipEvaOptions


def build_eva_vit(options: EvaViTOptions):
    """``eva-vit`` factory -> ``EvaViT`` (tokens [B, 257, 1408] at 224 px)."""
    from blip2_eva_clip.eva_vit import build_eva_vit as build

    return build(options)


def build_open_clip_eva(options: OpenClipEvaOptions):
    """``open-clip-eva`` factory -> ``OpenClipEva`` (tokens of one block, CLS first)."""
    from blip2_eva_clip.open_clip_eva import build_open_clip_eva as build

    return build(options)


@hookimpl
def register_vision_encoders(register):
    register(
        "eva-vit",
        build_eva_vit,
        options=EvaViTOptions,
        description="EVA ViT-g/14 as in BLIP-2 (39 blocks + ln_vision); loads HF, LAVIS or EVA weights",
    )
    register(
        "open-clip-eva",
        build_open_clip_eva,
        options=OpenClipEvaOptions,
        description="vision tower of an open_clip EVA model (EVA01-g-14, EVA02-B-16, EVA02-L-14, ...) as tokens",
    )


@hookimpl
def register_hf_configs(register):
    from blip2_eva_clip.hf_config import read_blip2_vision_config

    register("vision", "blip_2_vision_model", read_blip2_vision_config)
