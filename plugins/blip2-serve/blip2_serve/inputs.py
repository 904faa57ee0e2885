"""Request fields, from a JSON object or a multipart form, checked one by one with errors that name
the field and what was expected.

JSON values keep their types (an int must be a JSON integer); form fields are strings and are
parsed (``"30"`` for an int; a list as repeated fields or one JSON array; messages as JSON text).
Images: a base64 data URL (``data:image/png;base64,...``) in either; a file part in a form; an
http(s) URL only when the server allows them (downloaded with a timeout and a size cap).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import math
from collections.abc import Iterable
from typing import Any

from blip2core import Blip2Error
from blip2core.plugin_api import download_image

from blip2_serve.errors import bad_request

URL_TIMEOUT_S = 10.0


class RequestFields:
    """The named fields of one request.

    Args:
        values: field -> value (JSON values, or for a form: field -> list of strings).
        files: form file parts: field -> (filename, bytes).
        form: whether ``values`` came from a form (strings to parse).
    """

    def __init__(self, values: dict[str, Any], *, files: dict[str, tuple[str, bytes]] | None = None,
                 form: bool = False) -> None:
        self.values = values
        self.files = files or {}
        self.form = form

    @classmethod
    def from_json(cls, body: bytes) -> RequestFields:
        try:
            document = json.loads(body)
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise bad_request(f"the request body is not valid JSON: {error}") from None
        if not isinstance(document, dict):
            raise bad_request(f"the request body must be a JSON object, got {_json_type(document)}")
        return cls(document)

    def check_known(self, names: Iterable[str]) -> None:
        """400 for a field this route does not take (a typo would otherwise be silently ignored)."""
        known = set(names)
        unknown = sorted((set(self.values) | set(self.files)) - known)
        if unknown:
            raise bad_request(f"unknown field {unknown[0]!r}; this route takes: {', '.join(sorted(known))}")

    def has(self, name: str) -> bool:
        return name in self.values or name in self.files

    def _scalar(self, name: str) -> Any:
        value = self.values.get(name)
        if self.form and isinstance(value, list):
            if len(value) != 1:
                raise bad_request(f"field {name!r} is given {len(value)} times; give it once")
            return value[0]
        return value

    def text(self, name: str, *, required: bool = False, default: str | None = None) -> str | None:
        """A non-empty string."""
        if not self.has(name):
            if required:
                raise bad_request(f"missing field {name!r} (a string)")
            return default
        value = self._scalar(name)
        if not isinstance(value, str):
            raise bad_request(f"field {name!r} must be a string, got {_json_type(value)}")
        if not value.strip():
            raise bad_request(f"field {name!r} is empty")
        return value

    def integer(self, name: str, default: int, minimum: int, maximum: int) -> int:
        """An int in [minimum, maximum] (a form's ``"30"`` too)."""
        if not self.has(name):
            return default
        value = self._scalar(name)
        if self.form and isinstance(value, str):
            try:
                value = int(value.strip())
            except ValueError:
                raise bad_request(f"field {name!r} must be an integer, got {value!r}") from None
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad_request(f"field {name!r} must be an integer, got {_json_type(value)}")
        if not minimum <= value <= maximum:
            raise bad_request(f"field {name!r} must be between {minimum} and {maximum}, got {value}")
        return value

    def number(self, name: str, default: float, minimum: float, maximum: float) -> float:
        """A finite number in [minimum, maximum]."""
        if not self.has(name):
            return default
        value = self._scalar(name)
        if self.form and isinstance(value, str):
            try:
                value = float(value.strip())
            except ValueError:
                raise bad_request(f"field {name!r} must be a number, got {value!r}") from None
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise bad_request(f"field {name!r} must be a finite number, got {value!r}")
        if not minimum <= value <= maximum:
            raise bad_request(f"field {name!r} must be between {minimum} and {maximum}, got {value}")
        return float(value)

    def choice(self, name: str, default: str, choices: tuple[str, ...]) -> str:
        value = self.text(name, default=default)
        if value not in choices:
            raise bad_request(f"field {name!r} must be one of {', '.join(choices)}, got {value!r}")
        return value

    def texts(self, name: str, *, limit: int) -> list[str]:
        """A non-empty list of non-empty strings (a form: repeated fields, or one JSON array)."""
        if not self.has(name):
            raise bad_request(f"missing field {name!r} (a list of strings)")
        value = self.values[name]
        if self.form:
            value = _form_json(name, value[0]) if len(value) == 1 and value[0].lstrip().startswith("[") else value
        if not isinstance(value, list) or not value:
            raise bad_request(f"field {name!r} must be a non-empty list of strings, got {_json_type(value)}")
        if len(value) > limit:
            raise bad_request(f"field {name!r} holds {len(value)} strings; at most {limit} per request")
        for i, item in enumerate(value):
            if not isinstance(item, str) or not item.strip():
                raise bad_request(f"field {name!r}: item {i} must be a non-empty string, got {item!r}")
        return value

    def messages(self, name: str = "messages") -> list[dict[str, str]]:
        """``[{"role", "content"}, ...]`` (a form: as JSON text); the pipeline checks roles and order."""
        if not self.has(name):
            raise bad_request(f"missing field {name!r} (a list of {{\"role\", \"content\"}} objects)")
        value = _form_json(name, self._scalar(name)) if self.form else self.values[name]
        if not isinstance(value, list) or not value:
            raise bad_request(f"field {name!r} must be a non-empty list of messages, got {_json_type(value)}")
        for i, message in enumerate(value):
            if not isinstance(message, dict) or not isinstance(message.get("role"), str) \
                    or not isinstance(message.get("content"), str):
                raise bad_request(f"field {name!r}: message {i} must be an object with string 'role' and 'content'")
        return value

    async def image(self, name: str = "image", *, allow_urls: bool, max_bytes: int) -> bytes:
        """The encoded image of field ``name``: an uploaded file, a data URL or (when allowed) an http(s) URL."""
        if name in self.files:
            data = self.files[name][1]
            if not data:
                raise bad_request(f"field {name!r}: the uploaded file {self.files[name][0]!r} is empty")
            return data
        if not self.has(name):
            raise bad_request(f"missing field {name!r} (a data URL such as data:image/png;base64,..., "
                              "or a file part in a multipart form)")
        value = self._scalar(name)
        if not isinstance(value, str):
            raise bad_request(f"field {name!r} must be a data URL string, got {_json_type(value)}")
        return await image_bytes(value, name, allow_urls=allow_urls, max_bytes=max_bytes)


async def image_bytes(value: str, field: str, *, allow_urls: bool, max_bytes: int) -> bytes:
    """A data URL's bytes, or an http(s) URL's download (only with ``allow_urls``)."""
    head = value[:8].lower()
    if head.startswith(("http://", "https://")):
        if not allow_urls:
            raise bad_request(f"field {field!r}: image URLs are disabled on this server (start it with "
                              "--allow-url-images), send the image as a data URL or a file upload")
        return await asyncio.to_thread(download, value, field, max_bytes)
    return decode_data_url(value, field)


def decode_data_url(value: str, field: str) -> bytes:
    """``data:[<type>];base64,<data>`` -> bytes; a 400 naming what is wrong otherwise."""
    if not value[:5].lower() == "data:":
        shown = value[:30] + ("..." if len(value) > 30 else "")
        raise bad_request(f"field {field!r} must be a data URL (data:image/png;base64,...), got {shown!r}")
    header, comma, payload = value.partition(",")
    if not comma:
        raise bad_request(f"field {field!r}: the data URL has no ',' before its data")
    if not header.lower().endswith(";base64"):
        raise bad_request(f"field {field!r}: the data URL must be base64 ({header},... lacks ';base64')")
    try:
        data = base64.b64decode("".join(payload.split()), validate=True)
    except (binascii.Error, ValueError) as error:
        raise bad_request(f"field {field!r}: the data URL's base64 is invalid ({error})") from None
    if not data:
        raise bad_request(f"field {field!r}: the data URL holds no data")
    return data


def download(url: str, field: str, max_bytes: int) -> bytes:
    """The body of an http(s) URL (at most ``max_bytes``; the core's downloader), or a 400 naming the
    field, the URL and the failure."""
    try:
        return download_image(url, URL_TIMEOUT_S, max_bytes)
    except Blip2Error as error:
        raise bad_request(f"field {field!r}: {error}") from None


def _form_json(name: str, text: Any) -> Any:
    if not isinstance(text, str):
        raise bad_request(f"field {name!r} must be JSON text in a form")
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise bad_request(f"field {name!r} is not valid JSON: {error}") from None


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return f"a number ({value})"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list" if value else "an empty list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__
