"""``ServeSettings``: the server's knobs (the ``blip2 serve`` flags), checked once."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ServeSettings:
    """How the server batches and what it accepts.

    Attributes:
        model: the name ``/health`` reports (what ``--model`` was).
        max_batch: most requests per pipeline call.
        max_wait_ms: how long the first request of a batch waits for others.
        max_queue: most requests waiting for the model; beyond it: 503 + Retry-After.
        max_body_mb: largest request body (MiB); beyond it: 413.
        allow_url_images: whether an image may be an http(s) URL the server downloads.
        max_new_tokens: the most tokens a request may ask for (caption, answer, chat).
        max_beams: the widest beam search a request may ask for.
        max_texts: the most texts of one match request.
    """

    model: str = "unnamed"
    max_batch: int = 16
    max_wait_ms: float = 10.0
    max_queue: int = 256
    max_body_mb: float = 20.0
    allow_url_images: bool = False
    max_new_tokens: int = 256
    max_beams: int = 8
    max_texts: int = 256

    def __post_init__(self) -> None:
        for name in ("max_batch", "max_queue", "max_new_tokens", "max_beams", "max_texts"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an int >= 1, got {value!r}")
        if not self.max_wait_ms >= 0:
            raise ValueError(f"max_wait_ms must be >= 0, got {self.max_wait_ms!r}")
        if not self.max_body_mb > 0:
            raise ValueError(f"max_body_mb must be > 0, got {self.max_body_mb!r}")

    @property
    def max_body_bytes(self) -> int:
        return int(self.max_body_mb * 1024 * 1024)
