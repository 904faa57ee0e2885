"""Inference rows, blip2core against transformers on the same checkpoint: image encoding, captions,
VQA with many questions per image, and the same in the dtype users get by default and quantized.

Both sides start from decoded PIL photos and do what their users write: transformers'
``Blip2Processor`` then ``Blip2ForConditionalGeneration.generate`` (one call per question, as its
model card shows), blip2core's ``pipe.caption`` / ``pipe.answer``. The decoding settings are the
same on both sides (BLIP-2's, with blip2core's stop ids: newline, then EOS), and every generation is
forced to its full length (``min_new_tokens = max_new_tokens``) so random weights, which may hit a
stop token anywhere, still give both sides the same amount of work; the agreement column says
whether the texts came out identical.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import torch

from benchmarks.context import Context
from benchmarks.rows import Row
from benchmarks.timing import interleaved

QUESTIONS = [
    "what is in the picture?", "what colour is it?", "how many people are there?", "is it indoors or outdoors?",
    "what is the person holding?", "what time of day is it?", "is there an animal?", "what is on the table?",
]
VQA_TEMPLATE = "Question: {} Answer:"


class Sides:
    """The transformers model + processor and the blip2core pipeline, loaded from one folder."""

    def __init__(self, ctx: Context, dtype: str | None, quantize: dict[str, Any] | None = None,
                 hf_quantization: Any = None, warm: bool = True) -> None:
        """``dtype`` None: each library's default (transformers' ``from_pretrained``, blip2core's ``auto``)."""
        from transformers import Blip2ForConditionalGeneration, Blip2Processor

        from blip2core import load_pipeline
        from blip2core.inference.textgen import stop_and_pad_ids

        folder = ctx.generation_folder
        hf_kwargs: dict[str, Any] = {} if dtype is None else {"dtype": getattr(torch, dtype)}
        if hf_quantization is not None:
            hf_kwargs["quantization_config"] = hf_quantization
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.hf = Blip2ForConditionalGeneration.from_pretrained(folder, **hf_kwargs).to(ctx.device).eval()
            self.processor = Blip2Processor.from_pretrained(folder)
            self.ours = load_pipeline(folder, device=ctx.device, dtype=dtype, quantize=quantize)
        self.ctx = ctx
        self.stops, self.pad = stop_and_pad_ids(self.ours)
        self.hf_dtype = next(self.hf.parameters()).dtype
        for _ in range(ctx.warm_up_rounds if warm else 0):  # --quick: the rows time one call each, on warm models
            self.warm_up()

    @torch.inference_mode()
    def warm_up(self) -> None:
        """One short greedy caption on each side: the first call's costs (lazy imports, first
        allocations) off the clock of the rows that follow."""
        image = self.ctx.photos[0]
        self.ours.caption(image, num_beams=1, max_new_tokens=3)
        self.hf_texts(image, None, num_beams=1, max_new_tokens=3)

    def dtype_label(self) -> str:
        ours = str(self.ours.llm_dtype).replace("torch.", "")
        theirs = str(self.hf_dtype).replace("torch.", "")
        return ours if ours == theirs else f"ours {ours}, theirs {theirs}"

    def hf_inputs(self, image: Any, text: str | None) -> dict[str, torch.Tensor]:
        inputs = self.processor(images=image, text=text, return_tensors="pt")
        return {k: (v.to(self.ctx.device, self.hf_dtype) if k == "pixel_values" else v.to(self.ctx.device))
                for k, v in inputs.items()}

    def generate_kwargs(self, **settings: Any) -> dict[str, Any]:
        from blip2core.inference.generation import GenerationSettings

        return GenerationSettings(**settings).generate_kwargs(self.stops, self.pad)

    @torch.inference_mode()
    def hf_texts(self, image: Any, text: str | None, **settings: Any) -> list[str]:
        inputs = self.hf_inputs(image, text)
        out = self.hf.generate(**inputs, **self.generate_kwargs(**settings))
        prompt_length = inputs["input_ids"].shape[1] if "input_ids" in inputs else 0
        new = out[:, prompt_length:]
        return [t.strip() for t in self.processor.tokenizer.batch_decode(new, skip_special_tokens=True)]


def _same_texts(ours: list[str], theirs: list[str]) -> str:
    same = sum(a == b for a, b in zip(ours, theirs, strict=True))
    return f"same text {same}/{len(ours)}"


def encode_rows(ctx: Context, sides: Sides, label: str, peak_flops: float | None) -> list[Row]:
    """Image encoding (ViT + Q-Former + projection) on preprocessed pixels at batch 1 and 8."""
    from torch.utils.flop_counter import FlopCounterMode

    rows = []
    photos = (ctx.photos * 2)[:8]
    pixels = sides.ours.preprocessor(photos).to(ctx.device).clone()  # [8, 3, S, S], a normal tensor, not an inference one
    counter = FlopCounterMode(display=False)
    with counter:  # with autograd on: FlopCounterMode's module hooks fail under no_grad / inference_mode
        sides.ours.encode_images(pixels[:1])
    flops_per_image = counter.get_total_flops()  # every image is encoded alone: the FLOPs are linear in the batch
    with torch.inference_mode():
        for _ in range(ctx.warm_up_rounds):  # --quick: both sides once at batch 1, as they are timed
            sides.ours.encode_images(pixels[:1])  # (the FLOP-counted call ran with autograd on)
            sides.hf.get_image_features(pixels[:1].to(sides.hf_dtype))
    for batch in (1, 8):
        ours_pixels = pixels[:batch]
        hf_pixels = ours_pixels.to(sides.hf_dtype)
        flops = flops_per_image * batch
        with torch.inference_mode():
            timing = interleaved({"ours": lambda: sides.ours.encode_images(ours_pixels),
                                  "theirs": lambda: sides.hf.get_image_features(hf_pixels)},
                                 ctx.rounds, **ctx.timing_options())
        theirs = timing["theirs"].output.pooler_output.float()
        ours = timing["ours"].output.llm_inputs.float()
        ours_rate, theirs_rate = batch / timing["ours"].median, batch / timing["theirs"].median
        note = f"{flops / 1e9:.3g} GFLOP per batch"
        if peak_flops:
            achieved = flops / timing["ours"].median
            note += (f"; ours {achieved / 1e9:.3g} GFLOP/s = {100 * achieved / peak_flops:.0f}% of the measured "
                     f"matmul peak, theirs {100 * flops / timing['theirs'].median / peak_flops:.0f}%")
        rows.append(Row(f"image encoding, batch {batch} ({label})", ours_rate, theirs_rate, "img/s",
                        f"max|diff| {(ours - theirs).abs().max().item():.1e}", note, target=">= 1.0x"))
    return rows


def caption_rows(ctx: Context, sides: Sides, label: str, beams: tuple[int, ...] = (1, 5)) -> list[Row]:
    """One caption of one photo, from the PIL image: greedy and beam 5, 30 new tokens."""
    rows = []
    image = ctx.photos[0]
    for num_beams in beams:
        settings = dict(num_beams=num_beams, max_new_tokens=30, min_new_tokens=30)
        timing = interleaved({"ours": lambda: sides.ours.caption(image, **settings),
                              "theirs": lambda: sides.hf_texts(image, None, **settings)},
                             ctx.rounds, **ctx.timing_options())
        name = "greedy" if num_beams == 1 else f"beam {num_beams}"
        rows.append(Row(f"caption {name}, 30 tokens ({label})", timing["ours"].median, timing["theirs"].median, "s",
                        _same_texts(timing["ours"].output, timing["theirs"].output),
                        target=">= 1.2x" if num_beams == 1 else ""))
    return rows


def vqa_rows(ctx: Context, sides: Sides, label: str) -> list[Row]:
    """8 questions about one photo, BLIP-2's VQA decoding (beam 5, length_penalty 0), 10 new tokens.

    transformers: Blip2Processor + one ``generate`` per question (its users' loop); blip2core:
    ``pipe.answer(image, questions)`` (image encoded once, the LLM's cache of its prefix reused)."""
    image = ctx.photos[1]
    settings = dict(num_beams=5, max_new_tokens=10, min_new_tokens=10, length_penalty=0.0)

    def theirs() -> list[str]:
        return [sides.hf_texts(image, VQA_TEMPLATE.format(q), **settings)[0] for q in QUESTIONS]

    def ours() -> list[str]:
        return sides.ours.answer(image, QUESTIONS, **settings)

    timing = interleaved({"ours": ours, "theirs": theirs}, ctx.rounds, **ctx.timing_options())
    agreement = _same_texts(timing["ours"].output, timing["theirs"].output)
    return [Row(f"VQA, {len(QUESTIONS)} questions about one image, beam 5 ({label})", timing["ours"].median,
                timing["theirs"].median, "s", agreement, "theirs: one generate per question", target=">= 2.5x")]


def equal_dtype_rows(ctx: Context, peak_flops: float | None, only: set[str]) -> list[Row]:
    """Encoding, captions and VQA with both libraries in ``ctx.dtype``."""
    sides = Sides(ctx, ctx.dtype)
    label = sides.dtype_label()
    rows: list[Row] = []
    if "encode" in only:
        rows += encode_rows(ctx, sides, label, peak_flops)
    if "caption" in only:
        rows += caption_rows(ctx, sides, label)
    if "vqa" in only:
        rows += vqa_rows(ctx, sides, label)
    return rows


def default_dtype_rows(ctx: Context, peak: Callable[[], float]) -> list[Row]:
    """Encoding and a greedy caption with each library's default dtype (what a user gets). With
    ``--quick``, where both defaults are ``ctx.dtype`` (the equal-dtype rows measure that), one row says so."""
    sides = Sides(ctx, None, warm=False)
    label = f"default dtype: {sides.dtype_label()}"
    if ctx.quick and sides.dtype_label() == ctx.dtype:
        return [Row(f"default dtype = {ctx.dtype} on both sides", float("nan"), None, "",
                    note="not measured again with --quick: the equal-dtype rows above are these")]
    for _ in range(ctx.warm_up_rounds):
        sides.warm_up()
    return encode_rows(ctx, sides, label, peak())[1:] + caption_rows(ctx, sides, label, beams=(1,))


def _hf_int8_config() -> Any:
    """transformers' torchao int8 weight-only config for the language model only (None if unavailable)."""
    try:
        from torchao.quantization import Int8WeightOnlyConfig
        from transformers import TorchAoConfig

        return TorchAoConfig(Int8WeightOnlyConfig(),
                             modules_to_not_convert=["vision_model", "qformer", "language_projection", "lm_head"])
    except Exception:  # noqa: BLE001 - an optional comparison: reported, not raised
        return None


def quantized_rows(ctx: Context) -> list[Row]:
    """Greedy caption with the LLM's linear layers int8 weight-only: ours (``quantize llm=int8-weight-only``)
    against transformers' torchao int8 weight-only on its language model (fp32 transformers if that fails)."""
    note = "theirs: TorchAoConfig(Int8WeightOnlyConfig()) on the language model"
    config = _hf_int8_config()
    try:
        sides = Sides(ctx, "float32", quantize={"llm": "int8-weight-only"}, hf_quantization=config)
    except Exception as error:  # noqa: BLE001 - transformers' side may not support it: compare with its fp32
        note = f"theirs: float32 (transformers + torchao int8 failed: {type(error).__name__}: {str(error)[:80]})"
        sides = Sides(ctx, "float32", quantize={"llm": "int8-weight-only"})
    rows = caption_rows(ctx, sides, "LLM int8 weight-only", beams=(1,))
    for row in rows:
        row.note, row.target = note, ""
    return rows
