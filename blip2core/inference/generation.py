"""``GenerationSettings``: the decoding options of ``caption`` / ``answer``, checked once, turned into
transformers ``generate`` keyword arguments.

Defaults are BLIP-2's (LAVIS): captions beam 5, at most 30 new tokens, at least 1; VQA answers
at most 10 new tokens with ``length_penalty=0`` (see ``VQA_DEFAULTS``).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from blip2core.errors import InputError


@dataclass(frozen=True)
class GenerationSettings:
    """How to decode.

    Attributes:
        num_beams: beam width (1 = greedy, or plain sampling with ``do_sample``).
        max_new_tokens, min_new_tokens: bounds on the generated length, in tokens.
        length_penalty: beam score = log-prob / length ** length_penalty.
        do_sample: sample (nucleus, ``top_p``; ``temperature``) instead of searching.
        repetition_penalty: transformers' penalty (> 1 discourages tokens already in the sequence,
            the prompt included, as in ``Blip2ForConditionalGeneration.generate``).
        num_return_sequences: outputs per input (<= ``num_beams`` when not sampling).
        seed: with ``do_sample``, the seed of a private random state: same seed, same text.
    """

    num_beams: int = 5
    max_new_tokens: int = 30
    min_new_tokens: int = 1
    length_penalty: float = 1.0
    do_sample: bool = False
    top_p: float = 0.9
    temperature: float = 1.0
    repetition_penalty: float = 1.0
    num_return_sequences: int = 1
    seed: int | None = None

    def __post_init__(self) -> None:
        _check_int("num_beams", self.num_beams, 1)
        _check_int("max_new_tokens", self.max_new_tokens, 1)
        _check_int("min_new_tokens", self.min_new_tokens, 0)
        _check_int("num_return_sequences", self.num_return_sequences, 1)
        if self.min_new_tokens > self.max_new_tokens:
            raise InputError(
                f"min_new_tokens ({self.min_new_tokens}) must not exceed max_new_tokens ({self.max_new_tokens})"
            )
        if not 0 < self.top_p <= 1:
            raise InputError(f"top_p must be in (0, 1], got {self.top_p}")
        if not self.temperature > 0:
            raise InputError(f"temperature must be > 0, got {self.temperature}")
        if not self.repetition_penalty > 0:
            raise InputError(f"repetition_penalty must be > 0, got {self.repetition_penalty}")
        if not self.do_sample and self.num_return_sequences > self.num_beams:
            raise InputError(
                f"num_return_sequences ({self.num_return_sequences}) must not exceed num_beams ({self.num_beams}) "
                "without do_sample=True"
            )
        if self.seed is not None and (isinstance(self.seed, bool) or not isinstance(self.seed, int)):
            raise TypeError(f"seed must be an int or None, got {type(self.seed).__name__}")

    def with_(self, **changes: Any) -> GenerationSettings:
        return replace(self, **changes)

    @property
    def expand_size(self) -> int:
        """How many rows transformers runs per input: max(num_beams, num_return_sequences)."""
        return max(self.num_beams, self.num_return_sequences)

    def generate_kwargs(self, eos_token_ids: list[int], pad_token_id: int | None) -> dict[str, Any]:
        """Keyword arguments for transformers ``generate`` (sampling options only when sampling,
        ``length_penalty`` only with beams, so transformers does not warn about unused ones)."""
        kwargs: dict[str, Any] = {
            "num_beams": self.num_beams,
            "max_new_tokens": self.max_new_tokens,
            "min_new_tokens": self.min_new_tokens,
            "do_sample": self.do_sample,
            "repetition_penalty": self.repetition_penalty,
            "num_return_sequences": self.num_return_sequences,
        }
        if self.num_beams > 1:
            kwargs["length_penalty"] = self.length_penalty
        if self.do_sample:
            kwargs["top_p"] = self.top_p
            kwargs["temperature"] = self.temperature
        if eos_token_ids:
            kwargs["eos_token_id"] = list(eos_token_ids)
        if pad_token_id is not None:
            kwargs["pad_token_id"] = pad_token_id
        return kwargs


def _check_int(name: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < minimum:
        raise InputError(f"{name} must be >= {minimum}, got {value}")


#: BLIP-2 captioning defaults (LAVIS ``generate``)
CAPTION_DEFAULTS = GenerationSettings()
#: BLIP-2 zero-shot VQA defaults (LAVIS ``predict_answers`` for OPT)
VQA_DEFAULTS = GenerationSettings(max_new_tokens=10, length_penalty=0.0)
