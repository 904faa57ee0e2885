"""Fair timing on a shared machine: the variants compared alternate, after a warm-up, and medians are kept.

Every benchmark of this folder times through ``interleaved``: a burst of load from other processes
then hits every variant alike instead of whichever happened to run during it.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Timing:
    """Seconds of each timed call of one variant (warm-up excluded), and what its last call returned
    (rows compare the two sides' outputs from the timed calls themselves: no extra call)."""

    samples: tuple[float, ...]
    output: object = field(default=None, compare=False, repr=False)

    @property
    def median(self) -> float:
        return statistics.median(self.samples)


def interleaved(
    calls: dict[str, Callable[[], object]],
    rounds: int,
    *,
    warmup: int = 1,
    sync: Callable[[], None] | None = None,
) -> dict[str, Timing]:
    """Time each call ``rounds`` times in alternation (A B A B ..., the order rotating every round)
    after ``warmup`` untimed calls of each; returns each call's ``Timing`` (read ``.median``, and
    ``.output``: what the last timed call returned).

    ``sync`` runs before each clock read (``torch.cuda.synchronize`` on a GPU).
    """
    if rounds < 1:
        raise ValueError(f"rounds must be >= 1, got {rounds}")
    sync = sync or (lambda: None)
    names = list(calls)
    for _ in range(warmup):
        for call in calls.values():
            call()
    sync()
    times: dict[str, list[float]] = {name: [] for name in names}
    outputs: dict[str, object] = {}
    for index in range(rounds):
        shift = index % len(names)
        for name in names[shift:] + names[:shift]:
            start = time.perf_counter()
            outputs[name] = calls[name]()
            sync()
            times[name].append(time.perf_counter() - start)
    return {name: Timing(tuple(values), outputs[name]) for name, values in times.items()}


def median_seconds(calls: dict[str, Callable[[], object]], rounds: int, **options) -> dict[str, float]:
    """``interleaved`` reduced to each call's median seconds."""
    return {name: timing.median for name, timing in interleaved(calls, rounds, **options).items()}


def once(call: Callable[[], object], sync: Callable[[], None] | None = None) -> tuple[float, object]:
    """(seconds, result) of one call: for what happens once per process (loading, a first call)."""
    start = time.perf_counter()
    result = call()
    if sync is not None:
        sync()
    return time.perf_counter() - start, result
