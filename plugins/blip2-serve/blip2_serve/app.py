"""``create_app(pipeline, settings)``: the FastAPI app of ``blip2 serve`` (routes: docs/serving.md).

Each API handler reads its fields (JSON or multipart), decodes and preprocesses its image in a
thread (a bad image is that request's 400), then hands the work to the ``Batcher``, which makes
the pipeline calls through one ``AsyncPipeline`` (forward passes one at a time). A streamed chat
goes to the ``AsyncPipeline`` directly. Errors are ``{"error": {"message", "type"}}``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse, StreamingResponse
from fastapi.staticfiles import StaticFiles
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException

from blip2core import Blip2Error
from blip2core.plugin_api import CAPTION_DEFAULTS, VQA_DEFAULTS, AsyncPipeline, GenerationSettings
from blip2_serve import openai_chat
from blip2_serve.batcher import Batcher, BatchKey, QueueFull
from blip2_serve.errors import ApiError, bad_request
from blip2_serve.inputs import RequestFields, image_bytes
from blip2_serve.metrics import Metrics
from blip2_serve.settings import ServeSettings
from blip2_serve.work import ImageItem, run_batch

if TYPE_CHECKING:
    import torch

    from blip2core import Pipeline

STATIC = Path(__file__).parent / "static"
PLACEHOLDER = "blip2 serve is running; the web page (static/index.html) is not installed. The API: /v1/... (docs/serving.md)\n"
log = logging.getLogger("blip2_serve")

#: decoding options a caption / answer request may set (sampling is left out: batched sampling
#: would not give what single calls give)
DECODING = ("num_beams", "max_new_tokens", "min_new_tokens", "length_penalty", "repetition_penalty")


def create_app(pipeline: Pipeline, settings: ServeSettings | None = None) -> FastAPI:
    """The app serving ``pipeline`` (shared by every request) with ``settings``."""
    settings = settings if settings is not None else ServeSettings()
    server = _Server(pipeline, settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        server.batcher.start()
        try:
            yield
        finally:  # uvicorn gets here after the in-flight requests finished
            await server.batcher.stop()
            await asyncio.to_thread(server.model.close)

    app = FastAPI(title="blip2 serve", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.server = server
    app.add_middleware(LimitsAndMetrics, max_body_bytes=settings.max_body_bytes, metrics=server.metrics)
    _add_error_handlers(app)
    _add_routes(app, server)
    app.mount("/static", StaticFiles(directory=STATIC, check_dir=False), name="static")
    return app


class _Server:
    """What the handlers share: the pipeline, its async wrapper, the batcher, the metrics."""

    def __init__(self, pipeline: Pipeline, settings: ServeSettings) -> None:
        self.pipe = pipeline
        self.settings = settings
        self.model = AsyncPipeline(pipeline)
        self.metrics = Metrics()
        self.batcher = Batcher(self._run, max_batch=settings.max_batch, max_wait_ms=settings.max_wait_ms,
                               max_queue=settings.max_queue, metrics=self.metrics)

    async def _run(self, key: BatchKey, items: list[ImageItem]) -> list[Any]:
        return await self.model.run(run_batch, self.pipe, key, items)

    async def submit(self, key: BatchKey, item: ImageItem) -> Any:
        try:
            return await self.batcher.submit(key, item)
        except QueueFull as error:
            raise ApiError(503, str(error), {"Retry-After": str(error.retry_after_s)}) from None
        except (Blip2Error, ValueError, TypeError) as error:
            raise ApiError(422, f"{key.route}: {error}") from None

    async def fields(self, request: Request) -> RequestFields:
        """The request's fields from its JSON body or its form."""
        kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if kind not in ("multipart/form-data", "application/x-www-form-urlencoded"):
            return RequestFields.from_json(await request.body())
        try:
            form = await request.form(max_files=4, max_fields=64, max_part_size=self.settings.max_body_bytes)
        except StarletteHTTPException as error:
            raise bad_request(f"the form cannot be read: {error.detail}") from None
        values: dict[str, list[str]] = {}
        files: dict[str, tuple[str, bytes]] = {}
        for name, value in form.multi_items():
            if isinstance(value, UploadFile):
                files[name] = (value.filename or name, await value.read())
            else:
                values.setdefault(name, []).append(value)
        return RequestFields(values, files=files, form=True)

    async def image(self, fields: RequestFields, name: str = "image") -> bytes:
        return await fields.image(name, allow_urls=self.settings.allow_url_images,
                                  max_bytes=self.settings.max_body_bytes)

    async def pixels(self, data: bytes, name: str = "image") -> torch.Tensor:
        """Encoded image -> pixel_values [1, 3, S, S] through the pipeline's preprocessor (in a thread)."""
        if self.pipe.preprocessor is None:
            raise ApiError(422, "this pipeline has no image preprocessor, so it cannot take images")
        try:
            return await asyncio.to_thread(self.pipe.preprocessor, data)
        except Blip2Error as error:
            raise bad_request(f"field {name!r}: {getattr(error, 'reason', error)}") from None

    def decoding(self, fields: RequestFields, defaults: GenerationSettings) -> dict[str, Any]:
        """Every decoding option, the request's or the default (so equal requests share a batch key)."""
        limit = self.settings
        return {
            "num_beams": fields.integer("num_beams", defaults.num_beams, 1, limit.max_beams),
            "max_new_tokens": fields.integer("max_new_tokens", defaults.max_new_tokens, 1, limit.max_new_tokens),
            "min_new_tokens": fields.integer("min_new_tokens", defaults.min_new_tokens, 0, limit.max_new_tokens),
            "length_penalty": fields.number("length_penalty", defaults.length_penalty, -10.0, 10.0),
            "repetition_penalty": fields.number("repetition_penalty", defaults.repetition_penalty, 0.01, 10.0),
        }


def _add_routes(app: FastAPI, server: _Server) -> None:
    settings = server.settings

    @app.get("/", include_in_schema=False)
    async def index() -> Any:
        page = STATIC / "index.html"
        if page.is_file():
            return FileResponse(page, media_type="text/html")
        return PlainTextResponse(PLACEHOLDER)

    @app.get("/health")
    async def health() -> dict:
        return {"status": "ok", "model": settings.model}

    @app.get("/metrics")
    async def metrics() -> dict:
        return server.metrics.snapshot(server.batcher.depth)

    @app.post("/v1/caption")
    async def caption(request: Request) -> dict:
        fields = await server.fields(request)
        fields.check_known(("image", "prompt", *DECODING))
        options = {**server.decoding(fields, CAPTION_DEFAULTS), "prompt": fields.text("prompt")}
        pixels = await server.pixels(await server.image(fields))
        return {"caption": await server.submit(BatchKey.of("caption", options), ImageItem(pixels=pixels))}

    @app.post("/v1/answer")
    async def answer(request: Request) -> dict:
        fields = await server.fields(request)
        fields.check_known(("image", "question", *DECODING))
        question = fields.text("question", required=True)
        options = server.decoding(fields, VQA_DEFAULTS)
        pixels = await server.pixels(await server.image(fields))
        text = await server.submit(BatchKey.of("answer", options), ImageItem(pixels=pixels, text=question))
        return {"answer": text}

    @app.post("/v1/features")
    async def features(request: Request) -> dict:
        fields = await server.fields(request)
        fields.check_known(("image", "text"))
        if fields.has("image") == fields.has("text"):
            raise bad_request("give exactly one of the fields 'image' and 'text'")
        if fields.has("text"):
            item = ImageItem(text=fields.text("text", required=True))
            return await server.submit(BatchKey.of("features", {"mode": "text"}), item)
        pixels = await server.pixels(await server.image(fields))
        return await server.submit(BatchKey.of("features", {"mode": "image"}), ImageItem(pixels=pixels))

    @app.post("/v1/match")
    async def match(request: Request) -> dict:
        fields = await server.fields(request)
        fields.check_known(("image", "texts", "method"))
        texts = fields.texts("texts", limit=settings.max_texts)
        method = fields.choice("method", "itm", ("itm", "itc"))
        data = await server.image(fields)
        await server.pixels(data)  # a bad image: 400 naming it
        key = BatchKey.of("match", {"method": method}, batchable=False)
        return {"scores": await server.submit(key, ImageItem(data=data, extra=texts))}

    @app.post("/v1/chat")
    async def chat(request: Request) -> dict:
        fields = await server.fields(request)
        fields.check_known(("image", "messages", "stop", "max_new_tokens", "num_beams", "repetition_penalty"))
        messages = fields.messages()
        options: dict[str, Any] = {}
        if fields.has("max_new_tokens"):
            options["max_new_tokens"] = fields.integer("max_new_tokens", 0, 1, settings.max_new_tokens)
        if fields.has("num_beams"):
            options["num_beams"] = fields.integer("num_beams", 1, 1, settings.max_beams)
        if fields.has("repetition_penalty"):
            options["repetition_penalty"] = fields.number("repetition_penalty", 1.0, 0.01, 10.0)
        if fields.has("stop"):
            options["stop"] = fields.text("stop")
        data = await server.image(fields)
        await server.pixels(data)
        key = BatchKey.of("chat", options, batchable=False)
        return {"reply": await server.submit(key, ImageItem(data=data, extra=messages))}

    @app.post("/v1/explain")
    async def explain(request: Request) -> dict:
        fields = await server.fields(request)
        fields.check_known(("image", "question"))
        question = fields.text("question")
        data = await server.image(fields)
        await server.pixels(data)
        return await server.submit(BatchKey.of("explain", {}, batchable=False), ImageItem(data=data, text=question))

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Any:
        fields = await server.fields(request)
        asked = openai_chat.parse_request(fields, max_new_tokens=settings.max_new_tokens)
        data = await image_bytes(asked.image_url, "messages[].image_url.url", allow_urls=settings.allow_url_images,
                                 max_bytes=settings.max_body_bytes)
        await server.pixels(data, "messages[].image_url.url")
        ids = openai_chat.CompletionIds(settings.model)
        if not asked.stream:
            key = BatchKey.of("chat", {**asked.options, "stop": _hashable(asked.options.get("stop"))},
                              batchable=False)
            reply = await server.submit(key, ImageItem(data=data, extra=asked.messages))
            return ids.completion(reply)
        try:
            pieces = await server.model.chat(data, asked.messages, stream=True, **asked.options)
        except (Blip2Error, ValueError, TypeError) as error:
            raise ApiError(422, f"chat: {error}") from None
        return StreamingResponse(_events(ids, pieces), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache"})


async def _events(ids: openai_chat.CompletionIds, pieces: AsyncIterator[str]) -> AsyncIterator[str]:
    """The SSE stream: a role chunk, one chunk per piece, a finish chunk, ``[DONE]``; an error
    during generation ends it with an ``{"error": ...}`` event."""
    yield ids.chunk({"role": "assistant", "content": ""})
    try:
        async for piece in pieces:
            yield ids.chunk({"content": piece})
    except Exception as error:  # noqa: BLE001 - the status is sent already: report it in the stream
        log.exception("streamed chat failed")
        yield openai_chat.sse({"error": {"message": f"chat: {error}", "type": "server_error"}})
    else:
        yield ids.chunk({}, "stop")
    finally:
        await pieces.aclose()
    yield openai_chat.DONE


def _hashable(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(request: Request, error: ApiError) -> JSONResponse:
        return JSONResponse(error.document(), status_code=error.status, headers=error.headers)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException) -> JSONResponse:
        message = error.detail if isinstance(error.detail, str) else str(error.detail)
        if error.status_code == 404:
            message = f"no route {request.method} {request.url.path} (see docs/serving.md)"
        return JSONResponse(ApiError(error.status_code, message).document(), status_code=error.status_code,
                            headers=getattr(error, "headers", None))

    @app.exception_handler(Exception)
    async def unexpected(request: Request, error: Exception) -> JSONResponse:
        log.error("%s %s failed", request.method, request.url.path, exc_info=error)
        document = ApiError(500, f"internal error ({type(error).__name__}: {error})").document()
        return JSONResponse(document, status_code=500)


class BodyTooLarge(ApiError):
    def __init__(self, limit: int) -> None:
        super().__init__(413, f"the request body is larger than the server's limit of {limit:,} bytes "
                              "(--max-body-mb)")


class LimitsAndMetrics:
    """ASGI middleware: refuses bodies over ``max_body_bytes`` (413, from Content-Length before
    reading, else while reading) and records every /v1/ request in ``metrics``."""

    def __init__(self, app: Any, *, max_body_bytes: int, metrics: Metrics) -> None:
        self.app, self.max_body_bytes, self.metrics = app, max_body_bytes, metrics

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = [500]
        limit = self.max_body_bytes

        async def recording_send(message: dict) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            length = dict(scope["headers"]).get(b"content-length")
            if length is not None and length.isdigit() and int(length) > limit:
                response = JSONResponse(BodyTooLarge(limit).document(), status_code=413,
                                        headers={"Connection": "close"})
                await response(scope, receive, recording_send)
                return
            received = 0

            async def limited_receive() -> dict:
                nonlocal received
                message = await receive()
                if message["type"] == "http.request":
                    received += len(message.get("body", b""))
                    if received > limit:
                        raise BodyTooLarge(limit)
                return message

            await self.app(scope, limited_receive, recording_send)
        finally:
            if scope["path"].startswith("/v1/"):
                self.metrics.request_done((time.perf_counter() - started) * 1000, error=status[0] >= 400)
