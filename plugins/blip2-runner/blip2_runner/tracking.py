"""What a run writes as it goes: ``metrics.jsonl`` (one JSON object per line) and ``plots/*.png``."""

from __future__ import annotations

import json
import math
import os
from collections import defaultdict
from pathlib import Path
from typing import Any

from blip2core.plugin_api import atomic_file, atomic_write_text

METRICS_FILE = "metrics.jsonl"
PLOTS_DIR = "plots"


def _clean(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # JSON has no NaN/Inf; keep them readable ("nan", "inf")
    return value


class MetricsLog:
    """Appends records to ``metrics.jsonl``; each line is flushed so a killed run keeps its lines."""

    def __init__(self, output_dir: Path) -> None:
        self.path = Path(output_dir) / METRICS_FILE
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, record: dict[str, Any]) -> None:
        line = json.dumps({k: _clean(v) for k, v in record.items()}, sort_keys=False)
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(line + "\n")
            handle.flush()
            os.fsync(handle.fileno())

    def read(self) -> list[dict[str, Any]]:
        return read_metrics(self.path)

    def truncate_after(self, step: int) -> int:
        """Drop records past ``step`` (left by a run that died after its last checkpoint) and any
        half-written last line; returns how many lines were dropped."""
        if not self.path.exists():
            return 0
        kept, dropped = [], 0
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                dropped += 1
                continue
            if isinstance(record, dict) and int(record.get("step", 0)) > step:
                dropped += 1
                continue
            kept.append(line)
        if dropped:
            atomic_write_text(self.path, "".join(line + "\n" for line in kept))
        return dropped


def read_metrics(path: Path | str) -> list[dict[str, Any]]:
    """Records of a metrics.jsonl (a torn last line is ignored)."""
    path = Path(path)
    if path.is_dir():
        path = path / METRICS_FILE
    records = []
    if not path.exists():
        return records
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


def write_plots(output_dir: Path) -> list[Path]:
    """Redraw ``plots/loss.png``, ``plots/lr.png`` and one ``plots/eval_<task>.png`` per evaluated
    task from metrics.jsonl. Each file is replaced atomically."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    output_dir = Path(output_dir)
    records = read_metrics(output_dir / METRICS_FILE)
    plots = output_dir / PLOTS_DIR
    plots.mkdir(parents=True, exist_ok=True)
    train = [r for r in records if r.get("kind") == "train"]
    evals = [r for r in records if r.get("kind") == "eval"]
    written = []

    def save(fig, name: str) -> None:
        final = plots / name
        try:
            with atomic_file(final) as tmp:
                fig.savefig(tmp, dpi=90, bbox_inches="tight")
        finally:
            plt.close(fig)
        written.append(final)

    def series(rows, key):
        xs, ys = [], []
        for r in rows:
            v = r.get(key)
            if isinstance(v, (int, float)) and math.isfinite(v):
                xs.append(r["step"])
                ys.append(v)
        return xs, ys

    if train:
        fig, ax = plt.subplots(figsize=(7, 4))
        keys = ["loss"] + sorted({k for r in train for k in r if k.startswith("loss/")})
        for key in keys:
            xs, ys = series(train, key)
            if xs:
                ax.plot(xs, ys, label=key, linewidth=2 if key == "loss" else 1)
        ax.set_xlabel("step")
        ax.set_ylabel("loss")
        ax.set_title("training loss")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        save(fig, "loss.png")
        xs, ys = series(train, "lr")
        if xs:
            fig, ax = plt.subplots(figsize=(7, 3))
            ax.plot(xs, ys)
            ax.set_xlabel("step")
            ax.set_ylabel("learning rate")
            ax.grid(alpha=0.3)
            save(fig, "lr.png")
    by_task: dict[str, set[str]] = defaultdict(set)
    for r in evals:
        for k in r:
            if k.startswith("eval/"):
                _, task, metric = k.split("/", 2)
                by_task[task].add(metric)
    for task, metrics in sorted(by_task.items()):
        fig, ax = plt.subplots(figsize=(7, 4))
        counts = series(evals, f"eval/{task}/num_examples")[1]
        for metric in sorted(metrics - {"num_examples"}):  # a count, not a score: it goes in the title
            xs, ys = series(evals, f"eval/{task}/{metric}")
            if xs:
                ax.plot(xs, ys, marker="o", label=metric)
        ax.set_xlabel("step")
        ax.set_title(f"eval: {task}" + (f" ({int(counts[-1])} examples)" if counts else ""))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in task)
        save(fig, f"eval_{safe}.png")
    return written
