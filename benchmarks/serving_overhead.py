"""What the HTTP layer of ``blip2 serve`` costs per request (docs/serving.md, "Why FastAPI + uvicorn").

    python -m benchmarks.serving_overhead                    # 300 health requests, 10 captions each way
    python -m benchmarks.serving_overhead --health 1000 --captions 20 --json

Measures, one request at a time over one keep-alive connection to a ``blip2 serve --model mini``
child process on 127.0.0.1 (standard library client, so no client library is in the numbers):

- ``GET /health``: the whole stack with no model work (uvicorn, FastAPI routing, the metrics and
  size-limit middleware, JSON), per request;
- ``POST /v1/caption`` (one easy-vqa image as a data URL, greedy, 4 new tokens) against
  ``pipe.caption`` on the same bytes in this process, alternated call by call; the difference is
  what serving adds to a real call: HTTP, JSON, base64, preprocessing in a thread, the batcher.
  Each caption request opens a fresh connection (uvicorn closes one idle for 5 s).

Wall times are medians; CPU times (user + system, all threads, from /proc: the server's for the
served requests, this process's for the direct calls) are what the work itself costs and vary much
less than wall time when other processes share the cores. The CPU and load average are printed too.
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import statistics
import subprocess
import time
from pathlib import Path

from benchmarks import machine
from benchmarks.latency import blip2_command


def start_server() -> tuple[subprocess.Popen, str, int]:
    command = [*blip2_command(), "serve", "--model", "mini", "--port", "0", "--max-wait-ms", "0"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    line = process.stdout.readline()
    if " on http://" not in line:
        process.kill()
        raise SystemExit(f"blip2 serve did not start: {line!r}")
    address = line.split(" on http://", 1)[1].split()[0]
    host, port = address.rsplit(":", 1)
    return process, host, int(port)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` so far (all its threads), from /proc."""
    import os

    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def request(connection: http.client.HTTPConnection, method: str, path: str, body: bytes | None = None) -> bytes:
    headers = {"Content-Type": "application/json"} if body is not None else {}
    connection.request(method, path, body=body, headers=headers)
    reply = connection.getresponse()
    data = reply.read()
    if reply.status != 200:
        raise SystemExit(f"{method} {path}: HTTP {reply.status}: {data[:200]!r}")
    return data


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--health", type=int, default=300, help="timed GET /health requests")
    parser.add_argument("--captions", type=int, default=10, help="timed captions, each way")
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    args = parser.parse_args(argv)

    import easy_vqa

    from blip2core import load_pipeline

    image = Path(easy_vqa.get_test_image_paths()[0]).read_bytes()
    options = {"num_beams": 1, "max_new_tokens": 4}
    body = json.dumps({"image": "data:image/png;base64," + base64.b64encode(image).decode(), **options}).encode()
    pipe = load_pipeline("mini")
    process, host, port = start_server()
    try:
        connection = http.client.HTTPConnection(host, port, timeout=300)
        for _ in range(20):
            request(connection, "GET", "/health")
        health = []
        server_cpu, client_cpu = cpu_seconds(process.pid), time.process_time()
        for _ in range(args.health):
            start = time.perf_counter()
            request(connection, "GET", "/health")
            health.append(time.perf_counter() - start)
        health_server_cpu = (cpu_seconds(process.pid) - server_cpu) / args.health
        health_client_cpu = (time.process_time() - client_cpu) / args.health
        expected = pipe.caption(image, **options)[0]
        connection.close()
        assert json.loads(request(connection, "POST", "/v1/caption", body))["caption"] == expected
        served, direct, served_cpu, direct_cpu = [], [], [], []
        for _ in range(args.captions):
            connection.close()  # uvicorn closes a connection idle for 5 s (the direct call may take that long)
            start, cpu = time.perf_counter(), cpu_seconds(process.pid)
            request(connection, "POST", "/v1/caption", body)
            served.append(time.perf_counter() - start)
            served_cpu.append(cpu_seconds(process.pid) - cpu)
            start, cpu = time.perf_counter(), time.process_time()
            pipe.caption(image, **options)
            direct.append(time.perf_counter() - start)
            direct_cpu.append(time.process_time() - cpu)
        connection.close()
    finally:
        process.terminate()
        process.wait(timeout=120)
    result = {
        "cpu": machine.cpu_summary(),
        "load_average": machine.load_average(),
        "health_ms": round(statistics.median(health) * 1000, 3),
        "health_server_cpu_ms": round(health_server_cpu * 1000, 3),
        "health_client_cpu_ms": round(health_client_cpu * 1000, 3),
        "caption_http_server_cpu_ms": round(statistics.median(served_cpu) * 1000, 1),
        "caption_direct_cpu_ms": round(statistics.median(direct_cpu) * 1000, 1),
        "caption_http_ms": round(statistics.median(served) * 1000, 1),
        "caption_direct_ms": round(statistics.median(direct) * 1000, 1),
    }
    result["caption_overhead_ms"] = round(result["caption_http_ms"] - result["caption_direct_ms"], 1)
    if args.json:
        print(json.dumps(result))
    else:
        print(f"CPU: {result['cpu']} (load average {result['load_average']})")
        print(f"GET /health over HTTP:          {result['health_ms']:.3f} ms wall per request (median of {args.health}); "
              f"CPU: server {result['health_server_cpu_ms']:.3f} ms + client {result['health_client_cpu_ms']:.3f} ms")
        print(f"caption over HTTP:              {result['caption_http_ms']:.1f} ms wall (median of {args.captions}); "
              f"server CPU {result['caption_http_server_cpu_ms']:.1f} ms")
        print(f"caption, direct pipe.caption:   {result['caption_direct_ms']:.1f} ms wall; "
              f"CPU {result['caption_direct_cpu_ms']:.1f} ms")
        print(f"what serving adds to a caption: {result['caption_overhead_ms']:.1f} ms wall")
    return result


if __name__ == "__main__":
    main()
