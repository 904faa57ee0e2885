"""Which int8 kernel is fast on this CPU: the ViT-B MLP block (768 -> 3072 -> 768, GELU) at
8 x 197 tokens, float32 vs torchao int8 dynamic, torchao int8 weight-only and torch.ao dynamic.

    nice -n 19 .venv/bin/python benchmarks/quantization_kernels.py

This is the measurement behind blip2-quant's choice of torch.ao (not torchao) for int8-dynamic on
CPU. Prints the best of ``--repeats`` calls per variant, its ratio to float32 and the output cosine.
"""

from __future__ import annotations

import argparse
import copy
import time
import warnings

import torch
from torch import nn


def best_ms(module: nn.Module, x: torch.Tensor, repeats: int) -> tuple[float, torch.Tensor]:
    with torch.no_grad():
        y = module(x)
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            y = module(x)
            times.append(time.perf_counter() - start)
    return min(times) * 1000, y


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    from torchao.quantization import Int8DynamicActivationInt8WeightConfig, Int8WeightOnlyConfig, quantize_

    torch.manual_seed(0)
    base = nn.Sequential(nn.Linear(768, 3072), nn.GELU(), nn.Linear(3072, 768)).eval()
    x = torch.randn(8, 197, 768)
    fp32_ms, reference = best_ms(base, x, args.repeats)
    variants: dict[str, nn.Module] = {}
    for name, config in (("torchao int8 dynamic", Int8DynamicActivationInt8WeightConfig()),
                         ("torchao int8 weight-only", Int8WeightOnlyConfig())):
        variants[name] = copy.deepcopy(base)
        quantize_(variants[name], config)
    variants["torch.ao quantize_dynamic qint8"] = torch.ao.quantization.quantize_dynamic(
        copy.deepcopy(base), {nn.Linear}, dtype=torch.qint8)
    print(f"threads {torch.get_num_threads()}, quantized engine {torch.backends.quantized.engine}")
    print(f"| variant | ms | time vs fp32 | cosine |\n|---|---|---|---|\n| float32 | {fp32_ms:.1f} | 1.00 | 1 |")
    for name, module in variants.items():
        ms, y = best_ms(module, x, args.repeats)
        cos = nn.functional.cosine_similarity(y.flatten(), reference.flatten(), dim=0).item()
        print(f"| {name} | {ms:.1f} | {ms / fp32_ms:.2f} | {cos:.5f} |")


if __name__ == "__main__":
    main()
