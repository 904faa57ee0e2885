"""The text side of a chat: messages checked and turned into the prompt, stop strings applied, and a
reply decoded piece by piece while it is generated.

Prompt forms:

- the language model's tokenizer has a chat template (SmolLM2-Instruct, Vicuna, ...): the template
  over the messages, with the generation prompt added (``apply_chat_template``);
- it has none (FlanT5, OPT): BLIP-2's "Question: ... Answer:" form, every earlier turn included
  (the BLIP-2 README's chat example)::

      [system ]Question: q1 Answer: a1. Question: q2 Answer:
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from blip2core.errors import InputError

ROLES = ("system", "user", "assistant")
#: one earlier turn of the "Question: ... Answer:" form; the question being asked ends in "Answer:"
QA_TURN = "Question: {} Answer: {}"
QA_QUESTION = "Question: {} Answer:"


def check_messages(messages: Any) -> list[dict[str, str]]:
    """messages: a list of ``{"role": "system" | "user" | "assistant", "content": str}``, the last
    one the user's; returns plain copies. Raises InputError naming the bad message."""
    if isinstance(messages, (str, Mapping)) or not isinstance(messages, Sequence):
        raise InputError(
            f"messages must be a list of {{'role', 'content'}} dicts, got {type(messages).__name__}"
        )
    if not messages:
        raise InputError("messages is empty: give at least one {'role': 'user', 'content': ...} message")
    out = []
    for i, message in enumerate(messages):
        if not isinstance(message, Mapping) or "role" not in message or "content" not in message:
            raise InputError(f"message {i} must be a dict with 'role' and 'content', got {message!r}")
        role, content = message["role"], message["content"]
        if role not in ROLES:
            raise InputError(f"message {i}: role must be one of {', '.join(ROLES)}, got {role!r}")
        if not isinstance(content, str):
            raise InputError(f"message {i}: content must be a string, got {type(content).__name__}")
        if role == "user" and not content.strip():
            raise InputError(f"message {i}: the user's message is empty")
        out.append({"role": role, "content": content})
    if out[-1]["role"] != "user":
        raise InputError(f"the last message must be the user's (the one to reply to), got role {out[-1]['role']!r}")
    return out


def has_chat_template(tokenizer: Any) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def chat_prompt(tokenizer: Any, messages: list[dict[str, str]]) -> str:
    """The prompt text for checked ``messages``: the tokenizer's chat template when it has one,
    else the "Question: ... Answer:" form (module docstring)."""
    if has_chat_template(tokenizer):
        return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    return question_answer_prompt(messages)


def question_answer_prompt(messages: list[dict[str, str]]) -> str:
    """System messages first, then each user message as ``Question: ...`` and the assistant's reply
    after ``Answer:`` (ended with a full stop unless it has one), joined by spaces."""
    parts = [m["content"].strip() for m in messages if m["role"] == "system" and m["content"].strip()]
    question: str | None = None
    for message in messages:
        content = message["content"].strip()
        if message["role"] == "user":
            if question is not None:  # two user turns in a row: the first gets no answer
                parts.append(QA_QUESTION.format(question))
            question = content
        elif message["role"] == "assistant":
            answer = content if content.endswith((".", "!", "?")) else f"{content}."
            parts.append(QA_TURN.format(question, answer) if question is not None else answer)
            question = None
    parts.append(QA_QUESTION.format(question))
    return " ".join(parts)


def check_stops(stop: str | Sequence[str] | None) -> list[str]:
    """``stop``: one string, a list of them, or None -> a list of non-empty strings."""
    if stop is None:
        return []
    stops = [stop] if isinstance(stop, str) else list(stop) if isinstance(stop, Sequence) else None
    if stops is None or not all(isinstance(s, str) for s in stops):
        raise InputError(f"stop must be a string or a list of strings, got {stop!r}")
    if any(not s for s in stops):
        raise InputError("stop strings must not be empty")
    return stops


def final_reply(text: str, stops: list[str]) -> str:
    """A decoded reply cut before the first stop string it contains, surrounding whitespace stripped."""
    text = text.strip()
    cut = first_stop(text, stops)
    return (text[:cut] if cut is not None else text).strip()


def first_stop(text: str, stops: list[str]) -> int | None:
    """Where the earliest stop string starts in text, or None."""
    found = [i for i in (text.find(s) for s in stops) if i >= 0]
    return min(found) if found else None


def held_back(text: str, stops: list[str]) -> int:
    """How many characters at the end of text could be the start of a stop string (not sent yet)."""
    longest = 0
    for stop in stops:
        for size in range(min(len(stop) - 1, len(text)), longest, -1):
            if stop.startswith(text[-size:]):
                longest = size
                break
    return longest


class ReplyText:
    """Decodes a reply while its token ids arrive; ``add`` returns the text that is final so far.

    A piece is sent only when no later token can change it: an incomplete UTF-8 character, trailing
    whitespace (stripped at the end) and a tail that could begin a stop string are held back. The
    pieces join to ``final_reply`` of the whole decoded text, what the non-streamed reply is.
    """

    def __init__(self, tokenizer: Any, stops: list[str]) -> None:
        self.tokenizer = tokenizer
        self.stops = stops
        self.ids: list[int] = []
        self.sent = ""
        self.stopped = False

    def text(self) -> str:
        return self.tokenizer.decode(self.ids, skip_special_tokens=True)

    def add(self, ids: Sequence[int]) -> str:
        """New token ids -> the next piece ("" when nothing is final yet). Sets ``stopped`` once a
        stop string appeared (the piece then ends before it)."""
        self.ids += list(ids)
        text = self.text()
        if first_stop(text.strip(), self.stops) is not None:
            self.stopped = True
            return self._send(final_reply(text, self.stops))
        if text.endswith("\ufffd"):
            return ""
        text = text.lstrip()
        return self._send(text[: len(text) - held_back(text, self.stops)].rstrip())

    def finish(self) -> str:
        """The rest of the reply, once generation ended."""
        return self._send(final_reply(self.text(), self.stops))

    def _send(self, text: str) -> str:
        if not text.startswith(self.sent):  # a decoder that rewrote earlier text: wait for more
            return ""
        piece, self.sent = text[len(self.sent):], text
        return piece
