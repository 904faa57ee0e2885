"""``blip2 serve --model NAME [--host --port --max-batch --max-wait-ms --max-queue --max-body-mb
--allow-url-images]``: load the model once, serve it over HTTP until SIGTERM / Ctrl-C.

SIGTERM stops gracefully: no new connections, the requests in flight get their answers, then the
process exits 0. Light at import: fastapi, uvicorn and torch load when the command runs.
"""

from __future__ import annotations

import signal
import socket

import click


@click.command("serve")
@click.option("--model", "model", default="mini", show_default=True, metavar="NAME",
              help="What load_pipeline accepts: a model name, a saved pipeline folder, a spec file, an HF folder.")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on (0.0.0.0: every interface).")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True,
              help="Port to listen on (0: any free one; the URL printed names it).")
@click.option("--max-batch", type=click.IntRange(min=1), default=16, show_default=True,
              help="Most requests answered by one pipeline call.")
@click.option("--max-wait-ms", type=click.FloatRange(min=0), default=10.0, show_default=True,
              help="How long the first request of a batch waits for others to join.")
@click.option("--max-queue", type=click.IntRange(min=1), default=256, show_default=True,
              help="Most requests waiting for the model; beyond it: 503 with Retry-After.")
@click.option("--max-body-mb", type=click.FloatRange(min=0, min_open=True), default=20.0, show_default=True,
              help="Largest request body in MiB; beyond it: 413.")
@click.option("--allow-url-images", is_flag=True, help="Let requests name images by http(s) URL (the server downloads them).")
@click.option("--device", default=None, help="Where to run (default: the spec's).")
@click.option("--dtype", default=None, help="Precision of the frozen parts (default: the spec's).")
def serve_command(model, host, port, max_batch, max_wait_ms, max_queue, max_body_mb, allow_url_images, device,
                  dtype) -> None:
    """Serve a model over HTTP: JSON routes for caption, answer, features, match, chat and explain
    with dynamic batching, an OpenAI-compatible /v1/chat/completions, a web page at / (docs/serving.md)."""
    import uvicorn

    from blip2core import load_pipeline
    from blip2_serve.app import create_app
    from blip2_serve.settings import ServeSettings

    settings = ServeSettings(model=model, max_batch=max_batch, max_wait_ms=max_wait_ms, max_queue=max_queue,
                             max_body_mb=max_body_mb, allow_url_images=allow_url_images)
    listener = _listen(host, port)  # before loading: a taken port fails at once
    pipe = load_pipeline(model, device=device, dtype=dtype)
    app = create_app(pipe, settings)
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on")
    server = uvicorn.Server(config)
    bound = listener.getsockname()[1]
    shown = f"[{host}]" if ":" in host else host
    click.echo(f"blip2 serve: {model} on http://{shown}:{bound} (Ctrl-C or SIGTERM to stop)", err=False)
    # uvicorn re-raises the signal that stopped it once it has shut down; a SIGTERM that was handled
    # gracefully is a clean exit here (0), not a death by signal
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: None)
    try:
        server.run(sockets=[listener])
    finally:
        signal.signal(signal.SIGTERM, previous)
        listener.close()
    click.echo("blip2 serve: stopped")


def _listen(host: str, port: int) -> socket.socket:
    """A listening TCP socket on (host, port), or a one-line error."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as error:
        sock.close()
        raise click.ClickException(f"cannot listen on {host}:{port}: {error.strerror or error}") from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock
