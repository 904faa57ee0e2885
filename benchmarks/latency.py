"""What a user feels on this machine (ours only): start-up (``import blip2core`` and ``blip2 --help``,
each the median of several warm fresh processes), and the embedded ``mini`` model end to end in a
fresh process: import, compose (``load_pipeline("mini")``), the first default caption, then median
times of a default caption and of 8 questions about one photo (``--quick``: the first caption and
the 8 questions once).

    python -m benchmarks.latency --mini-child ROUNDS     # the child (ROUNDS 0: quick): JSON on stdout
"""

from __future__ import annotations

import json
import shutil
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
MINI_QUESTIONS = [
    "what color is the shape?", "what shape is in the image?", "is there a circle?", "is the shape red?",
    "is there not a triangle?", "is the shape blue?", "what is the color of the shape?", "does the image contain a rectangle?",
]


def blip2_command() -> list[str]:
    """The installed ``blip2`` console script (next to this Python), else ``python -m blip2core.cli``."""
    script = Path(sys.executable).parent / "blip2"
    if script.exists():
        return [str(script)]
    found = shutil.which("blip2")
    return [found] if found else [sys.executable, "-m", "blip2core.cli"]


def fresh_process_seconds(command: list[str], runs: int) -> float:
    """Median wall time of ``runs`` fresh processes of ``command``, after one that warms the page cache."""
    times = []
    for _ in range(runs + 1):
        start = time.perf_counter()
        subprocess.run(command, capture_output=True, check=True, cwd=REPO)
        times.append(time.perf_counter() - start)
    return statistics.median(times[1:])


def startup_rows(runs: int) -> list[Row]:
    """``import blip2core`` (no torch, no plugin: tests/test_lazy_imports.py) and ``blip2 --help``
    (every plugin discovered for its commands, no torch), each in fresh processes."""
    note = f"median of {runs} warm runs"
    return [
        Row("`import blip2core` wall time (fresh process)", fresh_process_seconds(
            [sys.executable, "-c", "import blip2core"], runs), None, "s", target="< 1 s", note=note),
        Row("`blip2 --help` wall time (fresh process)", fresh_process_seconds(
            [*blip2_command(), "--help"], runs), None, "s", target="< 1 s", note=note),
    ]


def mini_child(rounds: int) -> dict:
    import warnings

    warnings.filterwarnings("ignore")
    start = time.perf_counter()
    from blip2core import load_pipeline

    imported = time.perf_counter()
    pipe = load_pipeline("mini")
    composed = time.perf_counter()
    import skimage.data

    image = skimage.data.chelsea()
    first = pipe.caption(image)
    first_done = time.perf_counter()
    captions, answers, caption = [], [], first
    for _ in range(max(1, rounds)):
        if rounds:  # rounds 0 (--quick): the first caption only, and the questions once
            t = time.perf_counter()
            caption = pipe.caption(image)
            captions.append(time.perf_counter() - t)
        t = time.perf_counter()
        answer = pipe.answer(image, MINI_QUESTIONS)
        answers.append(time.perf_counter() - t)
    return {"import_s": imported - start, "compose_s": composed - imported, "first_caption_s": first_done - composed,
            "caption_s": statistics.median(captions) if captions else None, "answer8_s": statistics.median(answers),
            "caption": first, "same_caption": caption == first, "answers": answer}


def latency_rows(ctx: Context) -> list[Row]:
    rounds = 0 if ctx.quick else 3
    rows = startup_rows(5 if ctx.quick else 11)
    out = subprocess.run([sys.executable, "-m", "benchmarks.latency", "--mini-child", str(rounds)],
                         capture_output=True, text=True, cwd=REPO, check=False)
    if out.returncode != 0:
        tail = (out.stderr.strip().splitlines() or ["?"])[-1]
        rows.append(Row("mini end to end", float("nan"), None, "s", note=f"failed: {tail[:160]}"))
        return rows
    mini = json.loads(out.stdout.strip().splitlines()[-1])
    rows += [
        Row("mini: from blip2core import load_pipeline (fresh process)", mini["import_s"], None, "s",
            note="imports torch and the pipeline"),
        Row("mini: compose the pipeline, load_pipeline(\"mini\")", mini["compose_s"], None, "s"),
        Row("mini: first default caption after load", mini["first_caption_s"], None, "s",
            agreement=f"{mini['caption'][0]!r}", target="< 3 s"),
    ]
    if mini["caption_s"] is not None:
        rows.append(Row("mini: one default caption (warm)", mini["caption_s"], None, "s",
                        agreement=f"same caption: {mini['same_caption']}", note="pipe.caption(photo), default decoding",
                        target="< 3 s"))
    rows += [
        Row("mini: 8 questions about one photo (warm)", mini["answer8_s"], None, "s",
            agreement=", ".join(mini["answers"][:3]) + ", ...", note="pipe.answer(photo, questions), default decoding"),
    ]
    return rows


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--mini-child":
        print(json.dumps(mini_child(int(sys.argv[2]))))
    else:
        sys.exit(__doc__)
