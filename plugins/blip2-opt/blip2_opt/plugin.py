"""Registers the ``opt`` language model (imports transformers only when it is built) and claims the
``text_config`` of Hugging Face BLIP-2 folders whose text model is OPT."""

from __future__ import annotations

from blip2core import hookimpl
from blip2core.plugin_api import text_config_reader


@hookimpl
def register_language_models(register):
    from blip2_opt.component import OPTOptions, build_opt

    register(
        "opt",
        build_opt,
        options=OPTOptions,
        description="OPT causal LM from transformers (folder, hub id or config); stops on newline",
    )


@hookimpl
def register_hf_configs(register):
    register("text", "opt", text_config_reader("opt"))


#: Salesforce's BLIP-2 OPT checkpoints on the Hugging Face hub. Sizes are estimates (parameters x 4
#: bytes: the hub stores them in float32); the hub's file listing is what ``blip2 download`` fetches.
_SALESFORCE_LICENCE = "MIT (Salesforce model card)"
_OPT_PRESETS = (
    ("blip2-opt-2.7b", "Salesforce/blip2-opt-2.7b", "~15 GB", ("caption", "vqa"),
     "BLIP-2 pretrained: EVA ViT-g + Q-Former + OPT-2.7B (zero-shot captioning and VQA)"),
    ("blip2-opt-6.7b", "Salesforce/blip2-opt-6.7b", "~31 GB", ("caption", "vqa"),
     "BLIP-2 pretrained: EVA ViT-g + Q-Former + OPT-6.7B"),
    ("blip2-opt-2.7b-coco", "Salesforce/blip2-opt-2.7b-coco", "~15 GB", ("caption",),
     "BLIP-2 OPT-2.7B fine-tuned on COCO captions (prompt 'a photo of')"),
    ("blip2-opt-6.7b-coco", "Salesforce/blip2-opt-6.7b-coco", "~31 GB", ("caption",),
     "BLIP-2 OPT-6.7B fine-tuned on COCO captions (prompt 'a photo of')"),
)


@hookimpl
def register_presets(register):
    """The OPT BLIP-2 checkpoints, registered here because this plugin provides their language model
    (their EVA vision tower needs blip2-eva-clip installed too; the Q-Former is the core's)."""
    for name, hub_id, size, tasks, description in _OPT_PRESETS:
        register(name, hub_id=hub_id, description=description, download_size=size,
                 licence=_SALESFORCE_LICENCE, tasks=tasks)
