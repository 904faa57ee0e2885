"""``AsyncPipeline``: awaited calls on one shared pipeline give what direct calls give, never run two
forward passes at once, leave the event loop free meanwhile, and stream chat replies."""

from __future__ import annotations

import asyncio
import threading

import pytest

from blip2core import load_pipeline
from blip2core.inference import AsyncPipeline

pytestmark = pytest.mark.usefixtures("one_torch_thread")
USER = [{"role": "user", "content": "what is in the picture?"}]
FAST = dict(num_beams=1, max_new_tokens=6)


@pytest.fixture(scope="module")
def pipes(hf_opt_folder, hf_itm_folder):
    return load_pipeline(hf_opt_folder), load_pipeline(hf_itm_folder)


class PassCounter:
    """Forward hooks on a module: how many of its forward passes run at this moment, and the most ever."""

    def __init__(self, module):
        self.active = self.most = self.total = 0
        self.lock = threading.Lock()
        self.handles = [module.register_forward_pre_hook(self.enter), module.register_forward_hook(self.leave)]

    def enter(self, *args):
        with self.lock:
            self.active += 1
            self.total += 1
            self.most = max(self.most, self.active)

    def leave(self, *args):
        with self.lock:
            self.active -= 1

    def remove(self):
        for handle in self.handles:
            handle.remove()


def test_concurrent_awaits_equal_direct_calls_and_never_overlap(pipes, photos):
    gen, itm = pipes
    direct = [
        gen.caption(photos[:2], **FAST),
        gen.answer(photos[0], ["what is it?", "is it red?"], **FAST),
        gen.chat(photos[1], USER, max_new_tokens=6),
        itm.match(photos[2], ["a cat", "coffee"]).tolist(),
        itm.extract_features(texts=["a cat"], mode="text").text_embeds_proj.tolist(),
    ]
    counters = [PassCounter(gen.vision), PassCounter(gen.require_llm().model), PassCounter(itm.vision)]

    async def main():
        async with AsyncPipeline(gen, workers=4) as ag, AsyncPipeline(itm, workers=4) as ai:
            def calls():
                return [
                    ag.caption(photos[:2], **FAST),
                    ag.answer(photos[0], ["what is it?", "is it red?"], **FAST),
                    ag.chat(photos[1], USER, max_new_tokens=6),
                    ai.match(photos[2], ["a cat", "coffee"]),
                    ai.extract_features(texts=["a cat"], mode="text"),
                ]

            results = await asyncio.gather(*calls(), *calls(), *calls())
        return results

    try:
        results = asyncio.run(main())
    finally:
        for counter in counters:
            counter.remove()
    as_lists = [r.tolist() if hasattr(r, "tolist") else r for r in results]
    as_lists = [r.text_embeds_proj.tolist() if hasattr(r, "text_embeds_proj") else r for r in as_lists]
    assert as_lists == direct * 3
    assert [min(counter.total, 9) for counter in counters] == [9, 9, 3]  # every call ran its passes
    assert [counter.most for counter in counters] == [1, 1, 1]  # one forward pass at a time per pipeline


def test_the_event_loop_runs_while_the_model_computes(pipes, photos):
    gen, _ = pipes

    async def main():
        ticks = 0
        done = asyncio.Event()

        async def ticker():
            nonlocal ticks
            while not done.is_set():
                ticks += 1
                await asyncio.sleep(0.001)

        async with AsyncPipeline(gen) as ag:
            task = asyncio.create_task(ticker())
            await ag.caption(photos, num_beams=3, max_new_tokens=12)
            done.set()
            await task
        return ticks

    assert asyncio.run(main()) >= 3


def test_streamed_chat_joins_to_the_reply_and_stops_when_closed(pipes, photos):
    gen, _ = pipes
    whole = gen.chat(photos[0], USER, max_new_tokens=12)

    async def main():
        async with AsyncPipeline(gen) as ag:
            stream = await ag.chat(photos[0], USER, max_new_tokens=12, stream=True)
            pieces = [piece async for piece in stream]
            early = await ag.chat(photos[0], USER, max_new_tokens=12, stream=True)
            first = await early.__anext__()
            await early.aclose()  # stops the generation and frees the pipeline's lock
            after = await asyncio.wait_for(ag.caption(photos[1], **FAST), timeout=60)
        return pieces, first, after

    pieces, first, after = asyncio.run(main())
    assert len(pieces) > 1 and "".join(pieces) == whole
    assert first == pieces[0]
    assert after == gen.caption(photos[1], **FAST)


def test_bad_input_raises_from_the_await(pipes, photos):
    gen, _ = pipes

    async def main():
        async with AsyncPipeline(gen) as ag:
            with pytest.raises(ValueError, match="streaming needs num_beams=1"):
                await ag.chat(photos[0], USER, stream=True, num_beams=2)
            with pytest.raises(ValueError, match="no images given"):
                await ag.caption([])

    asyncio.run(main())
    with pytest.raises(ValueError, match="workers"):
        AsyncPipeline(gen, workers=0)
