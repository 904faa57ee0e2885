"""``mlp-projector``: every vision token through a small MLP into the LLM's embedding space.

LLaVA's bridge. It keeps all N vision tokens (Q = N), which shows the Bridge protocol does not
assume a fixed number of learned queries.
"""

from __future__ import annotations

import torch
from torch import nn

from blip2core.bridges.mlp_projector_options import MLPProjectorOptions
from blip2core.protocols import BridgeOutput

__all__ = ["MLPProjector", "MLPProjectorOptions", "build_mlp_projector"]


_ACTIVATIONS = {"gelu": nn.GELU, "relu": nn.ReLU, "silu": nn.SiLU}


class MLPProjector(nn.Module):
    """vision tokens [B, N, C] -> hidden [B, N, H] -> LLM inputs [B, N, D]."""

    def __init__(self, options: MLPProjectorOptions, vision_width: int, llm_hidden_size: int) -> None:
        super().__init__()
        self.hidden_size = options.hidden_size or llm_hidden_size
        layers: list[nn.Module] = [nn.Linear(vision_width, self.hidden_size)]
        for _ in range(options.num_layers - 2):
            layers += [_ACTIVATIONS[options.activation](), nn.Linear(self.hidden_size, self.hidden_size)]
        self.body = nn.Sequential(*layers)
        self.activation = _ACTIVATIONS[options.activation]() if options.num_layers > 1 else nn.Identity()
        self.projection = (
            nn.Linear(self.hidden_size, llm_hidden_size)
            if options.num_layers > 1
            else _identity_if_same(self.hidden_size, llm_hidden_size)
        )

    def forward(self, vision_tokens: torch.Tensor, vision_attention_mask: torch.Tensor | None = None) -> BridgeOutput:
        hidden = self.body(vision_tokens)
        return BridgeOutput(
            query_output=hidden,
            llm_inputs=self.projection(self.activation(hidden)),
            llm_attention_mask=None if vision_attention_mask is None else vision_attention_mask.long(),
        )


def _identity_if_same(hidden_size: int, llm_hidden_size: int) -> nn.Module:
    if hidden_size != llm_hidden_size:
        raise ValueError(
            f"mlp-projector with num_layers=1 maps straight to the LLM: hidden_size must be "
            f"{llm_hidden_size} (the LLM's), got {hidden_size}"
        )
    return nn.Identity()


def build_mlp_projector(options: MLPProjectorOptions, *, vision_width: int, llm_hidden_size: int) -> MLPProjector:
    return MLPProjector(options, vision_width, llm_hidden_size)
