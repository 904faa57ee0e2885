"""Retrieval rows: one photo against N texts, ITC then ITM re-ranking, blip2core's ``pipe.retrieve``
against transformers' ``Blip2ForImageTextRetrieval`` on the same checkpoint.

transformers' retrieval model takes pixel_values with every call, so its ITM pass re-runs the
vision tower for each (image, text) pair; blip2core encodes the image once. ``pipe.retrieve``
ranks in both directions (LAVIS's ``compute_sim_matrix``), so with one image it scores every text
with ITM (each text's top image is that image): the first row gives transformers the same work
(ITC over all texts, ITM over all pairs), the second only the image-to-text top 5 a user of
transformers would re-rank.
"""

from __future__ import annotations

import itertools
import warnings

import torch

from benchmarks.context import Context
from benchmarks.rows import Row
from benchmarks.timing import interleaved

ADJECTIVES = ("a red", "a small", "an old", "a wooden", "a bright")
NOUNS = ("cat", "astronaut", "cup of coffee", "temple", "bicycle", "dog", "car", "house", "tree", "boat")
PLACES = ("on a table", "in a park", "at night", "next to a window", "under the sky", "in a city", "on the grass",
          "by the sea", "in the snow", "in a room")
ITM_CHUNK = 25  # pairs per transformers ITM call (its vision tower runs once per pair)


def texts(count: int) -> list[str]:
    """``count`` distinct captions (at most 500)."""
    return [f"{a} {n} {p}" for n, p, a in itertools.islice(itertools.product(NOUNS, PLACES, ADJECTIVES), count)]


def retrieval_rows(ctx: Context) -> list[Row]:
    from transformers import AutoTokenizer, Blip2ForImageTextRetrieval

    from blip2core import load_pipeline

    folder = ctx.retrieval_folder
    dtype = getattr(torch, ctx.dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        hf = Blip2ForImageTextRetrieval.from_pretrained(folder, dtype=dtype).to(ctx.device).eval()
        ours = load_pipeline(folder, device=ctx.device, dtype=ctx.dtype)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    count = 10 if ctx.quick else 100
    candidates = texts(count)
    image = ctx.photos[0]
    k = 5
    pixels = ours.preprocessor(image).to(ctx.device, dtype)  # [1, 3, S, S]: the same pixels on both sides
    encoded = tokenizer(candidates, padding=True, return_tensors="pt").to(ctx.device)

    @torch.inference_mode()
    def hf_itc() -> torch.Tensor:
        return hf(pixel_values=pixels, **encoded, use_image_text_matching_head=False).logits_per_image[0].float()

    @torch.inference_mode()
    def hf_itm(indices: list[int]) -> torch.Tensor:
        logits = []
        for start in range(0, len(indices), ITM_CHUNK):
            chunk = indices[start:start + ITM_CHUNK]
            out = hf(pixel_values=pixels.expand(len(chunk), -1, -1, -1), input_ids=encoded["input_ids"][chunk],
                     attention_mask=encoded["attention_mask"][chunk], use_image_text_matching_head=True)
            logits.append(out.logits_per_image[:, 1].float())
        return torch.cat(logits)

    def hf_all_pairs() -> tuple[torch.Tensor, torch.Tensor]:
        return hf_itc(), hf_itm(list(range(count)))

    def hf_top_k() -> list[int]:
        itc = hf_itc()
        top = itc.topk(k).indices.tolist()
        scores = hf_itm(top) + itc[top]
        return [top[i] for i in scores.argsort(descending=True).tolist()]

    def ours_retrieve() -> dict:
        return ours.retrieve(image, candidates, k=k)

    def ours_image_to_text() -> dict:
        return ours.retrieve(image, candidates, k=k, directions=["image_to_text"])

    for _ in range(ctx.warm_up_rounds):  # --quick: one timed call per side, on warm models
        ours.retrieve(image, candidates[:2], k=1)
        hf_itc()
        hf_itm([0])
    timing = interleaved({"ours": ours_retrieve, "ours_top": ours_image_to_text, "all": hf_all_pairs,
                          "top": hf_top_k}, ctx.rounds, **ctx.timing_options())
    result, one_way = timing["ours"].output, timing["ours_top"].output
    itc, itm = timing["all"].output
    ours_itm = torch.tensor([ranking[0]["itm"] for ranking in result["text_to_image"]])
    ours_itc = torch.tensor([ranking[0]["itc"] for ranking in result["text_to_image"]])
    diff = max((ours_itm - itm.cpu()).abs().max().item(), (ours_itc - itc.cpu()).abs().max().item())
    same_top = [e["index"] for e in one_way["image_to_text"][0]] == timing["top"].output
    label = f"1 image x {count} texts, {ctx.dtype}"
    return [
        Row(f"retrieval {label}: ITC + ITM of every pair", timing["ours"].median, timing["all"].median, "s",
            f"max|diff| {diff:.1e}", "ours: pipe.retrieve(k=5), both directions; theirs: ITC call + ITM on every "
            f"pair in chunks of {ITM_CHUNK}", target=">= 2x"),
        Row(f"retrieval {label}: image-to-text top {k} re-ranked", timing["ours_top"].median, timing["top"].median,
            "s", f"same top {k}: {same_top}", f"theirs: ITC call + ITM on the top {k} only; ours: "
            "pipe.retrieve(k=5, directions=['image_to_text'])"),
    ]
