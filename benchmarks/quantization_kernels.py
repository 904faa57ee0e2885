"""Which int8 kernel is fast on this CPU: the ViT-B MLP block (768 -> 3072 -> 768, GELU) at
8 x 197 tokens (``--tokens``), float32 vs torchao int8 dynamic, torchao int8 weight-only and
torch.ao dynamic (``quantize_dynamic`` with each quantized engine of ``--engines``).

    nice -n 19 .venv/bin/python benchmarks/quantization_kernels.py [--tokens 197,1576] [--engines x86,fbgemm]
    .venv/bin/python benchmarks/quantization_kernels.py --int8-head [--tokens 1,2,4,8,40]

``--int8-head``: instead, a vocabulary head (SmolLM2's 49,152 x 576, as int8 codes + one scale per
row, blip2-quant's ``Int8Rows``) at a few rows (decoding): float32, the codes cast to float then a
float matmul, and torch's int8 weight-only kernel (``torch._weight_int8pack_mm``), which
``Int8Rows.matmul`` uses for up to ``INT8PACK_MAX_ROWS`` rows.

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
    parser.add_argument("--tokens", default="1576", help="comma-separated token counts (rows of the input)")
    parser.add_argument("--engines", default="x86", help="comma-separated torch.ao quantized engines")
    parser.add_argument("--int8-head", action="store_true", help="the int8 vocabulary-head kernels instead")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    if args.int8_head:
        int8_head(args.tokens, args.repeats)
        return
    from torchao.quantization import Int8DynamicActivationInt8WeightConfig, Int8WeightOnlyConfig, quantize_

    torch.manual_seed(0)
    base = nn.Sequential(nn.Linear(768, 3072), nn.GELU(), nn.Linear(3072, 768)).eval()
    torchao_variants: dict[str, nn.Module] = {}
    for name, config in (("torchao int8 dynamic", Int8DynamicActivationInt8WeightConfig()),
                         ("torchao int8 weight-only", Int8WeightOnlyConfig())):
        torchao_variants[name] = copy.deepcopy(base)
        quantize_(torchao_variants[name], config)
    print(f"threads {torch.get_num_threads()}")
    print("| tokens | variant | ms | time vs fp32 | cosine |\n|---|---|---|---|---|")
    for tokens in (int(t) for t in args.tokens.split(",")):
        x = torch.randn(tokens, 768)
        for engine in args.engines.split(","):
            torch.backends.quantized.engine = engine  # the packing and the kernels follow the engine
            variants = {"float32": base, **torchao_variants, f"torch.ao quantize_dynamic qint8 ({engine})":
                        torch.ao.quantization.quantize_dynamic(copy.deepcopy(base), {nn.Linear}, dtype=torch.qint8)}
            with torch.no_grad():
                outputs = {name: module(x) for name, module in variants.items()}
                seconds = median_seconds({name: (lambda m=module: m(x)) for name, module in variants.items()},
                                         args.repeats)
            for name in variants:
                cos = nn.functional.cosine_similarity(outputs[name].flatten(), outputs["float32"].flatten(), dim=0)
                print(f"| {tokens} | {name} | {1000 * seconds[name]:.1f} | {seconds[name] / seconds['float32']:.2f} "
                      f"| {cos.item():.5f} |")


def int8_head(tokens: str, repeats: int, rows: int = 49152, width: int = 576) -> None:
    torch.manual_seed(0)
    weight = torch.randn(rows, width) * 0.02
    scale = weight.abs().amax(dim=1) / 127
    codes = (weight / scale[:, None]).round().clamp(-127, 127).to(torch.int8)
    print(f"threads {torch.get_num_threads()}; head {rows} x {width}")
    print("| rows | float32 ms | int8 cast + matmul ms | int8pack ms | fastest int8 |\n|---|---|---|---|---|")
    for count in (int(t) for t in tokens.split(",")):
        x = torch.randn(count, width)
        with torch.no_grad():
            seconds = median_seconds({
                "float32": lambda: nn.functional.linear(x, weight),
                "cast": lambda: nn.functional.linear(x, codes.to(x.dtype)) * scale,
                "int8pack": lambda: torch._weight_int8pack_mm(x, codes, scale),
            }, repeats)
        fastest = min(("cast", "int8pack"), key=seconds.get)
        print(f"| {count} | {1000 * seconds['float32']:.1f} | {1000 * seconds['cast']:.1f} | "
              f"{1000 * seconds['int8pack']:.1f} | {fastest} |")


if __name__ == "__main__":
    main()
