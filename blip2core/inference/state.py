"""What makes the inference API safe to call from several threads (a web server's workers).

- Each pipeline has one re-entrant lock: its model calls (tokenisation, encoding, generation) run
  one at a time. Image decoding happens before the lock is taken, so it overlaps.
- Sampling draws from torch's process-wide random generator, so every sampling call (of any
  pipeline) also holds one process-wide lock; with a ``seed`` the generator is re-seeded inside
  ``torch.random.fork_rng``, which restores the caller's random state afterwards.

Concurrent calls therefore give what the same calls give one after another.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from blip2core.pipeline import Pipeline

_LOCKS: weakref.WeakKeyDictionary[Pipeline, threading.RLock] = weakref.WeakKeyDictionary()
_LOCKS_GUARD = threading.Lock()
_RNG_LOCK = threading.RLock()


def pipeline_lock(pipe: Pipeline) -> threading.RLock:
    """The lock of this pipeline (created on first use; forgotten with the pipeline)."""
    with _LOCKS_GUARD:
        lock = _LOCKS.get(pipe)
        if lock is None:
            lock = _LOCKS[pipe] = threading.RLock()
        return lock


@contextmanager
def exclusive(pipe: Pipeline, *, sampling: bool = False, seed: int | None = None) -> Iterator[None]:
    """Hold the pipeline's lock, no autograd; when ``sampling``, also the random-state lock, and
    with ``seed`` a private, seeded random state (the caller's state is restored on exit)."""
    with pipeline_lock(pipe), torch.no_grad():
        if not sampling and seed is None:
            yield
            return
        with _RNG_LOCK:
            if seed is None:
                yield
                return
            device = pipe.device
            devices = []
            if device.type == "cuda":
                devices = [device.index if device.index is not None else torch.cuda.current_device()]
            with torch.random.fork_rng(devices=devices):
                torch.manual_seed(seed)
                yield
