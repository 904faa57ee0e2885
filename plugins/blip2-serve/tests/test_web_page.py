"""The web page at ``/`` in a real headless browser (Debian's Chromium, driven by Playwright) against
a real server (uvicorn in a thread) running the trained ``mini`` model: upload an image, caption
it, ask about it, show the attention map, see a server error; a screenshot is checked too.
"""

from __future__ import annotations

import base64
import json
import socket
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw
from playwright.sync_api import expect, sync_playwright

CHROMIUM = Path("/usr/bin/chromium")
pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason="needs Debian's chromium at /usr/bin/chromium (apt-get install chromium; CI installs it in .ci/run)")

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
VIEWPORT = {"width": 1000, "height": 760}
TIMEOUT_MS = 120_000  # waits on the model: seconds when the machine is quiet, far more on a busy one


def shape_image(path: Path, colour: str = "red", size: int = 64) -> Path:
    """A coloured circle on white, size x size, like mini's easy-vqa training images."""
    image = Image.new("RGB", (size, size), "white")
    ImageDraw.Draw(image).ellipse((12, 12, size - 12, size - 12), fill=colour)
    image.save(path, format="PNG")
    return path


class ServerThread:
    """uvicorn serving ``app`` on a free 127.0.0.1 port in a daemon thread (lifespan included)."""

    def __init__(self, app) -> None:
        import uvicorn

        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def __enter__(self) -> ServerThread:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)
        self.sock.close()


@pytest.fixture(scope="module")
def mini():
    from blip2core import load_pipeline

    return load_pipeline("mini")


@pytest.fixture(scope="module")
def server(mini):
    from blip2_serve.app import create_app
    from blip2_serve.settings import ServeSettings

    with ServerThread(create_app(mini, ServeSettings(model="mini"))) as running:
        yield running


@pytest.fixture(scope="module")
def browser():
    expect.set_options(timeout=TIMEOUT_MS)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser, server):
    context = browser.new_context(viewport=VIEWPORT)
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(server.url + "/")
    yield page
    context.close()


def post(url: str, body: dict) -> tuple[int, dict]:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_caption_ask_and_attention_in_a_browser(page, mini, tmp_path):

    image = shape_image(tmp_path / "red-circle.png")
    question = "what shape is in the image?"
    expected_caption = mini.caption(str(image))[0]
    expected_answer = mini.answer(str(image), [question])[0]

    expect(page.locator("#model")).to_contain_text("mini")
    expect(page.locator("#caption-btn")).to_be_disabled()  # nothing to caption yet
    page.set_input_files("#file", str(image))
    expect(page.locator("#preview")).to_be_visible()
    assert page.eval_on_selector("#preview", "img => img.naturalWidth") == 64

    page.click("#caption-btn")
    expect(page.locator("#answer")).to_have_text(expected_caption)
    expect(page.locator("#result-label")).to_have_text("Caption")

    page.fill("#question", question)
    page.click("#ask-btn")
    expect(page.locator("#answer")).to_have_text(expected_answer)
    expect(page.locator("#result-label")).to_contain_text(question)

    page.check("#attention")  # explains the last action: the question just asked
    expect(page.locator("#attention-box")).to_be_visible()
    page.wait_for_function("() => { const img = document.getElementById('heatmap');"
                           " return img.complete && img.naturalWidth > 0; }")
    heatmap = page.eval_on_selector("#heatmap", "img => [img.naturalWidth, img.naturalHeight, img.src.slice(0, 22)]")
    assert heatmap[0] > 64 and heatmap[1] > 64 and heatmap[2] == "data:image/png;base64,"
    expect(page.locator("#heatmap-caption")).to_contain_text(expected_answer)
    expect(page.locator("#error")).to_be_hidden()

    shot = tmp_path / "page.png"
    page.screenshot(path=str(shot))
    with Image.open(shot) as picture:
        assert picture.format == "PNG" and picture.size == (VIEWPORT["width"], VIEWPORT["height"])
        pixels = np.asarray(picture.convert("RGB"), dtype=np.float32)
    assert pixels.var() > 0
    # the answer's text and the heat map's colours are on the screen, not only in the DOM
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 50


def test_a_server_error_is_shown_in_the_page(page, server, tmp_path):

    page.set_input_files("#file", str(shape_image(tmp_path / "blue-circle.png", "blue")))
    expect(page.locator("#caption-btn")).to_be_enabled()
    broken = "data:image/png;base64," + base64.b64encode(b"not a png at all").decode()
    status, reply = post(server.url + "/v1/caption", {"image": broken})
    assert 400 <= status < 500 and reply["error"]["message"]
    page.evaluate("broken => { state.image = broken; }", broken)  # what a corrupt upload would send
    page.click("#caption-btn")
    expect(page.locator("#error")).to_be_visible()
    expect(page.locator("#error")).to_contain_text(reply["error"]["message"])
    expect(page.locator("#error")).to_contain_text(str(status))
    expect(page.locator("#result")).to_be_hidden()
