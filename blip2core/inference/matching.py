"""Image-text scores from the bridge's text heads (``blip2core.protocols.TextBridge``): ITM
(match probability) and ITC (cosine).

Each image goes through the vision encoder once (``Pipeline.encode_vision``); the bridge then runs
only the pass a score needs: the query pass for ITC, the joint image-text pass for ITM.

Shapes: I images, T texts, P pairs, N vision tokens, C vision width, Q queries, E ITC width,
L text tokens.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal

import torch

from blip2core.bridges.qformer.heads import query_text_similarity
from blip2core.inference.features import pair_count, pair_up
from blip2core.inference.images import check_pixel_values, load_images
from blip2core.inference.state import exclusive
from blip2core.inference.text import MAX_MATCH_TOKENS, as_text_list, require_text_side, tokenize
from blip2core.protocols import TextBridge

if TYPE_CHECKING:
    from blip2core.pipeline import Pipeline

Method = Literal["itm", "itc"]
METHODS = ("itm", "itc")
#: pairs per ITM pass (each pair runs the whole Q-Former over Q + L tokens)
ITM_CHUNK = 64


def match(pipe: Pipeline, images: Any, texts: str | Sequence[str], method: Method = "itm") -> torch.Tensor:
    """How well each image matches its text.

    Args:
        images, texts: P images and P texts (pair b with b), or one image and P texts, or P images
            and one text.
        method: ``"itm"``: probability that the pair matches (softmax of the ITM head, class 1);
            ``"itc"``: cosine similarity of the ITC embeddings (max over queries), in [-1, 1].

    Returns:
        float32 [P] on the CPU.
    """
    check_method(method)
    text_list = as_text_list(texts, "texts")
    return match_pixels(pipe, load_images(pipe, images), text_list, method)


def match_pixels(pipe: Pipeline, pixel_values: torch.Tensor, texts: list[str], method: Method = "itm") -> torch.Tensor:
    """``match`` on preprocessed pixel_values [B, 3, S, S] -> float32 [P] on the CPU."""
    scores = pair_scores(pipe, pixel_values, texts, method)
    return (scores.softmax(dim=-1)[:, 1] if method == "itm" else scores).float().cpu()


def pair_scores(pipe: Pipeline, pixel_values: torch.Tensor, texts: list[str], method: Method = "itm") -> torch.Tensor:
    """Raw scores of image-text pairs (paired as in ``match``): ITM logits [P, 2] (index 1 =
    "matches", mean over queries) or ITC cosine similarities [P] (max over queries); on the
    pipeline's device. Texts are truncated to ``MAX_MATCH_TOKENS`` tokens, as in LAVIS."""
    check_method(method)
    pixel_values = check_pixel_values(pipe, pixel_values)
    with exclusive(pipe):
        bridge = require_text_side(pipe, f"match(method={method!r})")
        ids, mask = tokenize(bridge, texts, pipe.device, MAX_MATCH_TOKENS)
        vision_tokens = pipe.encode_vision(pixel_values)  # [I, N, C]
        if method == "itm":
            return itm_logits(bridge, *pair_up(vision_tokens, ids, mask))
        pair_count(vision_tokens.shape[0], ids.shape[0])  # refuse unpairable counts before any bridge pass
        image_proj, text_proj = itc_embeddings(bridge, vision_tokens, ids, mask)  # [I, Q, E], [T, E]
        return query_text_similarity(*pair_up(image_proj, text_proj), paired=True)  # [P]


def itm_logits(bridge: TextBridge, vision_tokens: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Pairs vision_tokens [P, N, C], ids / mask [P, L] -> ITM logits [P, 2], in chunks of ``ITM_CHUNK``."""
    parts = [
        bridge.itm_logits(vision_tokens[i : i + ITM_CHUNK], ids[i : i + ITM_CHUNK], mask[i : i + ITM_CHUNK])
        for i in range(0, ids.shape[0], ITM_CHUNK)
    ]
    return torch.cat(parts)


def itc_embeddings(
    bridge: TextBridge, vision_tokens: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """vision_tokens [I, N, C], ids / mask [T, L] -> (image query projections [I, Q, E], text [CLS]
    projections [T, E]), L2-normalised: one query pass and one text pass of the bridge."""
    image_proj = bridge.image_embeds_proj(bridge.encode_queries(vision_tokens))
    text_proj = bridge.text_embeds_proj(bridge.text_features(ids, mask))
    return image_proj, text_proj


def check_method(method: str) -> None:
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; expected one of {', '.join(METHODS)}")
