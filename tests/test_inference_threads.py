"""Thread safety: calls made at once from several threads (as a web server's workers make them)
give exactly what the same calls give one after another, seeded sampling included."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

from blip2core import load_pipeline


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def pipes(hf_opt_folder, hf_itm_folder, photos):
    return load_pipeline(hf_opt_folder), load_pipeline(hf_itm_folder), photos


def test_concurrent_calls_equal_serial_calls(pipes):
    gen, itm, photos = pipes
    questions = ["what is it?", "who is there", "is it red?"]
    jobs = [
        lambda: gen.caption(photos[:2], num_beams=2, max_new_tokens=6),
        lambda: gen.caption(photos[1:3], do_sample=True, seed=1, num_beams=1, max_new_tokens=8),
        lambda: gen.answer(photos[0], questions, max_new_tokens=5, repetition_penalty=1.5),
        lambda: gen.caption(photos[3], do_sample=True, seed=2, num_beams=1, max_new_tokens=8, num_return_sequences=2),
        lambda: itm.match(photos, ["a cat", "an astronaut", "coffee", "a temple"]).tolist(),
        lambda: itm.classify(photos[:2], ["cat", "astronaut"]),
        lambda: itm.extract_features(texts=["a cat", "a dog"], mode="text").text_embeds_proj.tolist(),
    ]
    serial = [job() for job in jobs]
    assert serial[1] != gen.caption(photos[1:3], do_sample=True, seed=3, num_beams=1, max_new_tokens=8)

    barrier = threading.Barrier(len(jobs) * 2)

    def run(job):
        barrier.wait()  # every job starts at the same moment
        return job()

    torch.manual_seed(0)
    with ThreadPoolExecutor(len(jobs) * 2) as pool:
        concurrent = list(pool.map(run, jobs * 2))
    assert concurrent == serial * 2
