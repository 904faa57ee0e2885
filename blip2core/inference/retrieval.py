"""``retrieve`` (ITC top-k re-scored with ITM, as BLIP-2 evaluates retrieval) and zero-shot ``classify``.

Both need the bridge's text side (``blip2core.protocols.TextBridge``). Each image goes through
the vision encoder once (``Pipeline.encode_vision``) and the bridge's query pass once; ITM then
runs one joint pass per candidate pair.

Shapes: I images, T texts, K candidates kept, N vision tokens, C vision width, Q queries, E ITC width.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch

from blip2core.bridges.qformer.heads import query_text_similarity
from blip2core.bridges.qformer.modeling import INITIAL_TEMPERATURE
from blip2core.inference.images import check_pixel_values, load_images
from blip2core.inference.matching import Method, check_method, itc_embeddings, itm_logits
from blip2core.inference.state import exclusive
from blip2core.inference.text import MAX_MATCH_TOKENS, as_text_list, require_text_side, tokenize

if TYPE_CHECKING:
    from blip2core.pipeline import Pipeline


DIRECTIONS = ("image_to_text", "text_to_image")


def retrieve(
    pipe: Pipeline, images: Any, texts: str | Sequence[str], k: int = 5,
    directions: Sequence[str] = DIRECTIONS,
) -> dict[str, list[list[dict[str, float]]]]:
    """Rank texts for each image and/or images for each text.

    As BLIP-2 (LAVIS ``compute_sim_matrix``): the ITC similarity picks the top ``k`` candidates,
    then each candidate's score is its ITM "match" logit plus its ITC similarity.

    Returns:
        ``{"image_to_text": [per image: [{"index", "score", "itc", "itm"}, ...]],
        "text_to_image": [per text: [...]]}``, each list sorted by ``score``, best first, at most
        ``k`` long; ``index`` points into ``texts`` / ``images``. Only the keys of ``directions``
        are present: ``directions=["image_to_text"]`` runs ITM on the I x k candidate pairs only
        (with both, one image against T texts needs every one of the T pairs for text_to_image).
    """
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be a positive int, got {k!r}")
    wanted = [directions] if isinstance(directions, str) else list(directions)
    unknown = [d for d in wanted if d not in DIRECTIONS]
    if unknown or not wanted:
        raise ValueError(f"directions must name some of {', '.join(DIRECTIONS)}; got {directions!r}")
    text_list = as_text_list(texts, "texts")
    pixel_values = load_images(pipe, images)
    with exclusive(pipe):
        bridge = require_text_side(pipe, "retrieve")
        ids, mask = tokenize(bridge, text_list, pipe.device, MAX_MATCH_TOKENS)
        vision_tokens = pipe.encode_vision(pixel_values)  # [I, N, C]
        image_proj, text_proj = itc_embeddings(bridge, vision_tokens, ids, mask)
        itc = query_text_similarity(image_proj, text_proj).float().cpu()  # [I, T]
        i2t = itc.topk(min(k, itc.shape[1]), dim=1).indices.tolist() if "image_to_text" in wanted else []  # [I, K]
        t2i = itc.topk(min(k, itc.shape[0]), dim=0).indices.t().tolist() if "text_to_image" in wanted else []  # [T, K]
        pairs = list(dict.fromkeys([(i, t) for i, row in enumerate(i2t) for t in row]
                                   + [(i, t) for t, row in enumerate(t2i) for i in row]))
        rows = torch.tensor([i for i, _ in pairs], device=vision_tokens.device)
        cols = torch.tensor([t for _, t in pairs], device=ids.device)
        match_logits = itm_logits(bridge, vision_tokens[rows], ids[cols], mask[cols])[:, 1].float().cpu().tolist()
    itm = dict(zip(pairs, match_logits, strict=True))

    def entry(index: int, image: int, text: int) -> dict[str, float]:
        itc_value, itm_value = float(itc[image, text]), itm[(image, text)]
        return {"index": index, "score": itm_value + itc_value, "itc": itc_value, "itm": itm_value}

    def best_first(entries: list[dict[str, float]]) -> list[dict[str, float]]:
        return sorted(entries, key=lambda e: -e["score"])

    ranked = {
        "image_to_text": [best_first([entry(t, i, t) for t in row]) for i, row in enumerate(i2t)],
        "text_to_image": [best_first([entry(i, i, t) for i in row]) for t, row in enumerate(t2i)],
    }
    return {direction: ranked[direction] for direction in DIRECTIONS if direction in wanted}


def classify(
    pipe: Pipeline,
    images: Any,
    labels: Sequence[str],
    template: str = "a photo of {}",
    method: Method = "itc",
) -> list[dict[str, Any]]:
    """Zero-shot classification: each label put into ``template`` and scored against each image.

    Args:
        labels: the class names (at least one).
        template: text around a label (exactly one ``{}``).
        method: ``"itc"`` softmax over labels of ITC similarity / the Q-Former's temperature
            (CLIP-style); ``"itm"`` softmax over labels of the ITM log-odds (slower: one joint pass
            per image and label).

    Returns:
        Per image ``{"label": best label, "scores": {label: probability, ...}}`` (labels in the
        order given, probabilities summing to 1).
    """
    check_method(method)
    label_list = as_text_list(labels, "labels")
    _label_texts(label_list, template)
    return classify_pixels(pipe, load_images(pipe, images), label_list, template, method)


def classify_pixels(
    pipe: Pipeline,
    pixel_values: torch.Tensor,
    labels: list[str],
    template: str = "a photo of {}",
    method: Method = "itc",
) -> list[dict[str, Any]]:
    """``classify`` on preprocessed pixel_values [B, 3, S, S]."""
    check_method(method)
    label_list = as_text_list(labels, "labels")
    texts = _label_texts(label_list, template)
    pixel_values = check_pixel_values(pipe, pixel_values)
    with exclusive(pipe):
        bridge = require_text_side(pipe, "classify")
        ids, mask = tokenize(bridge, texts, pipe.device, MAX_MATCH_TOKENS)
        vision_tokens = pipe.encode_vision(pixel_values)  # [I, N, C]
        if method == "itc":
            image_proj, text_proj = itc_embeddings(bridge, vision_tokens, ids, mask)
            temperature = float(bridge.temp) if bridge.temp is not None else INITIAL_TEMPERATURE
            logits = query_text_similarity(image_proj, text_proj, temperature)  # [I, L]
        else:
            images_count, labels_count = vision_tokens.shape[0], len(texts)
            rows = torch.arange(images_count, device=vision_tokens.device).repeat_interleave(labels_count)
            cols = torch.arange(labels_count, device=ids.device).repeat(images_count)
            pair_logits = itm_logits(bridge, vision_tokens[rows], ids[cols], mask[cols])
            logits = (pair_logits[:, 1] - pair_logits[:, 0]).view(images_count, labels_count)
        probs = logits.float().softmax(dim=-1).cpu()
    results = []
    for row in probs.tolist():
        scores = dict(zip(label_list, row, strict=True))
        results.append({"label": max(scores, key=scores.get), "scores": scores})
    return results


def _label_texts(labels: list[str], template: str) -> list[str]:
    if len(set(labels)) != len(labels):
        raise ValueError(f"labels must be distinct, got {labels}")
    if not isinstance(template, str) or template.count("{}") != 1:
        raise ValueError(f"the label template needs exactly one '{{}}' where the label goes, got {template!r}")
    return [template.replace("{}", label) for label in labels]
