"""Training rows (ours only): samples/s of ``blip2 train``'s trainer and its MFU against the fp32
matmul peak measured in the same run (``train_throughput.py`` does the work)."""

from __future__ import annotations

import statistics
import tempfile
from pathlib import Path

from benchmarks.context import Context
from benchmarks.rows import Row
from benchmarks.train_throughput import count_step_flops, run_config


def training_rows(ctx: Context, peak_flops: float) -> list[Row]:
    """Stages 1 and 2 in ``ctx.dtype``'s precision (bfloat16: bf16 autocast), ``peak_flops`` measured in it."""
    from blip2_runner.tracking import read_metrics
    from blip2_runner.trainer import Trainer

    precision = "bf16" if ctx.dtype == "bfloat16" else "fp32"
    preset = "tiny" if ctx.scale_name == "tiny" else "small" if ctx.quick else "base"
    batch, warmup, steps = 8, 1, 2 if ctx.quick else 6
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for stage in (1, 2):
            config = run_config(Path(tmp), stage, precision, preset, warmup + steps, batch, ctx.device)
            trainer = Trainer(config, log=lambda message: None)
            flops = count_step_flops(trainer)
            trainer.train(resume=False)
            records = [r for r in read_metrics(config["output_dir"]) if r.get("kind") == "train"]
            rates = [r["samples_per_s"] for r in records[warmup:] if r.get("samples_per_s")]
            samples_per_s = statistics.median(rates)
            achieved = flops * samples_per_s / batch
            what = "ITC + ITM + ITG, Q-Former" if stage == 1 else "LM loss through the frozen LLM"
            rows.append(Row(f"training stage {stage} ({what}), preset {preset}, {precision}, batch {batch}",
                            samples_per_s, None, "samples/s",
                            note=f"{flops / 1e9:.1f} GFLOP/step, {achieved / 1e9:.0f} GFLOP/s, MFU "
                                 f"{100 * achieved / peak_flops:.0f}% of the {precision} matmul peak "
                                 f"({peak_flops / 1e9:.0f} GFLOP/s)",
                            extra={"mfu": achieved / peak_flops, "gflop_per_step": flops / 1e9}))
            rows.append(Row(f"training stage {stage} MFU, preset {preset}, {precision}", 100 * achieved / peak_flops,
                            None, "%", note="counted FLOPs / step time / measured matmul peak", target=">= 40%"))
    return rows
