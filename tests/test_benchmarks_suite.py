"""The benchmark suite (``python -m benchmarks.run``) end to end at its smallest configuration, in a
real process: the rows it prints as JSON, their ratios and agreement, and the Markdown report.
No timing is asserted: only that each measurement ran, compared equal outputs, and was reported."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def benchmarks_importable(monkeypatch):
    monkeypatch.syspath_prepend(str(REPO))


def run_suite(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "benchmarks.run", *args], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=300)


def test_quick_tiny_encode_run_gives_json_rows_and_the_report(tmp_path):
    doc = tmp_path / "benchmarks.md"
    out = run_suite("--quick", "--scale", "tiny", "--only", "encode", "--rounds", "1", "--json",
                    "--doc", str(doc), "--cache-dir", str(tmp_path / "cache"))
    assert out.returncode == 0, out.stderr[-2000:]
    report = json.loads(out.stdout)
    rows = {row["name"]: row for row in report["rows"]}
    assert sorted(rows) == ["image encoding, batch 1 (float32)", "image encoding, batch 8 (float32)"]
    for row in rows.values():
        assert row["unit"] == "img/s" and row["ours"] > 0 and row["theirs"] > 0
        assert math.isclose(row["ratio"], row["ours"] / row["theirs"])  # a rate: ours / theirs
        # the same checkpoint gives the same numbers, to float32 rounding (blip2core.small_batch_linear)
        assert row["agreement"].startswith("max|diff| ") and float(row["agreement"].split()[-1]) < 1e-5
        assert "GFLOP per batch" in row["note"] and "matmul peak" in row["note"]
    machine = report["machine"]
    assert machine["scale"] == "tiny" and machine["torch"] and machine["transformers"] and machine["cpus"] >= 1
    assert machine["peak_gflops"] > 0 and machine["load_before"] is not None and machine["load_after"] is not None
    text = doc.read_text()
    assert "python -m benchmarks.run --quick --scale tiny" in text
    assert "## Machine" in text and "matmul flags" in text and "load average (1 min) before" in text
    for name in rows:
        assert f"| {name} |" in text
    assert (tmp_path / "cache" / "tiny-generation" / ".complete").exists()  # built once, reused next time


def test_an_unknown_group_is_named_with_the_choices(tmp_path):
    out = run_suite("--only", "encode,speed", "--no-doc")
    assert out.returncode == 2
    assert "unknown group(s) speed" in out.stderr and "retrieval" in out.stderr
    assert "Traceback" not in out.stderr


def test_interleaved_alternates_rotating_after_the_warm_up(benchmarks_importable):
    from benchmarks.timing import interleaved

    calls = []
    timing = interleaved({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, rounds=3, warmup=1)
    assert calls == ["a", "b", "a", "b", "b", "a", "a", "b"]
    assert len(timing["a"].samples) == len(timing["b"].samples) == 3
    with pytest.raises(ValueError, match="rounds must be >= 1"):
        interleaved({"a": lambda: None}, rounds=0)


def test_ratios_read_as_times_better_for_us(benchmarks_importable):
    from benchmarks.rows import Row, markdown_table

    faster = Row("t", ours=1.0, theirs=3.0, unit="s")
    rate = Row("r", ours=30.0, theirs=10.0, unit="img/s")
    smaller = Row("m", ours=700.0, theirs=1000.0, unit="MiB")
    alone = Row("o", ours=2.0, theirs=None, unit="s")
    assert (faster.ratio, rate.ratio, smaller.ratio, alone.ratio) == (3.0, 3.0, 0.7, None)
    assert Row("x", ours=float("nan"), theirs=None, unit="s").as_dict()["ours"] is None  # valid JSON
    table = markdown_table([faster, alone])
    assert "| t | 1 | 3 | s | 3.00x |" in table and "| o | 2 | - | s | - |" in table
