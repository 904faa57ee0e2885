"""Quantization: bytes, agreement and speed of each method, on real weights where they exist.

    HF_HUB_OFFLINE=1 nice -n 19 .venv/bin/python benchmarks/quantization.py [--part llm|vision|auto|all]

- llm: the real SmolLM2-135M-Instruct (``smollm2-135m-instruct``, plugin blip2-llama), float32 vs each
  method: parameter bytes, logits cosine and next-token top-1 agreement at every position of real
  English text (teacher forced), forward latency on that batch and 20-token greedy generation.
- vision: image encoding throughput, float32 vs int8-dynamic, with feature cosine: the real
  EfficientNet-Lite0 (``efficientnet-lite0``) and a ViT at BLIP-2's EVA ViT-g widths (1408 wide, 16
  heads, MLP 6144, patch 14, 224 px; 4 blocks instead of 39 to keep the run short; random weights).
- auto: ``dtype: auto`` against float32 on this machine (image encoding and LLM forward).
- load-memory: peak RSS while a pipeline loads the real SmolLM2-135M-Instruct saved in bfloat16 into a
  float32 pipeline and quantizes it, quantized while loading (one layer cast at a time) against the
  old order (the whole LLM cast to float32 first), each in a fresh process after a warm-up load.

Timings alternate between the variants compared (A B A B ...) and report medians, so a machine
shared with other work still gives fair ratios within one run. CPU flags (lscpu) come first.
"""

from __future__ import annotations

import argparse
import copy
import json
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # also run as a script: benchmarks.* importable

from benchmarks.machine import cpu_summary  # noqa: E402
from benchmarks.timing import median_seconds  # noqa: E402

from blip2core.plugins import get_registry  # noqa: E402
from blip2core.precision import resolve_dtype  # noqa: E402
from blip2_quant import parameter_bytes  # noqa: E402

#: real English text (public domain: Dickens, Melville, Austen, the Gettysburg Address, Darwin) and questions
TEXTS = [
    "It was the best of times, it was the worst of times, it was the age of wisdom, it was the age of foolishness.",
    "Call me Ishmael. Some years ago, never mind how long precisely, having little or no money in my purse, I "
    "thought I would sail about a little and see the watery part of the world.",
    "It is a truth universally acknowledged, that a single man in possession of a good fortune, must be in want "
    "of a wife.",
    "Four score and seven years ago our fathers brought forth on this continent, a new nation, conceived in "
    "Liberty, and dedicated to the proposition that all men are created equal.",
    "When on board H.M.S. Beagle, as naturalist, I was much struck with certain facts in the distribution of the "
    "organic beings inhabiting South America.",
    "The capital of France is Paris, and the capital of Italy is Rome.",
    "Question: what colour is the cat sitting on the sofa? Answer:",
    "Water boils at one hundred degrees Celsius at sea level, and freezes at zero degrees.",
]
METHODS_LLM = [  # {}: the method's default (the weight-only methods pack an LLM's embedding table and tied head)
    ("int8-weight-only", {"include_embeddings": False}),
    ("int8-weight-only", {}),
    ("int8-dynamic", {}),
    ("int4-weight-only", {"include_embeddings": False}),
    ("int4-weight-only", {}),
]
EVA_WIDTHS = {"patch_size": 14, "embed_dim": 1408, "depth": 4, "num_heads": 16, "mlp_ratio": 6144 / 1408}


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return torch.nn.functional.cosine_similarity(a.double().flatten(), b.double().flatten(), dim=0).item()


def quantized(component: torch.nn.Module, method: str, options: dict) -> torch.nn.Module:
    registry = get_registry()
    return registry.get("quantizer", method).build(options).quantize(copy.deepcopy(component))


@torch.no_grad()
def llm_part(rounds: int) -> None:
    registry = get_registry()
    reference = registry.get("language_model", "smollm2-135m-instruct").build({}).eval()
    tokenizer = reference.tokenizer
    batch = tokenizer(TEXTS, padding=True, return_tensors="pt")
    ids, mask = batch.input_ids, batch.attention_mask
    valid = mask.bool()
    prompt = tokenizer(["The capital of France is"], return_tensors="pt")

    def forward(llm):
        return llm(inputs_embeds=llm.embed_tokens(ids), attention_mask=mask).logits

    def generate(llm):
        return llm.generate(llm.embed_tokens(prompt.input_ids), prompt.attention_mask, max_new_tokens=20,
                            min_new_tokens=20, do_sample=False, num_beams=1)

    ref_logits = forward(reference)
    ref_gen = generate(reference)
    base_bytes = parameter_bytes(reference)
    print(f"\nSmolLM2-135M-Instruct (real weights), float32 {base_bytes / 2**20:.1f} MiB; "
          f"{int(valid.sum())} text positions in {len(TEXTS)} prompts; 20-token greedy generation at batch 1")
    print("| method | options | bytes ratio | logits cosine | next-token top-1 | same 20 tokens | forward | generate |")
    print("|---|---|---|---|---|---|---|---|")
    for method, options in METHODS_LLM:
        llm = quantized(reference, method, options)
        logits = forward(llm)
        top1 = (logits.argmax(-1) == ref_logits.argmax(-1))[valid].float().mean().item()
        same = bool((generate(llm) == ref_gen).all())
        speed = median_seconds({"fp32": lambda: forward(reference), "q": lambda: forward(llm)}, rounds)
        gen_speed = median_seconds({"fp32": lambda: generate(reference), "q": lambda: generate(llm)}, max(1, rounds // 2))
        print(f"| {method} | {options or '-'} | {parameter_bytes(llm) / base_bytes:.3f} | "
              f"{cosine(logits[valid], ref_logits[valid]):.5f} | {top1:.4f} | {same} | "
              f"{speed['q'] / speed['fp32']:.2f}x time | {gen_speed['q'] / gen_speed['fp32']:.2f}x time |")
        del llm
    print(f"greedy continuation (float32): {tokenizer.decode(ref_gen[0])!r}")


@torch.no_grad()
def vision_part(rounds: int, batch: int) -> None:
    registry = get_registry()
    encoders = {
        "EfficientNet-Lite0 (real weights)": registry.get("vision_encoder", "efficientnet-lite0").build({}),
        "ViT at EVA ViT-g widths, 4 blocks (random)": registry.get("vision_encoder", "timm").build(
            {"model_name": "vit_base_patch16_224", "image_size": 224, "model_kwargs": EVA_WIDTHS}),
    }
    pixels = torch.randn(batch, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    print(f"\nImage encoding, batch {batch} at 224 px, float32 vs int8-dynamic")
    print("| encoder | bytes ratio | feature cosine | fp32 img/s | int8-dynamic img/s | speed-up |")
    print("|---|---|---|---|---|---|")
    for name, encoder in encoders.items():
        encoder.eval()
        q = quantized(encoder, "int8-dynamic", {})
        speed = median_seconds({"fp32": lambda: encoder(pixels), "q": lambda: q(pixels)}, rounds)
        print(f"| {name} | {parameter_bytes(q) / parameter_bytes(encoder):.3f} | {cosine(q(pixels), encoder(pixels)):.5f} | "
              f"{batch / speed['fp32']:.2f} | {batch / speed['q']:.2f} | {speed['fp32'] / speed['q']:.2f}x |")


@torch.no_grad()
def auto_part(rounds: int) -> None:
    resolution = resolve_dtype("auto", "cpu")
    dtype = getattr(torch, resolution.dtype)
    registry = get_registry()
    vit = registry.get("vision_encoder", "timm").build(
        {"model_name": "vit_base_patch16_224", "image_size": 224, "model_kwargs": EVA_WIDTHS}).eval()
    auto_vit = copy.deepcopy(vit).to(dtype)
    pixels = torch.randn(2, 3, 224, 224)
    speed = median_seconds({"fp32": lambda: vit(pixels), "auto": lambda: auto_vit(pixels.to(dtype))}, rounds)
    print(f"\ndtype auto on this machine: {resolution.describe()}")
    print("| workload | float32 s | auto s | auto / float32 time |")
    print("|---|---|---|---|")
    print(f"| ViT (EVA widths, 4 blocks) batch 2 | {speed['fp32']:.3f} | {speed['auto']:.3f} | "
          f"{speed['auto'] / speed['fp32']:.2f} |")


def load_memory_child(spec: dict, method: str, stream: bool) -> dict:
    """In a fresh process: a small load first (imports, first calls), then ``spec`` quantized by
    ``method``, streamed or cast whole first; the growth of the peak RSS over the second load."""
    import blip2core.compose
    from benchmarks.memory import status_mib
    from blip2core import load_pipeline

    small = {**spec, "llm": {"name": "llama", "options": {"config": {
        "vocab_size": 320, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 2}}}}
    load_pipeline(small, quantize={"llm": method})
    start = status_mib("VmHWM")
    if not stream:  # the old order: the whole component cast to the pipeline's dtype, then quantized
        blip2core.compose.quantizes_while_loading = lambda quantizer: False
    pipe = load_pipeline(spec, quantize={"llm": method})
    return {"growth_mib": status_mib("VmHWM") - start, "llm_dtype": str(pipe.llm_dtype)}


def load_memory_part() -> None:
    """Peak RSS growth of loading + quantizing a bf16 SmolLM2 into a float32 pipeline, streamed vs whole."""
    reference = get_registry().get("language_model", "smollm2-135m-instruct").build({})
    float32_mib = sum(p.numel() for p in reference.parameters()) * 4 / 2**20
    with tempfile.TemporaryDirectory() as folder:
        reference.model.to(torch.bfloat16).save_pretrained(folder)
        reference.tokenizer.save_pretrained(folder)
        del reference
        spec = {
            "vision": {"name": "timm", "options": {"model_name": "vit_tiny_patch16_224", "image_size": 32,
                                                   "model_kwargs": {"patch_size": 8, "depth": 2}}},
            "bridge": {"name": "qformer", "options": {"num_query_tokens": 4, "hidden_size": 64, "num_hidden_layers": 2,
                                                      "num_attention_heads": 4, "intermediate_size": 128}},
            "llm": {"name": "llama", "options": {"path": folder}},
            "dtype": "float32",
        }
        print("\nquantizing while loading: SmolLM2-135M-Instruct saved in bfloat16, float32 pipeline "
              f"(the float32 LLM: {float32_mib:.0f} MiB); peak RSS growth of the load, fresh process each")
        print("| method | quantized while loading | cast whole, then quantized | ratio |")
        print("|---|---|---|---|")
        for method in ("int8-weight-only", "int4-weight-only"):
            growth = {}
            for mode in ("stream", "whole"):
                done = subprocess.run([sys.executable, __file__, "--load-memory-child", json.dumps(spec), method, mode],
                                      capture_output=True, text=True, check=True)
                growth[mode] = json.loads(done.stdout.strip().splitlines()[-1])["growth_mib"]
            print(f"| {method} | {growth['stream']:.0f} MiB | {growth['whole']:.0f} MiB | "
                  f"{growth['stream'] / growth['whole']:.2f}x |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=["llm", "vision", "auto", "load-memory", "all"], default="all")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--load-memory-child", nargs=3, metavar=("SPEC_JSON", "METHOD", "stream|whole"),
                        help=argparse.SUPPRESS)  # one measurement of --part load-memory, in its own process
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    if args.load_memory_child:
        spec, method, mode = args.load_memory_child
        print(json.dumps(load_memory_child(json.loads(spec), method, mode == "stream")))
        return
    print(f"CPU: {cpu_summary()}; torch {torch.__version__}, {torch.get_num_threads()} threads")
    if args.part in ("llm", "all"):
        llm_part(args.rounds)
    if args.part in ("vision", "all"):
        vision_part(args.rounds, args.batch)
    if args.part in ("auto", "all"):
        auto_part(args.rounds)
    if args.part in ("load-memory", "all"):
        load_memory_part()


if __name__ == "__main__":
    main()
