"""Registers the ``t5`` language model (imports transformers only when it is built), claims the
``text_config`` of Hugging Face BLIP-2 folders whose text model is T5, and names Salesforce's
BLIP-2 FlanT5 checkpoints."""

from __future__ import annotations

from blip2core import hookimpl
from blip2core.plugin_api import text_config_reader


@hookimpl
def register_language_models(register):
    from blip2_t5.component import T5Options, build_t5

    register(
        "t5",
        build_t5,
        options=T5Options,
        description="T5 / FlanT5 encoder-decoder from transformers (folder, hub id or config); soft prompt into the encoder",
    )


@hookimpl
def register_hf_configs(register):
    register("text", "t5", text_config_reader("t5"))


#: Salesforce's BLIP-2 FlanT5 checkpoints on the Hugging Face hub. Sizes are estimates (parameters x 4
#: bytes: the hub stores them in float32); the hub's file listing is what ``blip2 download`` fetches.
_SALESFORCE_LICENCE = "MIT (Salesforce model card)"
_T5_PRESETS = (
    ("blip2-flan-t5-xl", "Salesforce/blip2-flan-t5-xl", "~16 GB", ("caption", "vqa"),
     "BLIP-2 pretrained: EVA ViT-g + Q-Former + FlanT5-XL (zero-shot captioning and VQA; "
     "LAVIS VQA prompt 'Question: {} Short answer:')"),
    ("blip2-flan-t5-xxl", "Salesforce/blip2-flan-t5-xxl", "~49 GB", ("caption", "vqa"),
     "BLIP-2 pretrained: EVA ViT-g + Q-Former + FlanT5-XXL"),
    ("blip2-flan-t5-xl-coco", "Salesforce/blip2-flan-t5-xl-coco", "~16 GB", ("caption",),
     "BLIP-2 FlanT5-XL fine-tuned on COCO captions (prompt 'a photo of')"),
    ("instructblip-flan-t5-xl", "Salesforce/instructblip-flan-t5-xl", "~16 GB", ("caption", "vqa"),
     "InstructBLIP: EVA ViT-g + instruction-aware Q-Former + FlanT5-XL (LAVIS blip2_t5_instruct/flant5xl)"),
    ("instructblip-flan-t5-xxl", "Salesforce/instructblip-flan-t5-xxl", "~49 GB", ("caption", "vqa"),
     "InstructBLIP: EVA ViT-g + instruction-aware Q-Former + FlanT5-XXL (LAVIS blip2_t5_instruct/flant5xxl)"),
)


@hookimpl
def register_presets(register):
    """The FlanT5 BLIP-2 checkpoints, registered here because this plugin provides their language
    model (their EVA vision tower needs blip2-eva-clip installed too; the Q-Former is the core's)."""
    for name, hub_id, size, tasks, description in _T5_PRESETS:
        register(name, hub_id=hub_id, description=description, download_size=size,
                 licence=_SALESFORCE_LICENCE, tasks=tasks)
