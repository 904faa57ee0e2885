"""Registers the core's bridges through the same hook every external plugin uses.

Light on purpose (every ``blip2`` command runs it): the options are pydantic models without torch,
and the torch modules are imported inside the factories, when a bridge is built.
"""

from __future__ import annotations

from blip2core.hookspecs import hookimpl


def build_qformer(options, *, vision_width, llm_hidden_size):
    """``qformer`` factory (``blip2core.bridges.qformer.factory``)."""
    from blip2core.bridges.qformer.factory import build_qformer as build

    return build(options, vision_width=vision_width, llm_hidden_size=llm_hidden_size)


def build_mlp_projector(options, *, vision_width, llm_hidden_size):
    """``mlp-projector`` factory (``blip2core.bridges.mlp_projector``)."""
    from blip2core.bridges.mlp_projector import build_mlp_projector as build

    return build(options, vision_width=vision_width, llm_hidden_size=llm_hidden_size)


@hookimpl
def register_bridges(register):
    from blip2core.bridges.mlp_projector_options import MLPProjectorOptions
    from blip2core.bridges.qformer.config import QFormerOptions

    register(
        "qformer",
        build_qformer,
        options=QFormerOptions,
        description="BLIP-2 Querying Transformer: learned queries cross-attend to vision tokens",
    )
    register(
        "mlp-projector",
        build_mlp_projector,
        options=MLPProjectorOptions,
        description="LLaVA-style MLP over every vision token",
    )
