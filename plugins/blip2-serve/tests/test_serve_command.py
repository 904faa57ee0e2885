"""`blip2 serve` as users run it: a real process that prints its URL, answers, and on SIGTERM finishes
the request in flight before it exits 0."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time

import httpx2 as httpx

from blip2_serve.testing import data_url, free_listener

BLIP2 = [sys.executable, "-m", "blip2core.cli"]


def test_sigterm_finishes_the_request_in_flight_and_exits_0(image_paths):
    process = subprocess.Popen([*BLIP2, "serve", "--model", "mini", "--port", "0"], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    try:
        line = process.stdout.readline()
        assert line.startswith("blip2 serve: mini on http://127.0.0.1:"), (line, process.stderr.read())
        url = line.split(" on ", 1)[1].split()[0]
        assert httpx.get(f"{url}/health", timeout=60).json() == {"status": "ok", "model": "mini"}
        # a slowish request (4 beams, exactly 24 new tokens): still running when SIGTERM arrives
        body = {"image": data_url(image_paths[0]), "num_beams": 4, "min_new_tokens": 24, "max_new_tokens": 24}
        replies = []
        sender = threading.Thread(target=lambda: replies.append(httpx.post(f"{url}/v1/caption", json=body,
                                                                            timeout=300)))
        sender.start()
        deadline = time.monotonic() + 60
        while httpx.get(f"{url}/metrics", timeout=60).json()["batches"] == 0:  # the caption is running
            assert time.monotonic() < deadline
            time.sleep(0.02)
        process.send_signal(signal.SIGTERM)
        sender.join(timeout=300)
        assert process.wait(timeout=120) == 0, process.stderr.read()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert replies[0].status_code == 200 and replies[0].json()["caption"], replies[0].text
    assert process.stdout.read().strip() == "blip2 serve: stopped"


def test_a_port_in_use_is_one_clear_line():
    taken = free_listener()
    port = taken.getsockname()[1]
    try:
        done = subprocess.run([*BLIP2, "serve", "--model", "mini", "--port", str(port)], capture_output=True,
                              text=True, timeout=120)
    finally:
        taken.close()
    assert done.returncode == 1
    assert done.stderr.strip().startswith(f"Error: cannot listen on 127.0.0.1:{port}:"), done.stderr
    assert "Traceback" not in done.stderr
