"""Errors of image loading; each names the input it is about."""

from __future__ import annotations

from blip2core.errors import Blip2Error


class ImageLoadError(Blip2Error):
    """An input could not be turned into an image.

    Attributes:
        source: what the input was: its path or URL, or ``"bytes[3]"`` / ``"item 3"`` for an
            anonymous input at position 3 of the batch.
        reason: what went wrong, written for the person who has to fix the input.
    """

    def __init__(self, source: str, reason: str) -> None:
        self.source = source
        self.reason = reason
        super().__init__(f"{source}: {reason}")

    def __reduce__(self):  # keep (source, reason) through pickling (DataLoader workers)
        return (type(self), (self.source, self.reason))


class ImageTooLargeError(ImageLoadError):
    """The image has more pixels than ``max_image_pixels`` (a possible decompression bomb)."""


class BatchLoadError(ImageLoadError):
    """Several inputs of one batch failed; ``failures`` lists (index, source, message) for each."""

    def __init__(self, failures: list, total: int) -> None:
        self.failures = list(failures)
        self.total = total
        shown = "; ".join(f"{f.name}: {f.message}" for f in self.failures[:5])
        more = f"; and {len(self.failures) - 5} more" if len(self.failures) > 5 else ""
        super().__init__(f"{len(self.failures)} of {total} images", f"could not be loaded: {shown}{more}")

    def __reduce__(self):
        return (type(self), (self.failures, self.total))
