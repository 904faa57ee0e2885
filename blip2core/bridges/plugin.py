"""Registers the core's bridges through the same hook every external plugin uses."""

from __future__ import annotations

from blip2core.hookspecs import hookimpl


@hookimpl
def register_bridges(register):
    from blip2core.bridges.mlp_projector import MLPProjectorOptions, build_mlp_projector
    from blip2core.bridges.qformer.config import QFormerOptions
    from blip2core.bridges.qformer.factory import build_qformer

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
