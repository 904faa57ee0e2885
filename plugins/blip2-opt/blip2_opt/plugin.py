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
