"""``ImageEncoding``: what encoding a batch of images computes, handed from ``Pipeline`` to the
inference functions (``blip2core.inference``).

It sits below both: ``pipeline.py`` builds it and the inference modules read it, so neither has to
import the other at run time for it (no ``pipeline`` <-> ``inference`` import cycle).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class ImageEncoding:
    """Everything ``Pipeline.encode_images`` computes for a batch of images.

    Attributes:
        vision_tokens: [B, N, C] frozen encoder output (float32).
        query_output: [B, Q, H] bridge output before projection (float32).
        llm_inputs: [B, Q, D] soft prompt, in the LLM's dtype.
        llm_attention_mask: [B, Q] long.
    """

    vision_tokens: torch.Tensor
    query_output: torch.Tensor
    llm_inputs: torch.Tensor
    llm_attention_mask: torch.Tensor

    def expand(self, batch: int) -> ImageEncoding:
        """One image's encoding (batch 1) repeated, without copying, for ``batch`` rows."""
        return ImageEncoding(
            *(t.expand(batch, *t.shape[1:]) for t in (
                self.vision_tokens, self.query_output, self.llm_inputs, self.llm_attention_mask
            ))
        )
