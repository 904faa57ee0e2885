"""A bounded load test from a second process: ``blip2 serve --model mini --max-batch 8 --max-wait-ms 20``
runs as a child process; 8 concurrent clients send 40 caption and answer requests about 8 different
easy-vqa images. Every request succeeds, every reply equals the serial in-process answer, and the
server's /metrics shows that batches of more than one request formed. Captions use the default
decoding (beam search), answers greedy decoding of at most 5 tokens (cheaper; both kinds batch).
"""

from __future__ import annotations

import base64
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

CLIENTS = 8
REQUESTS_PER_CLIENT = 5
QUESTIONS = ["what color is the shape?", "what shape is in the image?", "is there a circle?", "is the shape red?"]
ANSWER_OPTIONS = {"num_beams": 1, "max_new_tokens": 5}
START_TIMEOUT_S = 180  # imports and load_pipeline("mini") in the child, on a busy 2-core machine


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def data_url(path: str) -> str:
    return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode()


def http(url: str, body: dict | None = None, timeout: float = 120) -> tuple[int, dict]:
    """(status, JSON reply) of a GET (no body) or a JSON POST; HTTP errors are returned, not raised."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"{}")


def jobs() -> list[tuple[str, str, str | None]]:
    """The 8 distinct requests, (route, image path, question): a caption or a question per image."""
    import easy_vqa

    by_id = easy_vqa.get_test_image_paths()  # {image id: path}
    paths = [by_id[image] for image in sorted(by_id)[:8]]
    return [("caption", path, None) if i % 2 == 0 else ("answer", path, QUESTIONS[(i // 2) % len(QUESTIONS)])
            for i, path in enumerate(paths)]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    port = free_port()
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    with log.open("w") as out:
        child = subprocess.Popen(
            [sys.executable, "-m", "blip2core.cli", "serve", "--model", "mini", "--host", "127.0.0.1",
             "--port", str(port), "--max-batch", "8", "--max-wait-ms", "20"],
            stdout=out, stderr=subprocess.STDOUT, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        if child.poll() is not None:
            pytest.fail(f"blip2 serve exited with {child.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if http(url + "/health", timeout=2)[0] == 200:
                break
        except OSError:
            pass
        if time.monotonic() > deadline:
            child.kill()
            pytest.fail(f"blip2 serve did not answer /health within {START_TIMEOUT_S} s:\n{log.read_text()[-3000:]}")
        time.sleep(0.25)
    yield url
    child.terminate()
    try:
        child.wait(timeout=60)
    except subprocess.TimeoutExpired:
        child.kill()
        child.wait()


def test_concurrent_clients_get_serial_answers_in_batches(server):
    from blip2core import load_pipeline

    distinct = jobs()
    pipe = load_pipeline("mini")  # loads while the server child is up: the serial truth, one call at a time
    serial = {job: (pipe.caption(job[1])[0] if job[0] == "caption"
                    else pipe.answer(job[1], [job[2]], **ANSWER_OPTIONS)[0]) for job in distinct}
    assert len(set(serial.values())) > 2  # the images differ, so do the replies
    payloads = {path: data_url(path) for _, path, _ in distinct}
    _, before = http(server + "/metrics")
    start = threading.Barrier(CLIENTS)

    def client(index: int) -> list[tuple[tuple, int, dict]]:
        start.wait()  # all clients at once, so that the server has something to batch
        results = []
        for round_ in range(REQUESTS_PER_CLIENT):
            job = distinct[(index + round_) % len(distinct)]
            route, path, question = job
            body = {"image": payloads[path]} | ({"question": question, **ANSWER_OPTIONS} if question else {})
            results.append((job, *http(f"{server}/v1/{route}", body)))
        return results

    with ThreadPoolExecutor(CLIENTS) as pool:
        replies = [reply for replies in pool.map(client, range(CLIENTS)) for reply in replies]

    assert len(replies) == CLIENTS * REQUESTS_PER_CLIENT
    failed = [(job, status, reply) for job, status, reply in replies if status != 200]
    assert not failed, failed[:3]
    wrong = [(job, reply, serial[job]) for job, _, reply in replies if reply[job[0]] != serial[job]]
    assert not wrong, wrong[:3]

    status, after = http(server + "/metrics")
    assert status == 200
    assert after["errors"] == before["errors"]
    assert after["requests"] - before["requests"] >= len(replies)
    assert after["queue_depth"] == 0
    grown = {size: count - before["batch_size_histogram"].get(size, 0)
             for size, count in after["batch_size_histogram"].items()}
    assert sum(int(size) * count for size, count in grown.items()) >= len(replies)
    assert any(int(size) > 1 and count > 0 for size, count in grown.items()), after["batch_size_histogram"]
    assert max(int(size) for size, count in grown.items() if count > 0) <= 8  # --max-batch
    assert after["batches"] - before["batches"] < len(replies)
