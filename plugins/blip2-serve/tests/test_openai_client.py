"""/v1/chat/completions with the official `openai` client, unchanged, against a real server on
127.0.0.1: the reply equals ``pipe.chat``, and the streamed pieces join to it."""

from __future__ import annotations

import httpx2 as httpx
import openai
import pytest

from blip2_serve.app import create_app
from blip2_serve.settings import ServeSettings
from blip2_serve.testing import data_url, serving

QUESTION = "what shape is in the image?"


@pytest.fixture(scope="module")
def server(mini):
    with serving(create_app(mini, ServeSettings(model="mini"))) as url:
        yield url


@pytest.fixture(scope="module")
def client(server):
    with openai.OpenAI(base_url=f"{server}/v1", api_key="unused", max_retries=0, timeout=120) as client:
        yield client


def messages_with(path):
    return [
        {"role": "system", "content": "Answer briefly."},
        {"role": "user", "content": [{"type": "text", "text": QUESTION},
                                     {"type": "image_url", "image_url": {"url": data_url(path)}}]},
    ]


def test_reply_and_stream_equal_pipe_chat(client, mini, image_paths):
    path = image_paths[3]
    expected = mini.chat(path.read_bytes(), [{"role": "system", "content": "Answer briefly."},
                                             {"role": "user", "content": QUESTION}], max_new_tokens=16)
    completion = client.chat.completions.create(model="mini", messages=messages_with(path), max_tokens=16)
    assert completion.choices[0].message.content == expected
    assert completion.choices[0].message.role == "assistant" and completion.model == "mini"
    assert completion.choices[0].finish_reason == "stop"

    chunks = list(client.chat.completions.create(model="mini", messages=messages_with(path), max_tokens=16,
                                                 stream=True))
    pieces = [chunk.choices[0].delta.content for chunk in chunks if chunk.choices[0].delta.content]
    assert len(pieces) > 1 and "".join(pieces) == expected
    assert chunks[0].choices[0].delta.role == "assistant" and chunks[-1].choices[0].finish_reason == "stop"
    assert len({chunk.id for chunk in chunks}) == 1


def test_the_stream_is_server_sent_events_ending_with_done(server, image_paths):
    body = {"model": "mini", "messages": messages_with(image_paths[3]), "max_tokens": 8, "stream": True}
    with httpx.stream("POST", f"{server}/v1/chat/completions", json=body, timeout=120) as reply:
        assert reply.headers["content-type"].startswith("text/event-stream")
        text = "".join(reply.iter_text())
    events = text.split("\n\n")
    assert events[-1] == "" and events[-2] == "data: [DONE]"
    assert all(event.startswith("data: {") for event in events[:-2])


def test_bad_requests_raise_the_clients_errors(client, image_paths):
    with pytest.raises(openai.BadRequestError, match="exactly one image_url part"):
        client.chat.completions.create(model="mini", messages=[{"role": "user", "content": QUESTION}])
    with pytest.raises(openai.BadRequestError, match="field 'n'"):
        client.chat.completions.create(model="mini", messages=messages_with(image_paths[0]), n=2)
    with pytest.raises(openai.BadRequestError, match="unknown field 'tools'"):
        client.chat.completions.create(model="mini", messages=messages_with(image_paths[0]),
                                       tools=[{"type": "function", "function": {"name": "f"}}])
