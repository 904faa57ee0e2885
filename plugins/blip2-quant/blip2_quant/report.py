"""What quantization did to a pipeline: bytes, load memory, latency and agreement.

``quantize_report(spec)`` loads the pipeline twice, quantized as the spec says and without any
``quantize`` entry (the reference), and compares them on the same inputs:

- per component: parameter bytes before / after (``blip2_quant.sizes.parameter_bytes``);
- peak process RSS while each pipeline loaded (sampled every 5 ms; the quantized one loads first,
  in a fresh process, so its figure is not flattered by memory the reference freed);
- image encoding latency (``encode_images`` on a batch of real photos) and greedy generation of
  ``new_tokens`` tokens (batch 1), each the median of ``runs`` timed calls after one warm-up;
- agreement: vision-token and query-output cosine, logits cosine, next-token top-1 agreement at
  every text position of real prompts (teacher forced), and the share of identical generated
  sequences.
"""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from blip2_quant.sizes import parameter_bytes

PROMPTS = (
    "Question: what is in the picture? Answer:",
    "A photo of",
    "The capital of France is",
    "Describe the image in one sentence:",
    "Once upon a time, in a small village by the sea, there lived",
    "The quick brown fox jumps over the lazy dog because",
    "Photosynthesis is the process by which plants",
    "Question: how many people are in the image? Answer:",
)


@dataclass
class ComponentBytes:
    """Parameter bytes of one component before and after quantization."""

    component: str
    method: str
    bytes_before: int
    bytes_after: int

    @property
    def ratio(self) -> float:
        return self.bytes_after / self.bytes_before if self.bytes_before else 1.0


@dataclass
class Report:
    """Everything ``blip2 quantize-report`` prints (``to_dict`` for ``--json``)."""

    source: str
    device: str
    dtype: str
    cpu_flags: list[str]
    components: list[ComponentBytes]
    peak_rss_mb: dict[str, float] = field(default_factory=dict)
    encode_ms: dict[str, float] = field(default_factory=dict)
    generate_ms: dict[str, float] = field(default_factory=dict)
    agreement: dict[str, float | None] = field(default_factory=dict)
    new_tokens: int = 20

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        for item, component in zip(data["components"], self.components, strict=True):
            item["ratio"] = round(component.ratio, 4)
        return data


class PeakRSS:
    """Context manager sampling this process's resident memory every ``interval`` seconds;
    ``peak`` is the highest value seen (bytes)."""

    def __init__(self, interval: float = 0.005) -> None:
        import psutil

        self._process = psutil.Process()
        self._interval = interval
        self._stop = threading.Event()
        self.peak = 0

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._process.memory_info().rss)
            self._stop.wait(self._interval)

    def __enter__(self) -> "PeakRSS":
        self.peak = self._process.memory_info().rss
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._process.memory_info().rss)


def median_ms(call: Callable[[], Any], runs: int) -> float:
    """Median wall time of ``runs`` calls (after one untimed warm-up), in milliseconds."""
    call()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        call()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    """Cosine similarity of two tensors flattened (float64)."""
    return torch.nn.functional.cosine_similarity(a.double().flatten(), b.double().flatten(), dim=0).item()


def sample_pixels(pipe: Any, count: int) -> torch.Tensor:
    """pixel_values [count, 3, S, S] of real photos (skimage), preprocessed for this pipeline."""
    from skimage import data

    photos = [data.astronaut(), data.chelsea(), data.coffee(), data.rocket(), data.camera(), data.immunohistochemistry()]
    images = [photo if photo.ndim == 3 else photo[..., None].repeat(3, axis=2) for photo in photos]
    images = (images * (count // len(images) + 1))[:count]
    if pipe.preprocessor is not None:
        return pipe.preprocessor(images)
    size = pipe.vision.preprocess_config.image_size
    return torch.randn(count, 3, size, size, generator=torch.Generator().manual_seed(0))


def prompt_ids(pipe: Any, prompts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """input_ids, attention_mask [P, T] of the prompts (random ids when the LLM has no tokenizer)."""
    tokenizer = pipe.llm.tokenizer
    if tokenizer is None:
        generator = torch.Generator().manual_seed(0)
        vocab = pipe.llm.vocab_size if hasattr(pipe.llm, "vocab_size") else 100
        ids = torch.randint(0, vocab, (len(prompts), 8), generator=generator)
        return ids, torch.ones_like(ids)
    encoded = tokenizer(list(prompts), padding=True, return_tensors="pt")
    return encoded.input_ids, encoded.attention_mask


@torch.no_grad()
def agreement(reference: Any, quantized: Any, pixels: torch.Tensor, new_tokens: int) -> dict[str, float | None]:
    """Feature / logits cosine, next-token top-1 agreement and identical generations (see module doc)."""
    ref_enc, q_enc = reference.encode_images(pixels), quantized.encode_images(pixels)
    result: dict[str, float | None] = {
        "vision_tokens_cosine": cosine(ref_enc.vision_tokens, q_enc.vision_tokens),
        "query_output_cosine": cosine(ref_enc.query_output, q_enc.query_output),
        "logits_cosine": None,
        "next_token_top1": None,
        "text_only_next_token_top1": None,
        "identical_generations": None,
    }
    if reference.llm is None:
        return result
    ids, mask = prompt_ids(reference, PROMPTS)
    image = pixels[:1].expand(len(PROMPTS), -1, -1, -1)
    ref_logits = reference(image, ids, mask).logits.float()
    q_logits = quantized(image, ids, mask).logits.float()
    text = slice(ref_logits.shape[1] - ids.shape[1], None)  # the text positions (after the soft prompt)
    valid = mask.bool()
    result["logits_cosine"] = cosine(ref_logits[:, text][valid], q_logits[:, text][valid])
    same = ref_logits[:, text].argmax(-1) == q_logits[:, text].argmax(-1)
    result["next_token_top1"] = same[valid].float().mean().item()
    # the LLM alone on the text (no image prefix): what its quantization changes by itself
    ref_text = reference.llm(inputs_embeds=reference.llm.embed_tokens(ids), attention_mask=mask).logits
    q_text = quantized.llm(inputs_embeds=quantized.llm.embed_tokens(ids), attention_mask=mask).logits
    result["text_only_next_token_top1"] = (ref_text.argmax(-1) == q_text.argmax(-1))[valid].float().mean().item()
    settings = {"max_new_tokens": new_tokens, "min_new_tokens": new_tokens, "do_sample": False, "num_beams": 1}
    ref_gen = reference.generate(image, ids, mask, **settings)
    q_gen = quantized.generate(image, ids, mask, **settings)
    result["identical_generations"] = (ref_gen == q_gen).all(dim=1).float().mean().item()
    return result


@torch.no_grad()
def latencies(pipe: Any, pixels: torch.Tensor, new_tokens: int, runs: int) -> tuple[float, float | None]:
    """(image encoding ms for the batch, greedy generation of new_tokens ms at batch 1, or None)."""
    encode = median_ms(lambda: pipe.encode_images(pixels), runs)
    if pipe.llm is None:
        return encode, None
    ids, mask = prompt_ids(pipe, PROMPTS[:1])
    settings = {"max_new_tokens": new_tokens, "min_new_tokens": new_tokens, "do_sample": False, "num_beams": 1}
    generate = median_ms(lambda: pipe.generate(pixels[:1], ids, mask, **settings), runs)
    return encode, generate


def quantize_report(
    spec: Any, *, source: str = "", batch_size: int = 4, new_tokens: int = 20, runs: int = 3, registry: Any = None,
    seed: int = 0,
) -> Report:
    """Load ``spec`` (a PipelineSpec with its quantize entries) quantized and unquantized, and
    measure both (see module doc). torch is seeded with ``seed`` before each load, so components
    built with random weights get the same ones in both pipelines."""
    from blip2core import load_pipeline
    from blip2core.plugin_api import cpu_flags

    kwargs = {"registry": registry} if registry is not None else {}
    torch.manual_seed(seed)  # components without pretrained weights: the same random weights in both
    with PeakRSS() as quantized_rss:
        quantized = load_pipeline(spec, **kwargs)
    reference_spec = spec.model_copy(update={"quantize": {}})
    reference_spec._base_dir = spec._base_dir
    torch.manual_seed(seed)
    with PeakRSS() as reference_rss:
        reference = load_pipeline(reference_spec, **kwargs)
    components = []
    for target in ("vision", "bridge", "llm"):
        ref_part, q_part = getattr(reference, target), getattr(quantized, target)
        if ref_part is None:
            continue
        method = spec.quantize[target].name if target in spec.quantize else "none"
        components.append(ComponentBytes(target, method, parameter_bytes(ref_part), parameter_bytes(q_part)))
    pixels = sample_pixels(reference, batch_size)
    report = Report(
        source=source,
        device=quantized.spec.device,
        dtype=quantized.spec.dtype,
        cpu_flags=sorted(f for f in cpu_flags() if f.startswith(("avx", "amx"))),
        components=components,
        peak_rss_mb={"quantized": quantized_rss.peak / 2**20, "reference": reference_rss.peak / 2**20},
        new_tokens=new_tokens,
    )
    report.agreement = agreement(reference, quantized, pixels, new_tokens)
    for name, pipe in (("reference", reference), ("quantized", quantized)):
        encode, generate = latencies(pipe, pixels, new_tokens, runs)
        report.encode_ms[name] = encode
        if generate is not None:
            report.generate_ms[name] = generate
    return report


def format_report(report: Report) -> str:
    """The report as aligned text tables."""
    lines = [f"{report.source}: device {report.device}, dtype {report.dtype}, cpu flags {' '.join(report.cpu_flags)}"]
    rows = [("COMPONENT", "METHOD", "BYTES BEFORE", "BYTES AFTER", "RATIO")]
    for c in report.components:
        rows.append((c.component, c.method, f"{c.bytes_before:,}", f"{c.bytes_after:,}", f"{c.ratio:.3f}"))
    lines += _table(rows)
    rows = [("MEASURE", "REFERENCE", "QUANTIZED", "RATIO")]
    for label, values in (("peak RSS at load (MB)", report.peak_rss_mb), ("image encoding (ms)", report.encode_ms),
                          (f"generate {report.new_tokens} tokens (ms)", report.generate_ms)):
        if values:
            ref, q = values["reference"], values["quantized"]
            rows.append((label, f"{ref:.1f}", f"{q:.1f}", f"{q / ref:.3f}"))
    lines += ["", *_table(rows), ""]
    rows = [("AGREEMENT", "VALUE")]
    rows += [(name, "n/a" if value is None else f"{value:.5f}") for name, value in report.agreement.items()]
    lines += _table(rows)
    return "\n".join(lines)


def _table(rows: list[tuple[str, ...]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows]
