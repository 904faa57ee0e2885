"""Which int8 kernel is fast on this CPU: the ViT-B MLP block (768 -> 3072 -> 768, GELU) at
8 x 197 tokens, float32 vs torchao int8 dynamic, torchao int8 weight-only and torch.ao dynamic.

    nice -n 19 .venv/bin/python benchmarks/quantization_kernels.py

This is the measurement behind blip2-quant's choice of torch.ao (not torchao) for int8-dynamic on
CPU. Prints the median of ``--repeats`` calls per variant (the variants alternating), its ratio to
float32 and the output cosine.
"""

from __future__ import annotations

import argparse
import copy
import sys
import warnings
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # also run as a script: benchmarks.* importable
from benchmarks.timing import median_seconds  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    from torchao.quantization import Int8DynamicActivationInt8WeightConfig, Int8WeightOnlyConfig, quantize_

    torch.manual_seed(0)
    base = nn.Sequential(nn.Linear(768, 3072), nn.GELU(), nn.Linear(3072, 768)).eval()
    x = torch.randn(8, 197, 768)
    variants: dict[str, nn.Module] = {"float32": base}
    for name, config in (("torchao int8 dynamic", Int8DynamicActivationInt8WeightConfig()),
                         ("torchao int8 weight-only", Int8WeightOnlyConfig())):
        variants[name] = copy.deepcopy(base)
        quantize_(variants[name], config)
    variants["torch.ao quantize_dynamic qint8"] = torch.ao.quantization.quantize_dynamic(
        copy.deepcopy(base), {nn.Linear}, dtype=torch.qint8)
    with torch.no_grad():
        outputs = {name: module(x) for name, module in variants.items()}
        seconds = median_seconds({name: (lambda m=module: m(x)) for name, module in variants.items()}, args.repeats)
    print(f"threads {torch.get_num_threads()}, quantized engine {torch.backends.quantized.engine}")
    print("| variant | ms | time vs fp32 | cosine |\n|---|---|---|---|")
    for name in variants:
        cos = nn.functional.cosine_similarity(outputs[name].flatten(), outputs["float32"].flatten(), dim=0).item()
        print(f"| {name} | {1000 * seconds[name]:.1f} | {seconds[name] / seconds['float32']:.2f} | {cos:.5f} |")


if __name__ == "__main__":
    main()
