"""The dynamic batcher: how batches form (alone, and behind a real server with the `mini` model,
whose batched answers must equal single calls), the bounded queue, per-request failures."""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor

import httpx2 as httpx
import pytest

from blip2_serve.app import create_app
from blip2_serve.batcher import Batcher, BatchKey, QueueFull
from blip2_serve.settings import ServeSettings
from blip2_serve.testing import data_url, serving

QUESTIONS = ["what shape is this?", "what color is the shape?", "is there a circle?", "is the shape green?",
             "what is the shape?", "is it blue?", "what colour is it?", "is this a rectangle?"]


def run_batcher(jobs, *, delay_s=0.05, **options):
    """Submit ``jobs`` [(key, item, start_delay_s)] to a Batcher whose call sleeps ``delay_s`` and
    returns each item doubled; returns (results or exceptions, the batches it called)."""
    batches: list[tuple[str, list]] = []

    async def run(key, items):
        batches.append((key.route, list(items)))
        await asyncio.sleep(delay_s)
        if "bad" in items:
            raise ValueError("bad item")
        return [item * 2 for item in items]

    async def main():
        batcher = Batcher(run, **options)
        batcher.start()

        async def one(key, item, start):
            await asyncio.sleep(start)
            return await batcher.submit(key, item)

        try:
            return await asyncio.gather(*(one(*job) for job in jobs), return_exceptions=True)
        finally:
            await batcher.stop()

    return asyncio.run(main()), batches


def test_batches_group_one_key_up_to_max_batch():
    caption, answer = BatchKey.of("caption", {"num_beams": 1}), BatchKey.of("answer", {"num_beams": 1})
    jobs = [(caption, f"c{i}", 0.0) for i in range(5)] + [(answer, "a0", 0.0)]
    results, batches = run_batcher(jobs, max_batch=4, max_wait_ms=50)
    assert results == [f"c{i}" * 2 for i in range(5)] + ["a0a0"]
    # oldest first: c4 came before a0
    assert batches == [("caption", ["c0", "c1", "c2", "c3"]), ("caption", ["c4"]), ("answer", ["a0"])]


def test_different_options_never_share_a_batch_and_unbatchable_work_goes_alone():
    beams1, beams3 = BatchKey.of("caption", {"num_beams": 1}), BatchKey.of("caption", {"num_beams": 3})
    chat = BatchKey.of("chat", {}, batchable=False)
    jobs = [(beams1, "x", 0.0), (beams3, "y", 0.0), (beams1, "z", 0.0), (chat, "m", 0.0), (chat, "n", 0.0)]
    _, batches = run_batcher(jobs, max_batch=8, max_wait_ms=20)
    assert sorted(batches) == sorted([("caption", ["x", "z"]), ("caption", ["y"]), ("chat", ["m"]), ("chat", ["n"])])


def test_the_first_request_waits_at_most_max_wait():
    key = BatchKey.of("caption", {})
    # the second arrives after the first one's wait is over: two batches; within it: one
    _, apart = run_batcher([(key, "a", 0.0), (key, "b", 0.15)], max_batch=8, max_wait_ms=20, delay_s=0.0)
    _, together = run_batcher([(key, "a", 0.0), (key, "b", 0.02)], max_batch=8, max_wait_ms=300, delay_s=0.0)
    assert apart == [("caption", ["a"]), ("caption", ["b"])]
    assert together == [("caption", ["a", "b"])]
    start = time.perf_counter()
    run_batcher([(key, "a", 0.0)], max_batch=8, max_wait_ms=30, delay_s=0.0)
    assert time.perf_counter() - start < 2.0  # a lone request does not wait for a full batch


def test_a_full_queue_refuses_and_a_bad_item_fails_alone():
    key = BatchKey.of("caption", {})
    results, _ = run_batcher([(key, "a", 0.0), (key, "b", 0.0), (key, "c", 0.0)], max_batch=1, max_queue=1,
                             max_wait_ms=0)
    assert results[0] == "aa" and isinstance(results[2], QueueFull) and results[2].retry_after_s >= 1
    results, batches = run_batcher([(key, "a", 0.0), (key, "bad", 0.0), (key, "c", 0.0)], max_batch=4,
                                   max_wait_ms=50)
    assert results[0] == "aa" and results[2] == "cc" and isinstance(results[1], ValueError)
    assert batches[0] == ("caption", ["a", "bad", "c"]) and len(batches) == 4  # then one at a time


@pytest.fixture(scope="module")
def server(mini):
    settings = ServeSettings(model="mini", max_batch=8, max_wait_ms=200)
    with serving(create_app(mini, settings)) as url:
        yield url


def post_all(url, bodies):
    """POST every (route, body) at once from its own thread; the JSON replies in order."""
    with httpx.Client(base_url=url, timeout=120) as client, ThreadPoolExecutor(len(bodies)) as pool:
        replies = list(pool.map(lambda job: client.post(job[0], json=job[1]), bodies))
    assert [r.status_code for r in replies] == [200] * len(bodies), [r.text for r in replies]
    return [r.json() for r in replies]


def test_concurrent_requests_are_batched_and_equal_single_calls(server, mini, image_paths):
    """6 concurrent captions and 6 concurrent answers (questions of different lengths: the batch is
    padded) give exactly what 12 single ``pipe.caption`` / ``pipe.answer`` calls give (beam search)."""
    options = {"num_beams": 2, "max_new_tokens": 6}
    paths = image_paths[:6]
    captions = post_all(server, [("/v1/caption", {"image": data_url(p), **options}) for p in paths])
    answers = post_all(server, [("/v1/answer", {"image": data_url(p), "question": q, **options})
                                for p, q in zip(paths, QUESTIONS)])
    single_captions = [mini.caption(p.read_bytes(), **options)[0] for p in paths]
    single_answers = [mini.answer(p.read_bytes(), q, **options)[0] for p, q in zip(paths, QUESTIONS)]
    assert [c["caption"] for c in captions] == single_captions
    assert [a["answer"] for a in answers] == single_answers
    metrics = httpx.get(f"{server}/metrics").json()
    sizes = {int(size): count for size, count in metrics["batch_size_histogram"].items()}
    assert max(sizes) > 1, sizes  # batches formed
    assert sum(size * count for size, count in sizes.items()) == 12 == metrics["requests"]
    assert metrics["errors"] == 0 and metrics["queue_depth"] == 0
    assert 0 < metrics["latency_ms"]["p50"] <= metrics["latency_ms"]["p90"] <= metrics["latency_ms"]["p99"]


def test_a_full_queue_answers_503_with_retry_after(mini, image_paths):
    settings = ServeSettings(model="mini", max_batch=1, max_wait_ms=0, max_queue=1)
    body = {"image": data_url(image_paths[0]), "max_new_tokens": 4, "num_beams": 1}
    with serving(create_app(mini, settings)) as url:
        with httpx.Client(base_url=url, timeout=120) as client, ThreadPoolExecutor(6) as pool:
            replies = list(pool.map(lambda _: client.post("/v1/caption", json=body), range(6)))
        codes = sorted(r.status_code for r in replies)
        refused = [r for r in replies if r.status_code == 503]
        assert codes[0] == 200 and refused, codes
        assert all(int(r.headers["Retry-After"]) >= 1 and "busy" in r.json()["error"]["message"] for r in refused)
        assert refused[0].json()["error"]["type"] == "overloaded"
