"""Every exception the engine raises on purpose, in one place.

    EngineError                      base; never reaches a client as a traceback
    +-- ConfigError                  routes.yaml or a prompt does not lint (carries the problem list)
    +-- RequestError  (HTTP 4xx)     the client's request is malformed; `param` names the field
    +-- BackendError  (HTTP 502/504/4xx)
    |                                an upstream model server failed; `kind` says how
    +-- TemplateRenderError          a prompt template failed at render time (HTTP 500)

HTTP-facing errors carry their status and OpenAI error `type`, so the error middleware
(`app.error_middleware`) can turn any of them into OpenAI's error shape:
`{"error": {"message", "type", "param", "code"}}`.
"""

from __future__ import annotations

from typing import Any


class EngineError(Exception):
    """Base of every error the engine raises deliberately."""

    status = 500
    error_type = "server_error"
    code: str | None = None
    param: str | None = None

    def to_openai(self) -> dict[str, Any]:
        return {
            "error": {
                "message": str(self),
                "type": self.error_type,
                "param": self.param,
                "code": self.code,
            }
        }


class ConfigError(EngineError):
    """The route graph does not lint; `problems` holds every problem found."""

    def __init__(self, problems: list[Any]):
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


class RequestError(EngineError):
    """A malformed client request: always a 4xx that says what is wrong."""

    error_type = "invalid_request_error"

    def __init__(self, message: str, *, param: str | None = None, status: int = 400,
                 code: str | None = None, error_type: str | None = None):
        super().__init__(message)
        self.param = param
        self.status = status
        self.code = code
        if error_type:
            self.error_type = error_type


# Error kinds a backend call can fail with. Fallback rules in routes.yaml name these.
BACKEND_ERROR_KINDS = (
    "connect",          # could not connect (refused, DNS, reset before headers)
    "timeout",          # connect, first-token or between-chunk timeout
    "http_429",         # rate limited / quota
    "http_4xx",         # any other 4xx from the backend
    "http_5xx",         # 5xx from the backend
    "context_length",   # the prompt does not fit the model's context
    "bad_response",     # a body or stream that is not what OpenAI's protocol says
    "no_api_key",       # the backend's key env var is not set: not even tried
    "stream_cut",       # the stream ended without a finish (no [DONE], no finish_reason)
    "circuit_open",     # the backend's circuit breaker is open: not even tried
)


class BackendError(EngineError):
    """An upstream call failed. `kind` is one of BACKEND_ERROR_KINDS."""

    error_type = "upstream_error"

    def __init__(self, kind: str, message: str, *, backend: str, status: int | None = None,
                 retry_after: float | None = None):
        super().__init__(message)
        self.kind = kind
        self.retry_after = retry_after  # seconds, from the backend's Retry-After header
        self.backend = backend
        self.upstream_status = status
        self.code = kind
        # What the client sees when this happens before the first byte.
        if kind == "timeout":
            self.status = 504
        elif kind == "circuit_open":
            self.status = 503
        elif kind == "context_length":
            self.status, self.error_type, self.code = 400, "invalid_request_error", "context_length_exceeded"
        elif kind == "http_429":
            self.status, self.error_type = 429, "rate_limit_error"
        elif kind == "http_4xx" and status in (400, 404, 413, 422):
            # The backend rejected what we sent on the client's behalf (bad parameter, ...).
            self.status, self.error_type = 400, "invalid_request_error"
        else:
            self.status = 502


class TemplateRenderError(EngineError):
    """A prompt template failed while rendering (lint catches most of these earlier)."""
