"""OpenAI's chat-completions format <-> ``Pipeline.chat``.

A request's messages may hold content parts ``{"type": "text", "text"}`` and
``{"type": "image_url", "image_url": {"url": DATA_URL}}``; a chat is about one image, so exactly
one image part must appear in the conversation. The text parts of a message are joined by newlines.

Honoured: ``messages``, ``stream``, ``max_tokens`` / ``max_completion_tokens`` (-> max_new_tokens),
``stop``, ``temperature`` (0 or absent: greedy; > 0: sampling), ``top_p``, ``seed``; accepted and
ignored: ``model`` (the reply names the served model), ``user``, ``stream_options``, ``n`` = 1.
Anything else is refused by name, rather than silently ignored.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from blip2_serve.errors import bad_request
from blip2_serve.inputs import RequestFields

KNOWN_FIELDS = ("messages", "model", "stream", "max_tokens", "max_completion_tokens", "stop", "temperature",
                "top_p", "seed", "n", "user", "stream_options")


@dataclass
class ChatCompletionRequest:
    """What a chat-completions body asks for, in ``Pipeline.chat`` terms."""

    image_url: str
    messages: list[dict[str, str]]
    stream: bool = False
    options: dict[str, Any] = field(default_factory=dict)


def parse_request(fields: RequestFields, *, max_new_tokens: int) -> ChatCompletionRequest:
    """A checked request; a 400 naming the field otherwise."""
    fields.check_known(KNOWN_FIELDS)
    raw = fields.values.get("messages")
    if not isinstance(raw, list) or not raw:
        raise bad_request("field 'messages' must be a non-empty list of messages")
    images: list[str] = []
    messages = [_message(i, message, images) for i, message in enumerate(raw)]
    if len(images) != 1:
        raise bad_request(f"a chat is about one image: give exactly one image_url part in 'messages', got {len(images)}")
    stream = fields.values.get("stream", False)
    if not isinstance(stream, bool):
        raise bad_request(f"field 'stream' must be true or false, got {stream!r}")
    if fields.values.get("n") is not None:
        fields.integer("n", 1, 1, 1)  # one reply per request
    options: dict[str, Any] = {}
    for name in ("max_tokens", "max_completion_tokens"):
        if fields.has(name) and fields.values[name] is not None:
            options["max_new_tokens"] = fields.integer(name, 0, 1, max_new_tokens)
    stop = fields.values.get("stop")
    if stop is not None:
        stops = [stop] if isinstance(stop, str) else stop
        if not isinstance(stops, list) or not all(isinstance(s, str) and s for s in stops) or len(stops) > 4:
            raise bad_request("field 'stop' must be a non-empty string or a list of at most 4 of them")
        options["stop"] = stops
    temperature = fields.number("temperature", 0.0, 0.0, 2.0) if fields.values.get("temperature") is not None else 0.0
    if temperature > 0:
        options.update(do_sample=True, temperature=temperature)
        if fields.values.get("top_p") is not None:
            options["top_p"] = fields.number("top_p", 1.0, 1e-6, 1.0)
        if fields.values.get("seed") is not None:
            options["seed"] = fields.integer("seed", 0, 0, 2**63 - 1)
    return ChatCompletionRequest(images[0], messages, stream, options)


def _message(index: int, message: Any, images: list[str]) -> dict[str, str]:
    where = f"messages[{index}]"
    if not isinstance(message, dict) or not isinstance(message.get("role"), str):
        raise bad_request(f"{where} must be an object with a string 'role'")
    content = message.get("content")
    if isinstance(content, str):
        return {"role": message["role"], "content": content}
    if not isinstance(content, list):
        raise bad_request(f"{where}.content must be a string or a list of content parts")
    texts = []
    for j, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text" and isinstance(part.get("text"), str):
            texts.append(part["text"])
        elif kind == "image_url":
            url = part.get("image_url")
            url = url.get("url") if isinstance(url, dict) else url
            if not isinstance(url, str):
                raise bad_request(f"{where}.content[{j}].image_url.url must be a string (a data URL)")
            images.append(url)
        else:
            raise bad_request(f"{where}.content[{j}] must be a {{\"type\": \"text\"}} or {{\"type\": \"image_url\"}} part")
    return {"role": message["role"], "content": "\n".join(texts)}


class CompletionIds:
    """The id, creation time and model name every object of one completion carries."""

    def __init__(self, model: str) -> None:
        self.id = f"chatcmpl-{uuid.uuid4().hex}"
        self.created = int(time.time())
        self.model = model

    def completion(self, reply: str) -> dict:
        """The non-streamed response (``object: chat.completion``)."""
        return {
            "id": self.id, "object": "chat.completion", "created": self.created, "model": self.model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": reply}, "finish_reason": "stop",
                         "logprobs": None}],
        }

    def chunk(self, delta: dict, finish_reason: str | None = None) -> str:
        """One server-sent event ``data: {chat.completion.chunk}\\n\\n``."""
        document = {
            "id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason, "logprobs": None}],
        }
        return sse(document)


def sse(document: dict) -> str:
    return f"data: {json.dumps(document)}\n\n"


DONE = "data: [DONE]\n\n"
