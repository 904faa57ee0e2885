"""What ``GET /metrics`` reports: request and error counts, batches and their sizes, latency
quantiles over a sliding window, and the batcher's queue depth."""

from __future__ import annotations

import math
import threading
from collections import Counter, deque

#: latencies kept for the quantiles (the most recent ones)
LATENCY_WINDOW = 2048


class Metrics:
    """Counters shared by the app and the batcher (thread-safe; every method is cheap)."""

    def __init__(self, window: int = LATENCY_WINDOW) -> None:
        self._lock = threading.Lock()
        self.requests = 0
        self.errors = 0
        self.batches = 0
        self.batch_sizes: Counter[int] = Counter()
        self._latencies_ms: deque[float] = deque(maxlen=window)

    def request_done(self, latency_ms: float, *, error: bool) -> None:
        """One API request answered (``error``: with a 4xx / 5xx status) after ``latency_ms``."""
        with self._lock:
            self.requests += 1
            self.errors += int(error)
            self._latencies_ms.append(latency_ms)

    def batch_run(self, size: int) -> None:
        """One pipeline call made for ``size`` requests."""
        with self._lock:
            self.batches += 1
            self.batch_sizes[size] += 1

    def snapshot(self, queue_depth: int) -> dict:
        """The ``/metrics`` document (latency quantiles: nearest rank; 0.0 before any request)."""
        with self._lock:
            latencies = sorted(self._latencies_ms)
            return {
                "requests": self.requests,
                "errors": self.errors,
                "queue_depth": queue_depth,
                "batches": self.batches,
                "batch_size_histogram": {str(size): count for size, count in sorted(self.batch_sizes.items())},
                "latency_ms": {f"p{q}": round(quantile(latencies, q / 100), 3) for q in (50, 90, 99)},
            }


def quantile(ordered: list[float], q: float) -> float:
    """The nearest-rank ``q`` quantile (0 < q <= 1) of an ascending list; 0.0 for an empty one."""
    if not ordered:
        return 0.0
    rank = math.ceil(round(q * len(ordered), 9))  # round: 0.9 * 10 is 9.000000000000002
    return ordered[min(max(rank, 1), len(ordered)) - 1]
