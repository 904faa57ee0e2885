"""Dynamic batching: requests of concurrent clients that can share one pipeline call get one.

Requests with the same ``BatchKey`` (the route and every decoding option) queue together; when the
oldest waiting request has waited ``max_wait_ms``, or ``max_batch`` requests of its key are waiting,
the batcher takes up to ``max_batch`` of them (oldest first) and makes one call. One call runs at a
time, so while the model works the next batch fills up: under load batches form without waiting.
Requests of other keys keep their place in the queue.

A batch that fails is retried one request at a time, so one bad request (a prompt too long for the
model, say) fails alone. The queue is bounded: beyond ``max_queue`` waiting requests ``submit``
raises ``QueueFull`` with a suggested ``retry_after_s`` (the server answers 503 + Retry-After).
"""

from __future__ import annotations

import asyncio
import math
from collections import deque
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass, field
from typing import Any

from blip2_serve.metrics import Metrics

#: runs one batch: (key, items [B]) -> results [B], in the items' order
BatchRunner = Callable[["BatchKey", list[Any]], Awaitable[list[Any]]]


@dataclass(frozen=True)
class BatchKey:
    """What requests must share to be answered by one call.

    Attributes:
        route: e.g. ``"caption"``.
        options: ``(name, value)`` pairs of every option the call takes (sorted; hashable values).
        batchable: False for work that cannot be batched (each request is its own call, still
            queued, counted and bounded with the rest).
    """

    route: str
    options: tuple[tuple[str, Hashable], ...] = ()
    batchable: bool = True

    @classmethod
    def of(cls, route: str, options: dict[str, Any], *, batchable: bool = True) -> BatchKey:
        return cls(route, tuple(sorted(options.items())), batchable)

    def options_dict(self) -> dict[str, Any]:
        return dict(self.options)


class QueueFull(Exception):
    """The batcher's queue holds ``max_queue`` requests already."""

    def __init__(self, depth: int, retry_after_s: int) -> None:
        super().__init__(f"the server is busy ({depth} requests waiting); retry after {retry_after_s} s")
        self.retry_after_s = retry_after_s


@dataclass
class _Job:
    key: BatchKey
    item: Any
    future: asyncio.Future
    arrived: float = field(default=0.0)


class Batcher:
    """Groups ``submit``-ted items into calls of ``run``.

    Args:
        run: the batch call (an async function; e.g. one ``AsyncPipeline`` call).
        max_batch: most items per call (>= 1).
        max_wait_ms: how long the oldest waiting item may wait for others to join (>= 0).
        max_queue: most items waiting (>= 1); beyond it ``submit`` raises ``QueueFull``.
        metrics: where batches are counted (optional).

    Start it inside the running event loop (``start()``), stop it with ``await stop()``.
    """

    def __init__(self, run: BatchRunner, *, max_batch: int = 16, max_wait_ms: float = 10.0, max_queue: int = 256,
                 metrics: Metrics | None = None) -> None:
        if max_batch < 1 or max_queue < 1 or max_wait_ms < 0:
            raise ValueError(f"need max_batch >= 1, max_queue >= 1, max_wait_ms >= 0; got {max_batch}, "
                             f"{max_queue}, {max_wait_ms}")
        self._run = run
        self.max_batch, self.max_queue, self.max_wait_s = max_batch, max_queue, max_wait_ms / 1000
        self.metrics = metrics if metrics is not None else Metrics()
        self._pending: deque[_Job] = deque()
        self._arrived: asyncio.Event | None = None
        self._task: asyncio.Task | None = None
        self._seconds_per_batch = 0.0  # a running mean, for Retry-After

    @property
    def depth(self) -> int:
        """Items waiting (not yet in a running call)."""
        return len(self._pending)

    def start(self) -> None:
        """Start the dispatching task in the running event loop."""
        if self._task is None:
            self._arrived = asyncio.Event()
            self._task = asyncio.get_running_loop().create_task(self._dispatch(), name="blip2-batcher")

    async def stop(self) -> None:
        """Stop dispatching; items still waiting fail with RuntimeError (a server stops the
        batcher after its in-flight requests finished, so normally there are none)."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass
        while self._pending:
            job = self._pending.popleft()
            if not job.future.done():
                job.future.set_exception(RuntimeError("the server is shutting down"))

    async def submit(self, key: BatchKey, item: Any) -> Any:
        """The result for ``item`` once its batch ran (or the exception the call raised for it)."""
        if self._task is None or self._arrived is None:
            raise RuntimeError("the batcher is not running: call start() first")
        if len(self._pending) >= self.max_queue:
            raise QueueFull(len(self._pending), self.retry_after_s())
        loop = asyncio.get_running_loop()
        job = _Job(key, item, loop.create_future(), loop.time())
        self._pending.append(job)
        self._arrived.set()
        return await job.future

    def retry_after_s(self) -> int:
        """Seconds until the queue has likely drained (>= 1)."""
        batches = math.ceil(len(self._pending) / self.max_batch)
        return max(1, math.ceil(batches * self._seconds_per_batch))

    # -- the dispatching task -----------------------------------------------------------
    async def _dispatch(self) -> None:
        assert self._arrived is not None
        loop = asyncio.get_running_loop()
        while True:
            self._drop_cancelled()
            if not self._pending:
                self._arrived.clear()
                await self._arrived.wait()
                continue
            first = self._pending[0]
            limit = self.max_batch if first.key.batchable else 1
            deadline = first.arrived + self.max_wait_s
            while self._count(first.key, limit) < limit and (left := deadline - loop.time()) > 0:
                self._arrived.clear()
                try:
                    await asyncio.wait_for(self._arrived.wait(), left)
                except TimeoutError:
                    break
            jobs = self._take(first.key, limit)
            if jobs:
                started = loop.time()
                await self._run_jobs(first.key, jobs)
                self._seconds_per_batch = 0.8 * self._seconds_per_batch + 0.2 * (loop.time() - started)

    def _drop_cancelled(self) -> None:
        while self._pending and self._pending[0].future.done():
            self._pending.popleft()

    def _count(self, key: BatchKey, limit: int) -> int:
        count = 0
        for job in self._pending:
            if job.key == key and not job.future.done():
                count += 1
                if count >= limit:
                    break
        return count

    def _take(self, key: BatchKey, limit: int) -> list[_Job]:
        taken: list[_Job] = []
        kept: deque[_Job] = deque()
        for job in self._pending:
            if job.future.done():
                continue  # its client went away
            if job.key == key and len(taken) < limit:
                taken.append(job)
            else:
                kept.append(job)
        self._pending = kept
        return taken

    async def _run_jobs(self, key: BatchKey, jobs: list[_Job]) -> None:
        self.metrics.batch_run(len(jobs))
        try:
            results = await self._run(key, [job.item for job in jobs])
            if len(results) != len(jobs):
                raise RuntimeError(f"a batch of {len(jobs)} gave {len(results)} results")
        except Exception as error:  # noqa: BLE001 - handed to the requests
            if len(jobs) == 1:
                _settle(jobs[0], error=error)
                return
            for job in jobs:  # one bad request must not fail the others
                await self._run_jobs(key, [job])
            return
        for job, result in zip(jobs, results):
            _settle(job, result=result)


def _settle(job: _Job, *, result: Any = None, error: BaseException | None = None) -> None:
    if job.future.done():
        return
    if error is not None:
        job.future.set_exception(error)
    else:
        job.future.set_result(result)
