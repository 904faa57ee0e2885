"""``AsyncPipeline``: one shared ``Pipeline`` called from asyncio code (a web server's handlers).

Every call runs in a worker thread of the wrapper's own pool, so the event loop keeps serving
while a model computes. Forward passes never overlap: every inference function holds the
pipeline's lock (``blip2core.inference.state.exclusive``) around its model calls, so two
concurrent awaits give what the same calls give one after another; image decoding happens before
the lock is taken and overlaps with another call's forward pass (hence two workers by default).

A streamed chat (``await ap.chat(..., stream=True)``) returns an async iterator of text pieces;
its generation runs in ``Pipeline.chat``'s own thread under the same lock, and closing the
iterator early stops the generation.

No web framework here: this module needs only the standard library and the pipeline.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    import torch

    from blip2core.inference.features import Features
    from blip2core.pipeline import Pipeline

T = TypeVar("T")
_END = object()


class AsyncPipeline:
    """Awaitable versions of ``Pipeline``'s inference methods over one shared pipeline.

    Args:
        pipe: the pipeline (shared: also usable directly from other threads, as the lock is the pipeline's).
        workers: threads of the private pool the blocking calls run in (>= 1). More than one lets
            image decoding overlap a forward pass; the passes themselves stay one at a time.

    Use ``async with AsyncPipeline(pipe) as ap:`` or call ``close()`` when done.
    """

    def __init__(self, pipe: Pipeline, *, workers: int = 2) -> None:
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
            raise ValueError(f"workers must be a positive int, got {workers!r}")
        self.pipe = pipe
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="blip2-async")

    async def run(self, function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """``function(*args, **kwargs)`` in a worker thread; its result (or exception) awaited."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, functools.partial(function, *args, **kwargs))

    async def caption(self, images: Any, **options: Any) -> list[str]:
        """``Pipeline.caption``: captions [B * num_return_sequences]."""
        return await self.run(self.pipe.caption, images, **options)

    async def answer(self, images: Any, questions: Any, **options: Any) -> list[str]:
        """``Pipeline.answer``: one answer per question."""
        return await self.run(self.pipe.answer, images, questions, **options)

    async def extract_features(self, images: Any = None, texts: Any = None, mode: str = "image") -> Features:
        """``Pipeline.extract_features``: ``Features`` (tensors on the pipeline's device)."""
        return await self.run(self.pipe.extract_features, images, texts, mode)

    async def match(self, images: Any, texts: Any, method: str = "itm") -> torch.Tensor:
        """``Pipeline.match``: scores [P]."""
        return await self.run(self.pipe.match, images, texts, method)

    async def chat(self, image: Any, messages: Any, *, stream: bool = False, **options: Any) -> str | AsyncIterator[str]:
        """``Pipeline.chat``: the reply, or with ``stream=True`` an async iterator of its pieces
        (the input checks happen before this returns, as for ``Pipeline.chat``)."""
        if not stream:
            return await self.run(self.pipe.chat, image, messages, **options)
        pieces = await self.run(self.pipe.chat, image, messages, stream=True, **options)
        return _async_pieces(pieces)

    def close(self) -> None:
        """Wait for running calls, then stop the worker threads."""
        self._pool.shutdown(wait=True)

    async def __aenter__(self) -> AsyncPipeline:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await asyncio.get_running_loop().run_in_executor(None, self.close)


async def _async_pieces(pieces: Iterator[str]) -> AsyncIterator[str]:
    """A blocking iterator read one item at a time in one private thread (``next`` and ``close``
    never run at once, whichever task closes it); closing this closes it."""
    loop = asyncio.get_running_loop()
    reader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="blip2-stream")
    try:
        while (piece := await loop.run_in_executor(reader, next, pieces, _END)) is not _END:
            yield piece
    finally:
        close = getattr(pieces, "close", None)
        if close is not None:
            reader.submit(close)  # after a read still in flight, if this task was cancelled during it
        reader.shutdown(wait=False)
