"""Load: one pipeline shared by 8 threads for 200 questions answers exactly as one thread does
(tests/test_inference_threads.py mixes every task at once; this is many more calls of one), and
memory stays flat over 1,000 calls (nothing cached per call: prefix caches, tokenizer state,
autograd graphs)."""

from __future__ import annotations

import gc
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import psutil
import pytest
import torch

from blip2core import load_pipeline

pytestmark = pytest.mark.usefixtures("one_torch_thread")

WORDS = ["red", "blue", "circle", "square", "big", "small", "left", "right", "cat", "sky", "what", "is", "the"]


def questions(count: int) -> list[str]:
    generator = torch.Generator().manual_seed(0)
    picks = torch.randint(0, len(WORDS), (count, 4), generator=generator).tolist()
    return [" ".join(WORDS[i] for i in row) + "?" for row in picks]


@pytest.fixture(scope="module")
def pipe(hf_opt_folder):
    return load_pipeline(hf_opt_folder)


@pytest.fixture(scope="module")
def images():
    """Four small decoded images (the model's own size: the calls, not resizing, are measured)."""
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (32, 32, 3), dtype=np.uint8) for _ in range(4)]


def test_eight_threads_answer_200_questions_as_one_thread_does(pipe, images):
    jobs = [(images[i % len(images)], q) for i, q in enumerate(questions(200))]

    def ask(job):
        image, question = job
        return pipe.answer(image, question, max_new_tokens=3, num_beams=1 + len(question) % 2)

    serial = [ask(job) for job in jobs]
    assert len(set(map(str, serial))) > 1  # the answers depend on the question
    start = threading.Barrier(8)

    def worker(part):
        start.wait()
        return [ask(job) for job in part]

    with ThreadPoolExecutor(8) as pool:
        parts = list(pool.map(worker, [jobs[i::8] for i in range(8)]))
    concurrent = [None] * len(jobs)
    for i, part in enumerate(parts):
        concurrent[i::8] = part
    assert concurrent == serial


def test_memory_is_flat_over_1000_calls(pipe, images):
    process = psutil.Process()

    def calls(count: int) -> None:
        for i in range(count):
            pipe.answer(images[i % 4], "what is it?", max_new_tokens=1, num_beams=1)

    calls(50)  # warm up: allocator pools, lazily built buffers
    gc.collect()
    before = process.memory_info().rss
    calls(1000)
    gc.collect()
    growth = process.memory_info().rss - before
    assert growth < 24 * 2**20, f"RSS grew by {growth / 2**20:.1f} MiB over 1,000 calls"
