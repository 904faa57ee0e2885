"""``ApiError``: a request the server refuses, with the HTTP status and the one-line reason the
client gets as ``{"error": {"message": ..., "type": ...}}``."""

from __future__ import annotations

#: status -> the ``type`` of the error document
ERROR_TYPES = {
    400: "invalid_request",
    404: "not_found",
    405: "method_not_allowed",
    413: "request_too_large",
    422: "unprocessable",
    500: "server_error",
    503: "overloaded",
}


class ApiError(Exception):
    """Answered as ``status`` with ``message`` (and ``headers``, e.g. Retry-After)."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}

    @property
    def type(self) -> str:
        return ERROR_TYPES.get(self.status, "error")

    def document(self) -> dict:
        return {"error": {"message": self.message, "type": self.type}}


def bad_request(message: str) -> ApiError:
    return ApiError(400, message)
