"""``chat``: a reply to a conversation about one image, whole or streamed; ``Conversation`` keeps
the history and the image's encoding between turns.

Layout of the language model's input (Q query tokens, T prompt tokens)::

    [ soft prompt (Q) | prompt (T) ]  -> generate -> reply

The prompt is the messages in the tokenizer's chat template, or BLIP-2's "Question: ... Answer:"
form when it has none (``blip2core.inference.chat_text``); an encoder-decoder (FlanT5) reads both
in its encoder. The image is encoded once per ``ChatImage``: the vision encoder runs once, the soft
prompt is kept (an instruction-aware bridge re-reads its vision tokens with each new question),
and a decoder-only LLM with ``SupportsPrefixCache`` keeps its key/value cache over the soft prompt.

Streaming runs ``generate`` in a worker thread with a streamer (any transformers-style
``generate`` that takes ``streamer`` and ``stopping_criteria``); stop strings go to it as
``stop_strings`` with the tokenizer, so generation ends there, and the reply is cut before them.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from blip2core.encoding import ImageEncoding
from blip2core.errors import InputError
from blip2core.inference import textgen
from blip2core.inference.chat_text import (
    ReplyText,
    chat_prompt,
    check_messages,
    check_stops,
    final_reply,
    has_chat_template,
)
from blip2core.inference.generation import GenerationSettings
from blip2core.inference.images import load_images
from blip2core.inference.prefix_cache import build_prefix_cache, supports_prefix_cache
from blip2core.inference.state import exclusive

if TYPE_CHECKING:
    from blip2core.pipeline import Pipeline

#: chat decodes greedily by default (beams cannot stream) and allows longer replies than ``answer``
CHAT_DEFAULTS = GenerationSettings(num_beams=1, max_new_tokens=128)


@dataclass
class ChatImage:
    """One image encoded for a conversation (batch 1).

    Attributes:
        vision_tokens: [1, N, C] the frozen encoder's output.
        encoding: the ``ImageEncoding`` with the soft prompt [1, Q, D]; None for an
            instruction-aware bridge, whose soft prompt depends on each question.
        prefix_cache: the LLM's key/value cache over the soft prompt, built on first use (None
            until then, or when the LLM / bridge cannot use one).
    """

    vision_tokens: torch.Tensor
    encoding: ImageEncoding | None
    prefix_cache: Any = field(default=None, repr=False)


def encode_chat_image(pipe: Pipeline, image: Any) -> ChatImage:
    """One image (a path, bytes, PIL image, array, tensor: what ``caption`` takes) -> ChatImage."""
    if isinstance(image, ChatImage):
        return image
    pixel_values = load_images(pipe, image)
    if pixel_values.shape[0] != 1:
        raise InputError(f"a chat is about one image, got {pixel_values.shape[0]}")
    with exclusive(pipe):
        vision_tokens = pipe.encode_vision(pixel_values)
        encoding = None if pipe.reads_instruction else pipe.bridge_tokens(vision_tokens)
        return ChatImage(vision_tokens, encoding)


def chat(
    pipe: Pipeline,
    image: Any,
    messages: Any,
    *,
    stream: bool = False,
    stop: str | Sequence[str] | None = None,
    prefix_cache: bool = True,
    num_beams: int = CHAT_DEFAULTS.num_beams,
    max_new_tokens: int = CHAT_DEFAULTS.max_new_tokens,
    min_new_tokens: int = CHAT_DEFAULTS.min_new_tokens,
    length_penalty: float = CHAT_DEFAULTS.length_penalty,
    do_sample: bool = False,
    top_p: float = CHAT_DEFAULTS.top_p,
    temperature: float = CHAT_DEFAULTS.temperature,
    repetition_penalty: float = CHAT_DEFAULTS.repetition_penalty,
    num_return_sequences: int = 1,
    seed: int | None = None,
) -> str | Iterator[str]:
    """The assistant's reply to ``messages`` about ``image``.

    Args:
        image: one image (what ``caption`` takes), or a ``ChatImage`` to reuse its encoding.
        messages: ``[{"role": "system" | "user" | "assistant", "content": str}, ...]``, the last
            one the user's; earlier turns are part of the prompt.
        stream: return an iterator of text pieces as they are generated (needs ``num_beams=1``);
            they join to the reply ``stream=False`` gives.
        stop: a string or strings that end the reply (it is cut before them).
        prefix_cache: reuse the LLM's cache of the image's soft prompt (same reply either way).
        num_beams ... seed: decoding, as for ``caption`` / ``answer`` (``GenerationSettings``);
            default greedy, <= 128 new tokens. A chat gives one reply: num_return_sequences 1.

    Returns:
        The reply (special tokens dropped, whitespace stripped), or an iterator of its pieces.
        Checks happen before this returns, also when streaming.
    """
    settings = GenerationSettings(
        num_beams=num_beams, max_new_tokens=max_new_tokens, min_new_tokens=min_new_tokens,
        length_penalty=length_penalty, do_sample=do_sample, top_p=top_p, temperature=temperature,
        repetition_penalty=repetition_penalty, num_return_sequences=num_return_sequences, seed=seed,
    )
    if num_return_sequences != 1:
        raise InputError(f"a chat gives one reply: num_return_sequences must be 1, got {num_return_sequences}")
    if stream and num_beams != 1:
        raise InputError(f"streaming needs num_beams=1 (beam search only knows its reply at the end), got {num_beams}")
    checked = check_messages(messages)
    stops = check_stops(stop)
    tokenizer = textgen.llm_tokenizer(pipe)
    chat_image = encode_chat_image(pipe, image)
    prompt = chat_prompt(tokenizer, checked)
    instruction = next(m["content"] for m in reversed(checked) if m["role"] == "user")
    turn = _Turn(pipe, chat_image, prompt, instruction, settings, stops, prefix_cache)
    if stream:
        return turn.stream()
    return turn.reply()


class _Turn:
    """One reply's generation: the prompt tokenised, the soft prompt for it, the generate call."""

    def __init__(
        self, pipe: Pipeline, image: ChatImage, prompt: str, instruction: str, settings: GenerationSettings,
        stops: list[str], use_cache: bool,
    ) -> None:
        self.pipe, self.image, self.settings, self.stops = pipe, image, settings, stops
        self.tokenizer = textgen.llm_tokenizer(pipe)
        self.use_cache = use_cache and not pipe.reads_instruction and supports_prefix_cache(pipe.require_llm())
        if has_chat_template(self.tokenizer):  # the template writes its own special tokens
            encoded = self.tokenizer([prompt], add_special_tokens=False, return_tensors="pt")
            self.ids = encoded["input_ids"].to(pipe.device)
            self.mask = encoded["attention_mask"].to(pipe.device)
        else:
            self.ids, self.mask = textgen.tokenize_prompts(pipe, [prompt])
        if image.encoding is not None:
            self.encoding = image.encoding
        else:  # an instruction-aware bridge: this question's soft prompt, from the kept vision tokens
            with exclusive(pipe):
                self.encoding = pipe.bridge_tokens(image.vision_tokens, [instruction])
        queries = self.encoding.llm_inputs.shape[1]
        prompt_length = self.ids.shape[1]
        textgen.check_length(pipe.require_llm(), queries + prompt_length, prompt_length, settings.max_new_tokens)

    def _generate(self, **extra: Any) -> torch.Tensor:
        """New ids [1, L]; call under ``exclusive``."""
        encoding = self.encoding
        cache = None
        if self.use_cache:
            if self.image.prefix_cache is None:
                self.image.prefix_cache = build_prefix_cache(self.pipe.require_llm(), encoding.llm_inputs)
            cache = self.image.prefix_cache
        if self.stops:
            extra = {**extra, "stop_strings": self.stops, "tokenizer": self.tokenizer}
        return textgen.generate_ids(self.pipe, encoding, self.ids, self.mask, self.settings, prefix_cache=cache,
                                    extra_kwargs=extra)

    def reply(self) -> str:
        with exclusive(self.pipe, sampling=self.settings.do_sample, seed=self.settings.seed):
            new_ids = self._generate()
        return final_reply(self.tokenizer.decode(new_ids[0].tolist(), skip_special_tokens=True), self.stops)

    def stream(self) -> Iterator[str]:
        from transformers import StoppingCriteriaList

        tokens = _TokenQueue()
        cancel = threading.Event()

        def work() -> None:
            try:
                with exclusive(self.pipe, sampling=self.settings.do_sample, seed=self.settings.seed):
                    self._generate(streamer=tokens, stopping_criteria=StoppingCriteriaList([_Cancelled(cancel)]))
            except BaseException as exc:  # handed to the reader, raised there
                tokens.fail(exc)
            finally:
                tokens.end()

        worker = threading.Thread(target=work, name="blip2-chat-generate", daemon=True)
        return _pieces(worker, tokens, cancel, ReplyText(self.tokenizer, self.stops))


def _pieces(worker: threading.Thread, tokens: _TokenQueue, cancel: threading.Event, text: ReplyText) -> Iterator[str]:
    """The generator a streamed chat returns: starts the worker on first use, stops it when closed."""
    worker.start()
    try:
        for ids in tokens:
            piece = text.add(ids)
            if piece:
                yield piece
            if text.stopped:
                break
        tokens.raise_failure()
        rest = text.finish()
        if rest:
            yield rest
    finally:
        cancel.set()
        worker.join()


class _TokenQueue:
    """A transformers streamer (``put`` / ``end``) that hands the generated ids to the reading
    thread; the first ``put`` (the prompt, or an encoder-decoder's start token) is skipped."""

    _END = object()

    def __init__(self) -> None:
        self._queue: queue.Queue = queue.Queue()
        self._prompt_seen = False
        self._failure: BaseException | None = None

    def put(self, value: torch.Tensor) -> None:
        if not self._prompt_seen:
            self._prompt_seen = True
            return
        self._queue.put(value.reshape(-1).tolist())

    def end(self) -> None:
        self._queue.put(self._END)

    def fail(self, exc: BaseException) -> None:
        self._failure = exc

    def raise_failure(self) -> None:
        if self._failure is not None:
            raise self._failure

    def __iter__(self) -> Iterator[list[int]]:
        while (item := self._queue.get()) is not self._END:
            yield item


class _Cancelled:  # a transformers StoppingCriteria by shape
    """A stopping criterion: stop every row once ``event`` is set (the reader went away)."""

    def __init__(self, event: threading.Event) -> None:
        self.event = event

    def __call__(self, input_ids: torch.Tensor, scores: Any, **kwargs: Any) -> torch.Tensor:
        return torch.full((input_ids.shape[0],), self.event.is_set(), dtype=torch.bool, device=input_ids.device)


class Conversation:
    """A multi-turn chat about one image: ``send`` adds the user's message and the reply to the
    history; the image is encoded once (``set_image`` changes it, the history stays; ``reset``
    clears the history).

    ``options``: defaults for every ``send`` (``stop``, ``max_new_tokens``, ... as ``chat``).
    """

    def __init__(self, pipe: Pipeline, image: Any, *, system: str | None = None, **options: Any) -> None:
        self.pipe = pipe
        self.system = system
        self.options = options
        self.messages: list[dict[str, str]] = []
        self.image = encode_chat_image(pipe, image)

    def set_image(self, image: Any) -> None:
        """Talk about another image from now on (it is encoded here, once)."""
        self.image = encode_chat_image(self.pipe, image)

    def reset(self) -> None:
        """Forget the earlier turns."""
        self.messages = []

    def send(self, text: str, *, stream: bool = False, **options: Any) -> str | Iterator[str]:
        """The reply to ``text``, after the earlier turns; the turn is kept once the reply is
        complete (a streamed reply: when its iterator is exhausted or closed)."""
        system = [{"role": "system", "content": self.system}] if self.system else []
        asked = {"role": "user", "content": text}
        result = chat(self.pipe, self.image, [*system, *self.messages, asked], stream=stream,
                      **{**self.options, **options})
        if not stream:
            self.messages += [asked, {"role": "assistant", "content": result}]
            return result
        return self._recorded(asked, result)

    def _recorded(self, asked: dict[str, str], pieces: Iterator[str]) -> Iterator[str]:
        sent: list[str] = []
        try:
            for piece in pieces:
                sent.append(piece)
                yield piece
        except GeneratorExit:  # the reader stopped early: keep what it read
            if sent:
                self.messages += [asked, {"role": "assistant", "content": "".join(sent)}]
            raise
        self.messages += [asked, {"role": "assistant", "content": "".join(sent)}]
