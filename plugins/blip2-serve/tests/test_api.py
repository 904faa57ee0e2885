"""The HTTP routes on the real `mini` model: answers equal direct pipeline calls (JSON, multipart,
data URLs, http URLs when enabled), and bad requests get a 4xx naming what was wrong."""

from __future__ import annotations

import base64
import functools
import http.server
import io
import json
import threading

import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image

from blip2core import load_pipeline

from blip2_serve.app import PLACEHOLDER, STATIC, create_app
from blip2_serve.settings import ServeSettings
from blip2_serve.testing import data_url

FAST = {"num_beams": 1, "max_new_tokens": 6}


@pytest.fixture(scope="module")
def client(mini):
    with TestClient(create_app(mini, ServeSettings(model="mini", max_body_mb=0.05, max_wait_ms=0))) as client:
        yield client


def error_of(reply, status):
    assert reply.status_code == status, reply.text
    error = reply.json()["error"]
    assert set(error) == {"message", "type"}
    return error["message"]


def test_health_metrics_and_page(client):
    assert client.get("/health").json() == {"status": "ok", "model": "mini"}
    metrics = client.get("/metrics").json()
    assert set(metrics) == {"requests", "errors", "queue_depth", "batches", "batch_size_histogram", "latency_ms"}
    assert set(metrics["latency_ms"]) == {"p50", "p90", "p99"}
    page = client.get("/")
    assert page.status_code == 200
    if (STATIC / "index.html").is_file():
        assert page.headers["content-type"].startswith("text/html")
        assert page.text == (STATIC / "index.html").read_text()
    else:
        assert page.text == PLACEHOLDER


def test_caption_answer_chat_equal_direct_calls_json_and_multipart(client, mini, image_paths):
    path = image_paths[0]
    image = path.read_bytes()
    caption = client.post("/v1/caption", json={"image": data_url(path), **FAST}).json()
    assert caption == {"caption": mini.caption(image, **FAST)[0]}
    form = client.post("/v1/caption", files={"image": ("shape.png", image, "image/png")},
                       data={key: str(value) for key, value in FAST.items()})
    assert form.json() == caption
    answer = client.post("/v1/answer", json={"image": data_url(path), "question": "what color is the shape?", **FAST})
    assert answer.json() == {"answer": mini.answer(image, "what color is the shape?", **FAST)[0]}
    messages = [{"role": "user", "content": "what shape is this?"}]
    chat = client.post("/v1/chat", json={"image": data_url(path), "messages": messages, "max_new_tokens": 10})
    assert chat.json() == {"reply": mini.chat(image, messages, max_new_tokens=10)}
    chat_form = client.post("/v1/chat", files={"image": ("shape.png", image, "image/png")},
                            data={"messages": json.dumps(messages), "max_new_tokens": "10"})
    assert chat_form.json() == chat.json()


def test_features_match_explain(client, mini, image_paths):
    path = image_paths[1]
    image = path.read_bytes()
    features = client.post("/v1/features", json={"image": data_url(path)}).json()
    expected = mini.extract_features(image).image_embeds_proj[0]
    assert features["shape"] == list(expected.shape) and len(features["embedding"]) == expected.shape[0]
    torch.testing.assert_close(torch.tensor(features["embedding"]), expected.float(), atol=1e-5, rtol=0)
    text = client.post("/v1/features", json={"text": "a red circle"}).json()
    expected_text = mini.extract_features(texts=["a red circle"], mode="text").text_embeds_proj[:, 0]
    assert text["shape"] == list(expected_text.shape)
    torch.testing.assert_close(torch.tensor(text["embedding"]), expected_text.float(), atol=1e-5, rtol=0)
    texts = ["a red circle", "a blue rectangle", "a green triangle"]
    scores = client.post("/v1/match", json={"image": data_url(path), "texts": texts}).json()["scores"]
    assert scores == pytest.approx(mini.match(image, texts).tolist(), abs=1e-6)
    explained = client.post("/v1/explain", json={"image": data_url(path), "question": "what shape is this?"}).json()
    assert explained["text"] == mini.answer(image, "what shape is this?", num_beams=1)[0]
    head, payload = explained["heatmap"].split(",", 1)
    assert head == "data:image/png;base64"
    assert Image.open(io.BytesIO(base64.b64decode(payload))).size == (448, 448)


def test_bad_requests_name_what_is_wrong(client, image_paths):
    good = data_url(image_paths[0])
    assert "missing field 'image'" in error_of(client.post("/v1/caption", json={}), 400)
    assert "missing field 'question'" in error_of(client.post("/v1/answer", json={"image": good}), 400)
    broken = "data:image/png;base64," + base64.b64encode(b"this is not a picture").decode()
    message = error_of(client.post("/v1/caption", json={"image": broken}), 400)
    assert message.startswith("field 'image': not an image")
    assert "base64 is invalid" in error_of(client.post("/v1/caption", json={"image": "data:image/png;base64,@@@"}), 400)
    assert "must be a data URL" in error_of(client.post("/v1/caption", json={"image": "/etc/passwd"}), 400)
    assert "--allow-url-images" in error_of(client.post("/v1/caption", json={"image": "http://127.0.0.1:9/x.png"}), 400)
    assert "unknown field 'beams'" in error_of(client.post("/v1/caption", json={"image": good, "beams": 3}), 400)
    message = error_of(client.post("/v1/caption", json={"image": good, "max_new_tokens": "many"}), 400)
    assert message == "field 'max_new_tokens' must be an integer, got a string"
    assert "between 1 and 8" in error_of(client.post("/v1/caption", json={"image": good, "num_beams": 50}), 400)
    assert "not valid JSON" in error_of(client.post("/v1/caption", content=b"{oops"), 400)
    assert "exactly one of" in error_of(client.post("/v1/features", json={}), 400)
    assert "'texts' must be a non-empty list" in error_of(client.post("/v1/match", json={"image": good, "texts": []}), 400)
    message = error_of(client.post("/v1/chat", json={"image": good, "messages": [{"role": "user"}]}), 400)
    assert "message 0 must be an object with string 'role' and 'content'" in message
    message = error_of(client.post("/v1/chat", json={"image": good, "messages": [{"role": "robot", "content": "hi"}]}),
                       422)
    assert message.startswith("chat: ") and "robot" in message
    assert "no route GET /v1/nothing" in error_of(client.get("/v1/nothing"), 404)


def test_bodies_over_the_limit_get_413(client):
    limit = int(0.05 * 1024 * 1024)
    big = {"image": "data:image/png;base64," + "A" * limit}
    assert "--max-body-mb" in error_of(client.post("/v1/caption", json=big), 413)

    def chunks():  # no Content-Length: counted while read
        for _ in range(8):
            yield b"x" * (limit // 4)

    assert "--max-body-mb" in error_of(client.post("/v1/caption", content=chunks()), 413)


def test_url_images_only_when_enabled(mini, image_paths, tmp_path):
    folder = image_paths[2].parent
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    handler.log_message = lambda *args: None
    files = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=files.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{files.server_address[1]}/{image_paths[2].name}"
    try:
        with TestClient(create_app(mini, ServeSettings(model="mini", allow_url_images=True))) as allowed:
            reply = allowed.post("/v1/caption", json={"image": url, **FAST})
            assert reply.json() == {"caption": mini.caption(image_paths[2].read_bytes(), **FAST)[0]}
            missing = allowed.post("/v1/caption", json={"image": url + ".missing", **FAST})
            assert "HTTP 404" in error_of(missing, 400)
    finally:
        files.shutdown()


def test_explain_without_a_qformer_is_a_clear_422(image_paths):
    """A bridge with no cross-attention (the MLP projector) cannot be explained: 422 naming why,
    and the server goes on answering."""
    from blip2_mini.model import mini_spec

    spec = {**mini_spec(), "bridge": {"name": "mlp-projector"}, "seed": 0}
    spec.pop("weights")
    pipe = load_pipeline(spec)
    with TestClient(create_app(pipe, ServeSettings(model="projector", max_wait_ms=0))) as client:
        image = data_url(image_paths[0])
        message = error_of(client.post("/v1/explain", json={"image": image}), 422)
        assert "explain" in message.lower() or "cross-attention" in message.lower(), message
        assert client.post("/v1/caption", json={"image": image, **FAST}).status_code == 200
