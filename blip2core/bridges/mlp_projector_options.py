"""Options of the ``mlp-projector`` bridge, apart from its torch module so that registering it
(``blip2core.bridges.plugin``, run by every ``blip2`` command) does not import torch."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class MLPProjectorOptions(BaseModel):
    """Options of ``mlp-projector``.

    Attributes:
        hidden_size: H, width of the hidden layer (and of ``query_output``); default: the LLM's D.
        num_layers: linear layers (1 = a single projection, 2 = LLaVA-1.5's Linear-GELU-Linear).
        activation: non-linearity between layers.
    """

    model_config = ConfigDict(extra="forbid")

    hidden_size: int | None = Field(None, gt=0)
    num_layers: int = Field(2, ge=1, le=8)
    activation: Literal["gelu", "relu", "silu"] = "gelu"
