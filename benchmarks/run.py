"""The benchmark suite: blip2core against transformers on the same random-weight BLIP-2 checkpoint.

    python -m benchmarks.run                      # full, base scale (writes docs/benchmarks.md)
    python -m benchmarks.run --quick              # every row, fewer rounds and smaller sets (< 3 min on 2 cores)
    python -m benchmarks.run --only encode,vqa    # some groups (writes no doc unless --doc is given)
    python -m benchmarks.run --scale g --device cuda --dtype bfloat16    # see benchmarks/gpu.sh
    python -m benchmarks.run --json               # JSON on stdout (the table goes to stderr)

Each measurement alternates blip2core ("ours") and transformers ("theirs") after a warm-up and
keeps medians (``benchmarks.timing.interleaved``); one row per measurement: name, ours, theirs,
unit, ratio (> 1: ours better, see ``benchmarks.rows``), agreement of the outputs.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from benchmarks import machine
from benchmarks.rows import Row, markdown_table, notes_text, text_table

if TYPE_CHECKING:
    from benchmarks.context import Context

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "benchmarks.md"
GROUPS = ("preprocess", "encode", "caption", "vqa", "default-dtype", "quantized", "retrieval", "memory", "training",
          "mini")
NEEDS_PEAK = ("encode", "default-dtype", "training")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds, smaller sets: under 3 minutes on 2 cores")
    parser.add_argument("--scale", choices=("tiny", "base", "g"), default="base",
                        help="checkpoint shapes (benchmarks.checkpoints); tiny is for tests")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", help="dtype of the equal-dtype rows (float32, bfloat16)")
    parser.add_argument("--only", default=",".join(GROUPS), help=f"comma-separated groups of: {', '.join(GROUPS)}")
    parser.add_argument("--rounds", type=int, default=None, help="timed calls per side (default 5; --quick 1)")
    parser.add_argument("--json", action="store_true", help="print JSON on stdout")
    parser.add_argument("--doc", type=Path, default=None,
                        help="Markdown report to write (default docs/benchmarks.md for a run of every group)")
    parser.add_argument("--no-doc", action="store_true", help="write no Markdown report")
    parser.add_argument("--cache-dir", type=Path, default=None, help="where the checkpoints are built once")
    args = parser.parse_args(argv)
    args.groups = [g for g in args.only.split(",") if g]
    unknown = sorted(set(args.groups) - set(GROUPS))
    if unknown:
        parser.error(f"--only: unknown group(s) {', '.join(unknown)}; choose from {', '.join(GROUPS)}")
    if args.rounds is not None and args.rounds < 1:
        parser.error(f"--rounds must be >= 1, got {args.rounds}")
    return args


def measure_peak(ctx: Context) -> float:
    """Best square-matmul FLOP/s in ``ctx.dtype`` on the device, measured now."""
    import torch

    from benchmarks.train_throughput import matmul_peak

    if ctx.device.startswith("cuda"):
        largest = 8192  # a GPU's tensor cores need large matmuls to approach their peak
    else:
        largest = 512 if ctx.scale_name == "tiny" else 2048 if ctx.quick else 4096
    rate, _ = matmul_peak(getattr(torch, ctx.dtype), ctx.device, largest, repeats=10)
    return rate


def group_runners(ctx: Context, groups: list[str], peak: Callable[[], float]) -> dict[str, Callable[[], list[Row]]]:
    from benchmarks import inference

    runners: dict[str, Callable[[], list[Row]]] = {}
    equal = [g for g in ("encode", "caption", "vqa") if g in groups]
    if "preprocess" in groups:
        from benchmarks.preprocessing import preprocess_rows

        runners["preprocess"] = lambda: preprocess_rows(ctx)
    if equal:
        runners["+".join(equal)] = lambda: inference.equal_dtype_rows(ctx, peak() if "encode" in equal else None,
                                                                       set(equal))
    if "default-dtype" in groups:
        runners["default-dtype"] = lambda: inference.default_dtype_rows(ctx, peak)  # probes only if it measures
    if "quantized" in groups:
        runners["quantized"] = lambda: inference.quantized_rows(ctx)
    if "retrieval" in groups:
        from benchmarks.retrieval import retrieval_rows

        runners["retrieval"] = lambda: retrieval_rows(ctx)
    if "memory" in groups:
        from benchmarks.memory import load_rows

        runners["memory"] = lambda: load_rows(ctx)
    if "training" in groups:
        from benchmarks.training import training_rows

        runners["training"] = lambda: training_rows(ctx, peak())
    if "mini" in groups:
        from benchmarks.latency import latency_rows

        runners["mini"] = lambda: latency_rows(ctx)
    return runners


def kept_sections(path: Path) -> list[str]:
    """The sections other scripts write into the report between their own markers
    (``<!-- benchmarks.NAME: begin ... -->`` ... ``<!-- benchmarks.NAME: end -->``, e.g. benchmarks/serving.py):
    a run of the suite keeps them."""
    import re

    old = path.read_text() if path.exists() else ""
    return re.findall(r"<!-- benchmarks\.[\w.]+: begin.*?<!-- benchmarks\.[\w.]+: end -->\n", old, re.S)


def write_doc(path: Path, command: str, info: dict, rows: list[Row], seconds: float) -> None:
    from blip2core.atomic import atomic_write_text

    machine_lines = [
        f"- CPU: {info['cpu']}, {info['cpus']} CPUs; matmul flags: {' '.join(info['flags']) or '-'}",
        f"- torch threads: {info['torch_threads']}; device: {info['device']}" + (f" ({info['gpu']})" if "gpu" in info else ""),
        f"- torch {info['torch']}, transformers {info['transformers']}, Python {info['python']}",
        f"- dtype auto here: {info['dtype_auto']}",
        f"- load average (1 min) before: {info['load_before']}, after: {info['load_after']}; run took {seconds:.0f} s",
        f"- options: scale {info['scale']}, dtype {info['dtype']}, {info['rounds']} timed round(s) per side after "
        + ("one warm-up call per model when it is loaded" if info["quick"] else f"{info['warmup']} warm-up call(s) per row")
        + f", quick: {info['quick']}",
    ]
    text = "\n".join([
        "# Benchmarks: blip2core against transformers",
        "",
        "Generated by `" + command + "` (benchmarks/run.py); do not edit by hand, run it again.",
        "How the rows are measured: [benchmarks/README.md](../benchmarks/README.md).",
        "",
        "## Machine",
        "",
        *machine_lines,
        "",
        "## Results",
        "",
        "ours = blip2core, theirs = transformers, on the same random-weight checkpoint. ratio > 1 means ours is "
        "better: theirs / ours for times (s), ours / theirs for rates (img/s); for memory (MiB) ratio = ours / "
        "theirs, so < 1 is better. Times and rates are medians of the rounds, the two sides alternating.",
        "",
        markdown_table(rows),
        "",
        *kept_sections(path),
    ])
    atomic_write_text(path, text)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import warnings

    import torch

    from benchmarks.context import Context

    warnings.filterwarnings("ignore")
    rounds = args.rounds or (1 if args.quick else 5)
    ctx = Context(scale_name=args.scale, device=args.device, dtype=args.dtype, rounds=rounds,
                  warmup=1, quick=args.quick, cache_dir=args.cache_dir)
    log = sys.stderr if args.json else sys.stdout
    started = time.perf_counter()
    info = machine.describe(args.device)
    info.update(load_before=machine.load_average(), scale=args.scale, dtype=args.dtype, rounds=rounds, warmup=1,
                quick=args.quick)
    print(f"{info['cpu']}, {info['cpus']} CPUs, torch {info['torch']} ({torch.get_num_threads()} threads), "
          f"transformers {info['transformers']}, load average {info['load_before']}", file=log, flush=True)
    peak_cache: list[float] = []

    def peak() -> float:
        """The best matmul rate of every probe so far, probing again now: each group that reports
        utilisation probes just before its rows, so a probe taken while the machine was busy
        cannot leave a low peak that later rows exceed (utilisation above 100%)."""
        peak_cache.append(measure_peak(ctx))
        print(f"matmul peak ({ctx.dtype}, measured now): {peak_cache[-1] / 1e9:.1f} GFLOP/s "
              f"(best so far {max(peak_cache) / 1e9:.1f})", file=log, flush=True)
        return max(peak_cache)

    rows: list[Row] = []
    failed = []
    for name, runner in group_runners(ctx, args.groups, peak).items():
        start = time.perf_counter()
        try:
            new = runner()
        except Exception as error:  # noqa: BLE001 - one group failing must not lose the others' rows
            traceback.print_exc(file=sys.stderr)
            failed.append(name)
            new = [Row(f"{name}: failed", float("nan"), None, "", note=f"{type(error).__name__}: {error}"[:200])]
        rows += new
        print(f"\n[{name}: {time.perf_counter() - start:.0f} s]\n{text_table(new)}\n{notes_text(new)}", file=log, flush=True)
    seconds = time.perf_counter() - started
    info["load_after"] = machine.load_average()
    info["peak_gflops"] = max(peak_cache) / 1e9 if peak_cache else None
    print(f"\nall rows ({seconds:.0f} s, load average {info['load_before']} -> {info['load_after']}):\n{text_table(rows)}",
          file=log, flush=True)
    command = "python -m benchmarks.run" + "".join(f" {shlex.quote(a)}" for a in (argv if argv is not None else sys.argv[1:]))
    doc = args.doc if args.doc is not None else (DOC if set(args.groups) == set(GROUPS) else None)
    if doc is not None and not args.no_doc:
        write_doc(doc, command, info, rows, seconds)
        print(f"wrote {doc}", file=log)
    if args.json:
        print(json.dumps({"command": command, "machine": info, "seconds": seconds,
                          "rows": [row.as_dict() for row in rows]}, indent=2, default=str))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
