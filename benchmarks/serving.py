"""Throughput and latency of ``blip2 serve --model mini``: concurrent clients against the same
requests sent one at a time, and against direct in-process ``pipe`` calls one at a time.

    python -m benchmarks.serving                              # 8 clients x 50 requests, server defaults
    python -m benchmarks.serving --clients 8 --requests 50 --max-batch 8 --max-wait-ms 20
    python -m benchmarks.serving --doc docs/benchmarks.md     # also (re)write its section there
    python -m benchmarks.serving --json                       # JSON on stdout

The workload: clients x requests requests, half captions and half questions (easy-vqa questions)
about distinct easy-vqa test images (mini's domain), sent as data URLs in JSON, the answers
compared with the in-process ones. The server runs as a child process (``blip2 serve``, what a user
starts); clients are threads of this process using the standard library's HTTP client. The three
variants are timed in alternation, block by block (``benchmarks.timing.interleaved``: a warm-up
block first, then ``--blocks`` blocks of each variant in rotating order), so a burst of load from
other processes hits each alike. Requests/s = requests / summed block times; latency quantiles are
over every timed request.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import shlex
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks import machine
from benchmarks.latency import blip2_command
from benchmarks.timing import interleaved

REPO = Path(__file__).resolve().parents[1]
QUESTIONS = ["what color is the shape?", "what shape is in the image?", "is there a circle?", "is the shape red?",
             "is there not a triangle?", "is the shape blue?", "does the image contain a rectangle?"]
BEGIN = "<!-- benchmarks.serving: begin (written by python -m benchmarks.serving --doc) -->"
END = "<!-- benchmarks.serving: end -->"
VARIANTS = {
    "concurrent": "{clients} concurrent clients, blip2 serve",
    "serial": "one request at a time, blip2 serve",
    "direct": "one call at a time, in process (pipe.caption / pipe.answer)",
}


@dataclass(frozen=True)
class Job:
    """One request: a caption (question None) or an answer about one image file."""

    route: str
    path: str
    question: str | None = None


@dataclass
class Record:
    """What one variant saw: seconds per request, and the replies by job."""

    latencies: list[float] = field(default_factory=list)
    replies: dict[Job, set[str]] = field(default_factory=dict)

    def add(self, job: Job, seconds: float, reply: str) -> None:
        self.latencies.append(seconds)
        self.replies.setdefault(job, set()).add(reply)


def workload(count: int, images: int) -> list[Job]:
    """``count`` requests over ``images`` distinct easy-vqa test images, captions and questions alternating."""
    import easy_vqa

    by_id = easy_vqa.get_test_image_paths()  # {image id: path}
    paths = [by_id[image] for image in sorted(by_id)[:images]]
    distinct = [Job("caption", path) if i % 2 == 0 else Job("answer", path, QUESTIONS[(i // 2) % len(QUESTIONS)])
                for i, path in enumerate(paths)]
    return [distinct[i % len(distinct)] for i in range(count)]


def http_json(url: str, body: dict | None = None, timeout: float = 300) -> dict:
    """A GET (no body) or JSON POST; raises RuntimeError with the server's message on an HTTP error."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as error:
        raise RuntimeError(f"{url}: HTTP {error.code}: {error.read()[:300]!r}") from None


class Server:
    """``blip2 serve --model MODEL`` as a child process on a free port; its output goes to a temporary log."""

    def __init__(self, model: str, options: list[str]) -> None:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.command = [*blip2_command(), "serve", "--model", model, "--host", "127.0.0.1", "--port", str(self.port),
                        *options]
        self.log = Path(tempfile.mkstemp(prefix="blip2-serve-", suffix=".log")[1])

    def __enter__(self) -> Server:
        with self.log.open("w") as out:
            self.child = subprocess.Popen(self.command, stdout=out, stderr=subprocess.STDOUT, cwd=REPO)
        deadline = time.monotonic() + 300
        while True:
            if self.child.poll() is not None:
                raise RuntimeError(f"blip2 serve exited with {self.child.returncode}: {self.log.read_text()[-2000:]}")
            try:
                if http_json(self.url + "/health", timeout=2).get("status") == "ok":
                    return self
            except (OSError, RuntimeError):
                pass
            if time.monotonic() > deadline:
                self.child.kill()
                raise RuntimeError(f"blip2 serve did not become healthy in 300 s: {self.log.read_text()[-2000:]}")
            time.sleep(0.25)

    def __exit__(self, *exc) -> None:
        self.child.terminate()
        try:
            self.child.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.child.kill()
        self.log.unlink(missing_ok=True)


def request_over_http(url: str, payloads: dict[str, str], job: Job) -> str:
    body = {"image": payloads[job.path]} | ({"question": job.question} if job.question else {})
    return http_json(f"{url}/v1/{job.route}", body)[job.route]


def serial_block(send: Callable[[Job], str], record: Record) -> Callable[[list[Job]], None]:
    def run(block: list[Job]) -> None:
        for job in block:
            start = time.perf_counter()
            reply = send(job)
            record.add(job, time.perf_counter() - start, reply)
    return run


def concurrent_block(send: Callable[[Job], str], record: Record, clients: int) -> Callable[[list[Job]], None]:
    """The block's jobs dealt round-robin to ``clients`` threads that start together."""
    lock = threading.Lock()

    def run(block: list[Job]) -> None:
        barrier = threading.Barrier(clients)
        errors: list[BaseException] = []

        def client(jobs: list[Job]) -> None:
            barrier.wait()
            for job in jobs:
                start = time.perf_counter()
                try:
                    reply = send(job)
                except BaseException as error:  # noqa: BLE001 - reported after the block
                    errors.append(error)
                    return
                seconds = time.perf_counter() - start
                with lock:
                    record.add(job, seconds, reply)

        threads = [threading.Thread(target=client, args=(block[c::clients],)) for c in range(clients)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if errors:
            raise errors[0]
    return run


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def measure(args: argparse.Namespace) -> dict:
    import warnings

    import torch

    from blip2core import load_pipeline

    warnings.filterwarnings("ignore")
    info = machine.describe("cpu")
    info["load_before"] = machine.load_average()
    jobs = workload(args.clients * args.requests, args.images)
    per_block = len(jobs) // args.blocks
    blocks = [jobs[i * per_block:(i + 1) * per_block] for i in range(args.blocks)]
    warm = jobs[:args.clients]
    payloads = {job.path: "data:image/png;base64," + base64.b64encode(Path(job.path).read_bytes()).decode()
                for job in jobs}
    options = [*(["--max-batch", str(args.max_batch)] if args.max_batch else []),
               *(["--max-wait-ms", str(args.max_wait_ms)] if args.max_wait_ms is not None else [])]
    pipe = load_pipeline(args.model)

    def direct(job: Job) -> str:
        return (pipe.caption(job.path) if job.route == "caption" else pipe.answer(job.path, [job.question]))[0]

    records = {name: Record() for name in VARIANTS}
    started = time.perf_counter()
    with Server(args.model, options) as server:
        def over_http(job: Job) -> str:
            return request_over_http(server.url, payloads, job)

        runners = {"concurrent": concurrent_block(over_http, records["concurrent"], args.clients),
                   "serial": serial_block(over_http, records["serial"]),
                   "direct": serial_block(direct, records["direct"])}
        feeds: dict[str, Iterator[list[Job]]] = {name: iter([warm, *blocks]) for name in runners}

        def next_block(name: str) -> None:
            start = time.perf_counter()
            runners[name](next(feeds[name]))
            print(f"  {name}: a block in {time.perf_counter() - start:.1f} s", file=sys.stderr, flush=True)

        timings = interleaved({name: (lambda name=name: next_block(name)) for name in runners},
                              rounds=args.blocks, warmup=1)
        metrics = http_json(server.url + "/metrics")
        info["server_command"] = shlex.join(["blip2", *server.command[len(blip2_command()):]]).replace(
            f"--port {server.port}", "--port PORT")
    info["load_after"] = machine.load_average()
    truth = {job: next(iter(replies)) for job, replies in records["direct"].replies.items()}
    timed = len(blocks) * per_block
    results = {}
    for name, record in records.items():
        seconds = sum(timings[name].samples)
        latencies = record.latencies[len(warm):]  # the warm-up block ran first, for every variant
        same = sum(replies == {truth[job]} for job, replies in record.replies.items())
        results[name] = {"label": VARIANTS[name].format(clients=args.clients), "requests": timed, "seconds": seconds,
                         "requests_per_s": timed / seconds,
                         "p50_ms": 1000 * statistics.median(latencies), "p90_ms": 1000 * quantile(latencies, 0.9),
                         "same_replies": f"{same}/{len(record.replies)}"}
    return {"clients": args.clients, "requests": args.requests, "images": args.images, "blocks": args.blocks,
            "model": args.model, "torch_threads": torch.get_num_threads(), "machine": info, "results": results,
            "server_metrics": metrics, "wall_s": time.perf_counter() - started}


def report(run: dict, command: str) -> str:
    info, results = run["machine"], run["results"]
    base = results["serial"]["requests_per_s"]
    direct = results["direct"]["requests_per_s"]
    lines = [
        f"$ {command}",
        f"{info['cpu']}, {info['cpus']} CPUs; flags: {' '.join(info['flags']) or '-'}; torch {info['torch']}, "
        f"{run['torch_threads']} torch threads per process",
        f"load average (1 min) before {info['load_before']}, after {info['load_after']}; "
        f"server: {info['server_command']}",
        f"workload: {run['clients']} clients x {run['requests']} requests = {run['clients'] * run['requests']} "
        f"(captions and questions alternating, {run['images']} easy-vqa images, data URLs), "
        f"{run['blocks']} blocks per variant after a warm-up block, variants interleaved",
        "",
        f"{'variant':<62} {'req/s':>7} {'p50 ms':>8} {'p90 ms':>8} {'vs serial':>9} {'vs direct':>9}  same replies",
    ]
    for result in results.values():
        lines.append(f"{result['label']:<62} {result['requests_per_s']:7.2f} {result['p50_ms']:8.0f} "
                     f"{result['p90_ms']:8.0f} {result['requests_per_s'] / base:8.2f}x "
                     f"{result['requests_per_s'] / direct:8.2f}x  {result['same_replies']}")
    metrics = run["server_metrics"]
    histogram = ", ".join(f"{size}: {count}" for size, count in
                          sorted(metrics.get("batch_size_histogram", {}).items(), key=lambda kv: int(kv[0])))
    lines += ["", f"server /metrics after the run: {metrics.get('requests')} requests, {metrics.get('errors')} errors, "
              f"{metrics.get('batches')} batches; batch sizes {{{histogram}}}"]
    return "\n".join(lines)


def write_section(doc: Path, text: str) -> None:
    """Put ``text`` between this script's markers in ``doc`` (appended the first time)."""
    from blip2core.atomic import atomic_write_text

    old = doc.read_text() if doc.exists() else ""
    section = f"{BEGIN}\n{text.rstrip()}\n{END}\n"
    if BEGIN in old and END in old:
        new = old[:old.index(BEGIN)] + section + old[old.index(END) + len(END):].lstrip("\n")
    else:
        new = old.rstrip("\n") + "\n\n" + section
    atomic_write_text(doc, new)


def doc_section(run: dict, command: str) -> str:
    concurrent, serial, direct = (run["results"][k] for k in ("concurrent", "serial", "direct"))
    return "\n".join([
        "## Serving: `blip2 serve --model mini` under concurrent clients",
        "",
        "Written by `benchmarks/serving.py` (how it measures: its docstring); run it again rather than editing.",
        f"{run['clients']} concurrent clients batched by the server give "
        f"**{concurrent['requests_per_s'] / serial['requests_per_s']:.2f}x** the requests/s of the same requests sent "
        f"one at a time, and **{concurrent['requests_per_s'] / direct['requests_per_s']:.2f}x** direct in-process "
        "calls one at a time.",
        *([f"Measured at load average {load} on a machine shared with other jobs: absolute numbers are inflated and "
           "noisy, the variants' ratios (timed in alternation) are what to read; run it again on a quiet machine."]
          if (load := max(run["machine"]["load_before"] or 0, run["machine"]["load_after"] or 0)) > 2.5 else []),
        "",
        "```",
        report(run, command),
        "```",
    ])


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.serving", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="mini")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--requests", type=int, default=50, help="requests per client")
    parser.add_argument("--images", type=int, default=16, help="distinct easy-vqa test images")
    parser.add_argument("--blocks", type=int, default=5, help="timed blocks per variant (interleaved)")
    parser.add_argument("--max-batch", type=int, default=None, help="passed to blip2 serve (default: its own)")
    parser.add_argument("--max-wait-ms", type=float, default=None, help="passed to blip2 serve (default: its own)")
    parser.add_argument("--doc", type=Path, default=None, help="also write the section of this Markdown file")
    parser.add_argument("--json", action="store_true", help="JSON on stdout (the report goes to stderr)")
    args = parser.parse_args(argv)
    for name in ("clients", "requests", "images", "blocks"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be >= 1, got {getattr(args, name)}")
    if args.clients * args.requests < args.blocks:
        parser.error(f"--clients x --requests ({args.clients * args.requests}) must be >= --blocks ({args.blocks})")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    command = "python -m benchmarks.serving" + "".join(
        f" {shlex.quote(a)}" for a in (argv if argv is not None else sys.argv[1:]))
    run = measure(args)
    text = report(run, command)
    print(text, file=sys.stderr if args.json else sys.stdout, flush=True)
    if args.doc is not None:
        write_section(args.doc, doc_section(run, command))
        print(f"wrote its section of {args.doc}", file=sys.stderr if args.json else sys.stdout)
    if args.json:
        print(json.dumps({"command": command, **run}, indent=2, default=str))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    sys.exit(main())
