"""Training-step throughput of ``blip2 train`` and its model FLOPs utilisation (MFU).

For each stage (1: ITC + ITM + ITG through the Q-Former; 2: LM loss through the frozen LLM) and
precision (fp32, bf16 autocast) this runs the real trainer (``blip2_runner.trainer.Trainer``) on
easy-vqa for warm-up + measured steps and reads the per-step throughput from its metrics.jsonl.
FLOPs of one training step (frozen forwards + trainable forward/backward, including the backward
through the frozen LLM that stage 2 needs) are counted with ``torch.utils.flop_counter`` on a
real batch. The peak is measured in the same run on the same machine: the best of several large
square matmuls (``torch.mm``) in each precision. MFU = counted FLOPs / step time / peak.

    .venv/bin/python benchmarks/train_throughput.py                  # preset "small", fp32 + bf16
    .venv/bin/python benchmarks/train_throughput.py --preset tiny --steps 5
    .venv/bin/python benchmarks/train_throughput.py --device cuda --preset base --batch-size 32
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

PRESETS = {
    # image px, patch, ViT width, ViT layers, Q-Former width, layers, queries, LLM width, LLM layers
    "tiny": dict(image_size=32, patch_size=8, vision_width=32, vision_layers=2, qformer_hidden=32,
                 qformer_layers=2, num_query_tokens=8, llm_hidden=32, llm_layers=2),
    "small": dict(image_size=224, patch_size=14, vision_width=256, vision_layers=4, qformer_hidden=256,
                  qformer_layers=4, num_query_tokens=32, llm_hidden=256, llm_layers=4),
    "base": dict(image_size=224, patch_size=14, vision_width=768, vision_layers=12, qformer_hidden=768,
                 qformer_layers=12, num_query_tokens=32, llm_hidden=768, llm_layers=12),
}


def matmul_peak(dtype: torch.dtype, device: str, max_size: int, repeats: int = 3) -> tuple[float, int]:
    """Best FLOP/s of square matmuls (2 n^3 FLOPs) in dtype over n = 256, 512, ... up to max_size.

    Larger sizes are skipped once one matmul takes over a second (a CPU without bf16 matrix units
    runs bf16 matmuls in a slow fallback). Returns (FLOP/s, the n that reached it).
    """
    def sync() -> None:
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    best_rate, best_n, n = 0.0, 0, 256
    while n <= max_size:
        a = torch.randn(n, n, device=device).to(dtype)
        b = torch.randn(n, n, device=device).to(dtype)
        torch.mm(a, b)
        sync()
        fastest = float("inf")
        for _ in range(repeats):
            start = time.perf_counter()
            torch.mm(a, b)
            sync()
            fastest = min(fastest, time.perf_counter() - start)
        if 2 * n**3 / fastest > best_rate:
            best_rate, best_n = 2 * n**3 / fastest, n
        if fastest > 1.0:
            break
        n *= 2
    return best_rate, best_n


def run_config(folder: Path, stage: int, precision: str, preset: str, steps: int, batch_size: int, device: str) -> dict:
    from blip2_runner.testing import tiny_run_config, tiny_pipeline_spec

    task = "pretrain-stage1" if stage == 1 else "pretrain-stage2"
    config = tiny_run_config(folder, task=task, steps=steps, batch_size=batch_size, train_limit=max(256, batch_size * steps))
    config["pipeline"] = tiny_pipeline_spec(folder, device=device, with_text_heads=(stage == 1), **PRESETS[preset])
    config["training"].update(precision=precision, progress=False)
    config["tasks"][0]["eval"] = None
    config["output_dir"] = str(folder / f"stage{stage}-{precision}")
    return config


def count_step_flops(trainer) -> int:
    """FLOPs of one training micro-step: build a batch, losses forward, backward."""
    from torch.utils.flop_counter import FlopCounterMode

    from blip2_runner.losses import BatchContext

    runtime = trainer.tasks[0]
    size = trainer.run.training.batch_size
    indices = runtime.order.indices(0, size)
    batch = trainer.build_batch(runtime, list(range(size)), indices, BatchContext(global_size=size))
    use_bf16 = trainer.run.training.precision == "bf16"
    device_type = torch.device(trainer.pipeline.device).type
    counter = FlopCounterMode(display=False)
    with counter:
        with torch.autocast(device_type, dtype=torch.bfloat16, enabled=use_bf16):
            total = sum(runtime.loss_weights[n] * fn(trainer.pipeline, batch) for n, fn in runtime.losses.items())
        total.backward()
    trainer.pipeline.zero_grad(set_to_none=True)
    return int(counter.get_total_flops())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), default="small")
    parser.add_argument("--stages", default="1,2")
    parser.add_argument("--precisions", default="fp32,bf16")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--steps", type=int, default=6, help="measured steps (after --warmup)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--matmul-size", type=int, default=4096, help="largest square matmul for the peak")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args(argv)

    from blip2_runner.tracking import read_metrics
    from blip2_runner.trainer import Trainer

    dtypes = {"fp32": torch.float32, "bf16": torch.bfloat16}
    precisions = [p for p in args.precisions.split(",") if p]
    measured = {p: matmul_peak(dtypes[p], args.device, args.matmul_size) for p in precisions}
    peaks = {p: rate for p, (rate, _) in measured.items()}
    print(f"device {args.device}, torch {torch.__version__}, threads {torch.get_num_threads()}, preset {args.preset} "
          f"{PRESETS[args.preset]}, batch {args.batch_size}")
    load = ""
    try:
        import os

        load = f", load average {os.getloadavg()[0]:.1f}"
    except OSError:
        pass
    print(f"matmul peak (measured now{load}): "
          + ", ".join(f"{p} {peaks[p] / 1e9:.1f} GFLOP/s (n={measured[p][1]})" for p in precisions))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for stage in [int(s) for s in args.stages.split(",") if s]:
            for precision in precisions:
                config = run_config(folder, stage, precision, args.preset, args.warmup + args.steps,
                                    args.batch_size, args.device)
                trainer = Trainer(config, log=lambda message: None)
                flops = count_step_flops(trainer)
                trainer.train(resume=False)
                records = [r for r in read_metrics(config["output_dir"]) if r.get("kind") == "train"]
                rates = [r["samples_per_s"] for r in records[args.warmup:] if r.get("samples_per_s")]
                samples_per_s = statistics.median(rates)
                step_s = args.batch_size / samples_per_s
                achieved = flops / step_s
                row = {"stage": stage, "precision": precision, "samples_per_s": samples_per_s, "step_s": step_s,
                       "gflop_per_step": flops / 1e9, "achieved_gflops": achieved / 1e9,
                       "peak_gflops": peaks[precision] / 1e9, "mfu": achieved / peaks[precision],
                       "trainable_params": sum(p.numel() for p in trainer.pipeline.bridge.parameters())}
                rows.append(row)
                print(f"stage {stage} {precision}: {samples_per_s:7.2f} samples/s, {step_s:6.3f} s/step, "
                      f"{flops / 1e9:8.2f} GFLOP/step, {achieved / 1e9:7.1f} GFLOP/s, MFU {100 * row['mfu']:5.1f}% "
                      f"(of the {precision} matmul peak)", flush=True)
    if args.json:
        args.json.write_text(json.dumps({"peaks_gflops": {p: v / 1e9 for p, v in peaks.items()}, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
