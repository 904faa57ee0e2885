"""The Q-Former's text side: embeddings, the ITG language-model head, and the ITC similarity.

Shapes: B batch, T text tokens, Q queries, H hidden size, E ITC width, V vocabulary.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from blip2core.bridges.qformer.config import QFormerOptions
from blip2core.bridges.qformer.layers import ACTIVATIONS


class TextEmbeddings(nn.Module):
    """Word + absolute position embeddings (no LayerNorm: the encoder's ``input_norm`` does that)."""

    def __init__(self, options: QFormerOptions) -> None:
        super().__init__()
        self.word_embeddings = nn.Embedding(options.vocab_size, options.hidden_size, padding_idx=options.pad_token_id)
        self.position_embeddings = nn.Embedding(options.max_position_embeddings, options.hidden_size)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        """input_ids [B, T] long -> [B, T, H]; positions count from 0 (queries take none)."""
        length = input_ids.shape[1]
        if length > self.position_embeddings.num_embeddings:
            raise ValueError(
                f"text of {length} tokens is longer than max_position_embeddings "
                f"({self.position_embeddings.num_embeddings}); truncate it"
            )
        positions = torch.arange(length, device=input_ids.device)
        return self.word_embeddings(input_ids) + self.position_embeddings(positions)[None]


class LanguageModelHead(nn.Module):
    """BERT's MLM-style head used for ITG: Linear(H, H) -> activation -> LayerNorm -> tied decoder + bias.

    The decoder weight is the word-embedding matrix [V, H] (tied, as in LAVIS), passed to ``forward``.
    """

    def __init__(self, options: QFormerOptions) -> None:
        super().__init__()
        self.transform = nn.Linear(options.hidden_size, options.hidden_size)
        self.norm = nn.LayerNorm(options.hidden_size, eps=options.layer_norm_eps)
        self.bias = nn.Parameter(torch.zeros(options.vocab_size))
        self.activation = ACTIVATIONS[options.hidden_act]

    def forward(self, hidden: torch.Tensor, decoder_weight: torch.Tensor) -> torch.Tensor:
        """hidden [B, T, H], decoder_weight [V, H] -> logits [B, T, V]."""
        return F.linear(self.norm(self.activation(self.transform(hidden))), decoder_weight, self.bias)


def query_text_similarity(
    image_embeds: torch.Tensor,
    text_embeds: torch.Tensor,
    temperature: torch.Tensor | float | None = None,
    *,
    paired: bool = False,
) -> torch.Tensor:
    """BLIP-2's ITC similarity: for each (image, text), the cosine of the best-matching query.

    The one definition every ITC user calls (matching, retrieval, classification, the runner's
    itc / itm losses, ``QFormerBridge.itc_scores``).

    Args:
        image_embeds: [B_img, Q, E] normalised query projections.
        text_embeds: [B_txt, E] normalised CLS projections.
        temperature: divide by it (ITC logits, as the loss and ``classify`` use); None: plain cosine.
        paired: image b with text b only (B_img == B_txt = P) instead of every image with every text.

    Returns:
        [B_img, B_txt] (or [P] when ``paired``) max over Q of the cosine similarity, / temperature.
    """
    if paired:
        if image_embeds.shape[0] != text_embeds.shape[0]:
            raise ValueError(
                f"paired similarity needs as many images as texts: {image_embeds.shape[0]} vs {text_embeds.shape[0]}"
            )
        similarity = torch.einsum("pqe,pe->pq", image_embeds, text_embeds).amax(dim=1)
    else:
        similarity = torch.einsum("iqe,te->iqt", image_embeds, text_embeds).amax(dim=1)
    return similarity if temperature is None else similarity / temperature
