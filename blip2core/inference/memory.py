"""Batches that fit in memory: a batch that runs out of memory is split in halves and retried.

``BatchFitter(batch_size)`` runs a model call over the rows of a batch in slices of at most
``size`` rows; when a slice runs out of memory (``torch.OutOfMemoryError`` on a GPU, ``MemoryError``
or the CPU allocator's "can't allocate memory" RuntimeError) the size is halved, for this slice
and every later one, and a ``BatchSizeWarning`` says which batch size fits. One row that does not
fit is an ``InputError`` naming what was tried. Out of memory in the middle of a call changes no
model state (inference only), so retrying a slice gives what one smaller batch gives.
"""

from __future__ import annotations

import gc
import warnings
from collections.abc import Callable
from typing import TypeVar

import torch

from blip2core.errors import Blip2Warning, InputError

T = TypeVar("T")

#: what torch's CPU allocator and a few kernels say when an allocation fails
_OOM_TEXTS = ("not enough memory", "can't allocate memory", "out of memory", "cannot allocate memory")


class BatchSizeWarning(Blip2Warning):
    """A batch ran out of memory and was split; the message names the batch size that fits."""


def is_out_of_memory(exc: BaseException) -> bool:
    """True for the errors an allocation that does not fit raises (GPU or CPU)."""
    if isinstance(exc, (MemoryError, torch.OutOfMemoryError)):
        return True
    return isinstance(exc, RuntimeError) and any(text in str(exc).lower() for text in _OOM_TEXTS)


class BatchFitter:
    """Runs calls over slices of at most ``size`` rows, halving ``size`` on out-of-memory.

    Args:
        batch_size: the rows a slice starts with (the user's ``--batch-size``).
        option: how the user sets it, for the messages (``"--batch-size"``, ``"batch_size="``).
    """

    def __init__(self, batch_size: int, option: str = "--batch-size") -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.requested = batch_size
        self.size = batch_size
        self.option = option

    def run(self, call: Callable[[int, int], T], rows: int) -> list[T]:
        """``call(start, stop)`` over consecutive slices covering ``rows`` rows; their results in order."""
        results: list[T] = []
        start = 0
        while start < rows:
            stop = min(rows, start + self.size)
            try:
                results.append(call(start, stop))
            except Exception as exc:
                if not is_out_of_memory(exc):
                    raise
                self._shrink(stop - start, exc)
                continue  # the same rows again, in a smaller slice
            start = stop
        return results

    def _shrink(self, tried: int, exc: BaseException) -> None:
        gc.collect()
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            torch.cuda.empty_cache()
        if tried <= 1:
            raise InputError(
                f"out of memory on a single image ({type(exc).__name__}: {' '.join(str(exc).split())[:200]}); "
                "use a smaller model, a lower precision (--dtype) or another device"
            ) from None
        self.size = tried // 2
        warnings.warn(
            f"out of memory on a batch of {tried}; going on with {self.size} (pass {self.option} {self.size} "
            "or less to avoid the retry)",
            BatchSizeWarning,
            stacklevel=3,
        )
