"""The Q-Former's transformer: BERT layers whose query positions also cross-attend to vision tokens.

Shapes: B batch, L = Q + T positions (queries first, then text), N vision tokens, C vision width,
H hidden size, I intermediate (FFN) size.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from blip2core.bridges.qformer.config import QFormerOptions

ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "gelu": F.gelu,
    "gelu_new": lambda x: F.gelu(x, approximate="tanh"),
    "gelu_pytorch_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "relu": F.relu,
    "silu": F.silu,
}


class Attention(nn.Module):
    """Multi-head attention + output projection + dropout + residual + post-LayerNorm (BERT style).

    Self-attention when ``context`` is ``hidden``; cross-attention when ``context`` holds vision tokens
    (then ``context_width`` = C).
    """

    def __init__(self, options: QFormerOptions, context_width: int) -> None:
        super().__init__()
        hidden = options.hidden_size
        self.num_heads = options.num_attention_heads
        self.head_size = hidden // self.num_heads
        self.query = nn.Linear(hidden, hidden)
        self.key = nn.Linear(context_width, hidden)
        self.value = nn.Linear(context_width, hidden)
        self.out_proj = nn.Linear(hidden, hidden)
        self.norm = nn.LayerNorm(hidden, eps=options.layer_norm_eps)
        self.dropout = nn.Dropout(options.hidden_dropout_prob)
        self.attention_dropout = options.attention_probs_dropout_prob

    def _split_heads(self, x: torch.Tensor) -> torch.Tensor:
        """[B, S, H] -> [B, heads, S, H / heads]."""
        return x.unflatten(-1, (self.num_heads, self.head_size)).transpose(1, 2)

    def forward(
        self, hidden: torch.Tensor, context: torch.Tensor, bias: torch.Tensor | None = None
    ) -> torch.Tensor:
        """hidden [B, L, H], context [B, S, H or C], bias [B, 1, L or 1, S] additive -> [B, L, H]."""
        attended = F.scaled_dot_product_attention(
            self._split_heads(self.query(hidden)),
            self._split_heads(self.key(context)),
            self._split_heads(self.value(context)),
            attn_mask=bias,
            dropout_p=self.attention_dropout if self.training else 0.0,
        )
        attended = attended.transpose(1, 2).flatten(2)
        return self.norm(self.dropout(self.out_proj(attended)) + hidden)


class FeedForward(nn.Module):
    """Linear(H, I) -> activation -> Linear(I, H) -> dropout -> residual -> LayerNorm."""

    def __init__(self, options: QFormerOptions) -> None:
        super().__init__()
        self.fc_in = nn.Linear(options.hidden_size, options.intermediate_size)
        self.fc_out = nn.Linear(options.intermediate_size, options.hidden_size)
        self.norm = nn.LayerNorm(options.hidden_size, eps=options.layer_norm_eps)
        self.dropout = nn.Dropout(options.hidden_dropout_prob)
        self.activation = ACTIVATIONS[options.hidden_act]

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        """[B, S, H] -> [B, S, H]."""
        return self.norm(self.dropout(self.fc_out(self.activation(self.fc_in(hidden)))) + hidden)


class QFormerLayer(nn.Module):
    """One Q-Former layer.

    All positions self-attend (under the given mask). Then query positions (the first Q) optionally
    cross-attend to the vision tokens and go through ``query_ffn``; text positions go through ``text_ffn``.

    Modules: ``self_attention``, ``cross_attention`` (None on layers without it), ``query_ffn``,
    ``text_ffn`` (None without text heads).
    """

    def __init__(self, options: QFormerOptions, vision_width: int, with_cross_attention: bool) -> None:
        super().__init__()
        self.self_attention = Attention(options, options.hidden_size)
        self.cross_attention = Attention(options, vision_width) if with_cross_attention else None
        self.query_ffn = FeedForward(options)
        self.text_ffn = FeedForward(options) if options.with_text_heads else None

    def forward(
        self,
        hidden: torch.Tensor,
        self_bias: torch.Tensor | None,
        query_length: int,
        vision_tokens: torch.Tensor | None = None,
        vision_bias: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """hidden [B, L, H] (first ``query_length`` positions are queries) -> [B, L, H].

        self_bias: [B, 1, L or 1, L] additive; vision_tokens [B, N, C]; vision_bias [B, 1, 1, N] additive.
        """
        attended = self.self_attention(hidden, hidden, self_bias)
        queries, text = attended[:, :query_length], attended[:, query_length:]
        outputs = []
        if query_length > 0:
            if self.cross_attention is not None:
                if vision_tokens is None:
                    raise ValueError("query positions need vision_tokens for this layer's cross-attention")
                queries = self.cross_attention(queries, vision_tokens, vision_bias)
            outputs.append(self.query_ffn(queries))
        if text.shape[1] > 0:
            if self.text_ffn is None:
                raise ValueError("this Q-Former was built with with_text_heads=False: it has no text side")
            outputs.append(self.text_ffn(text))
        return torch.cat(outputs, dim=1) if len(outputs) > 1 else outputs[0]


class QFormerEncoder(nn.Module):
    """Input LayerNorm + dropout over the embeddings, then the layer stack.

    ``input_norm`` is LAVIS ``Qformer.bert.embeddings.LayerNorm`` / HF ``qformer.layernorm``: it normalises
    the concatenation ``[query tokens ; text embeddings]`` (queries get no position embedding).
    """

    def __init__(self, options: QFormerOptions, vision_width: int) -> None:
        super().__init__()
        self.input_norm = nn.LayerNorm(options.hidden_size, eps=options.layer_norm_eps)
        self.dropout = nn.Dropout(options.hidden_dropout_prob)
        self.layers = nn.ModuleList(
            QFormerLayer(options, vision_width, options.has_cross_attention(index))
            for index in range(options.num_hidden_layers)
        )

    def forward(
        self,
        embeddings: torch.Tensor,
        self_bias: torch.Tensor | None,
        query_length: int,
        vision_tokens: torch.Tensor | None = None,
        vision_bias: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """embeddings [B, L, H] -> last hidden state [B, L, H] (arguments as ``QFormerLayer.forward``)."""
        hidden = self.dropout(self.input_norm(embeddings))
        for layer in self.layers:
            hidden = layer(hidden, self_bias, query_length, vision_tokens, vision_bias)
        return hidden
