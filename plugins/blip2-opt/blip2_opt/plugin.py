"""Registers the ``opt`` language model (imports transformers only when it is built)."""

from __future__ import annotations

from blip2core import hookimpl


@hookimpl
def register_language_models(register):
    from blip2_opt.component import OPTOptions, build_opt

    register(
        "opt",
        build_opt,
        options=OPTOptions,
        description="OPT causal LM from transformers (folder, hub id or config); stops on newline",
    )
