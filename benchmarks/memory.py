"""Peak memory and wall time of loading the checkpoint, each load in a fresh Python process.

The child imports torch, transformers and blip2core first (both sides pay the same imports), notes
its resident set, loads what captioning needs with one library (blip2core: ``load_pipeline``, which
holds the tokenizer and image preprocessor; transformers: ``from_pretrained`` and the
``Blip2Processor``, as its users load them), and reports its peak resident set (VmHWM), the
load's wall time and, on a GPU, torch's peak allocated GPU memory; then it reads every weight once
(memory-mapped weights are paged in) and reports the peak again; JSON on stdout:

    python -m benchmarks.memory --child ours|theirs FOLDER DTYPE DEVICE
"""

from __future__ import annotations

import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

from typing import TYPE_CHECKING

from benchmarks.rows import Row  # light: the child process must not import blip2core before it is timed

if TYPE_CHECKING:
    from benchmarks.context import Context

REPO = Path(__file__).resolve().parents[1]


def status_mib(field: str) -> float:
    """A ``/proc/self/status`` field (VmRSS, VmHWM) in MiB; ru_maxrss where /proc is missing."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(side: str, folder: str, dtype: str, device: str) -> dict:
    import warnings

    import torch
    from transformers import Blip2ForConditionalGeneration, Blip2Processor

    from blip2core import load_pipeline  # both libraries' entry points imported before the baseline

    warnings.filterwarnings("ignore")
    before = status_mib("VmRSS")
    start = time.perf_counter()
    if side == "theirs":
        model = Blip2ForConditionalGeneration.from_pretrained(folder, dtype=getattr(torch, dtype)).to(device)
        Blip2Processor.from_pretrained(folder)  # a pipeline holds its tokenizer and preprocessor too
    else:
        model = load_pipeline(Path(folder), device=device, dtype=dtype)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    assert model is not None
    gpu_peak = torch.cuda.max_memory_allocated() / 2**20 if device.startswith("cuda") else None
    peak, after = status_mib("VmHWM"), status_mib("VmRSS")
    with torch.no_grad():  # read every weight once: memory-mapped weights that loading left on disk count now
        for tensor in [*model.parameters(), *model.buffers()]:
            tensor.float().sum()
    return {"rss_before_mib": before, "peak_mib": peak, "rss_after_mib": after, "load_s": seconds,
            "gpu_peak_mib": gpu_peak, "peak_read_mib": status_mib("VmHWM")}


def measure(side: str, folder: Path, dtype: str, device: str) -> dict:
    out = subprocess.run([sys.executable, "-m", "benchmarks.memory", "--child", side, str(folder), dtype, device],
                         capture_output=True, text=True, cwd=REPO, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"load in a child process failed ({side}): {out.stderr.strip().splitlines()[-1:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def load_rows(ctx: Context) -> list[Row]:
    """Peak RSS and wall time of a load, alternating ours / theirs in fresh processes."""
    runs: dict[str, list[dict]] = {"ours": [], "theirs": []}
    for index in range(1 if ctx.quick else 3):
        for side in (["ours", "theirs"] if index % 2 == 0 else ["theirs", "ours"]):
            runs[side].append(measure(side, ctx.generation_folder, ctx.dtype, ctx.device))

    def median(side: str, key: str) -> float:
        return statistics.median(run[key] for run in runs[side])

    ours_above = median("ours", "peak_mib") - median("ours", "rss_before_mib")
    theirs_above = median("theirs", "peak_mib") - median("theirs", "rss_before_mib")
    weights = sum(p.stat().st_size for p in ctx.generation_folder.glob("*.safetensors")) / 2**20
    label = f"{ctx.dtype}, fresh process"
    rows = [
        Row(f"peak RSS while loading ({label})", median("ours", "peak_mib"), median("theirs", "peak_mib"), "MiB",
            note=f"imports included (ours {median('ours', 'rss_before_mib'):.0f} MiB before loading, theirs "
                 f"{median('theirs', 'rss_before_mib'):.0f})", target="<= 0.7x"),
        Row(f"peak RSS of loading alone ({label})", ours_above, theirs_above, "MiB",
            note=f"peak minus the RSS after imports; safetensors on disk {weights:.0f} MiB", target="<= 0.7x"),
        Row(f"peak RSS after loading and reading every weight once ({label})", median("ours", "peak_read_mib"),
            median("theirs", "peak_read_mib"), "MiB",
            note="a library that memory-maps the weights pages them in on first use: this row counts them"),
        Row(f"load time ({label})", median("ours", "load_s"), median("theirs", "load_s"), "s",
            note="ours: load_pipeline(folder); theirs: Blip2ForConditionalGeneration.from_pretrained + "
                 "Blip2Processor.from_pretrained"),
    ]
    if ctx.device.startswith("cuda"):
        rows.append(Row(f"peak GPU memory allocated while loading ({label})", median("ours", "gpu_peak_mib"),
                        median("theirs", "gpu_peak_mib"), "MiB", note="torch.cuda.max_memory_allocated"))
    return rows


if __name__ == "__main__":
    if len(sys.argv) == 6 and sys.argv[1] == "--child":
        print(json.dumps(child(*sys.argv[2:6])))
    else:
        sys.exit(__doc__)
