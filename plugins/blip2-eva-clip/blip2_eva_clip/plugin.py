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


#: Salesforce's Q-Former-only BLIP-2 checkpoints (``Blip2ForImageTextRetrieval``: EVA ViT-g + Q-Former
#: with ITC / ITM heads, no language model). The Q-Former is the core's, so the EVA tower is the part
#: this plugin adds. Sizes are estimates (parameters x 4 bytes, float32 on the hub).
_SALESFORCE_LICENCE = "MIT (Salesforce model card)"
_QFORMER_TASKS = ("match", "retrieve", "classify", "features")


@hookimpl
def register_presets(register):
    register("blip2-itm-vit-g", hub_id="Salesforce/blip2-itm-vit-g", download_size="~5 GB",
             licence=_SALESFORCE_LICENCE, tasks=_QFORMER_TASKS,
             description="BLIP-2 stage-1 Q-Former + EVA ViT-g: image-text matching (ITM), ITC similarity")
    register("blip2-itm-vit-g-coco", hub_id="Salesforce/blip2-itm-vit-g-coco", download_size="~5 GB",
             licence=_SALESFORCE_LICENCE, tasks=_QFORMER_TASKS,
             description="blip2-itm-vit-g fine-tuned on COCO retrieval")
    register("blip2-feature-extractor", hub_id="Salesforce/blip2-itm-vit-g", download_size="~5 GB (= itm-vit-g)",
             licence=_SALESFORCE_LICENCE, tasks=("features", "retrieve"),
             description="LAVIS blip2_feature_extractor: the blip2-itm-vit-g checkpoint used for image / text features")
