"""Talking to OpenAI-compatible backends (vLLM, llama.cpp's server, xAI) over one client.

`complete()` makes a non-streamed call and returns the parsed JSON. `open_stream()`
sends a streamed call and waits for the *first* chunk before returning: a failure up to
that point is an ordinary `BackendError` that a fallback can still handle, because the
client has not seen a byte yet. After that, `UpstreamStream` yields parsed chunks and
raises `BackendError` (kinds `timeout`, `bad_response`, `stream_cut`, ...) mid-stream.

Every failure becomes a `BackendError` with a `kind` (see errors.BACKEND_ERROR_KINDS) and
a message that names the backend but never its key.
"""

from __future__ import annotations

import asyncio
import re
import time
from email.utils import parsedate_to_datetime
from typing import Any, AsyncIterator

from engine.breaker import Breaker
from engine.errors import BackendError
from engine.graph import Backend
from engine.jsonbytes import compact, loads
from engine.upstream import Client, Response

# How model servers word "your prompt is too long" (vLLM, llama.cpp, OpenAI-style APIs).
CONTEXT_LENGTH = re.compile(
    r"context length|context window|maximum context|exceeds? (?:the )?(?:available )?context|"
    r"too many tokens|prompt is too long|context_length_exceeded|exceed_context_size",
    re.IGNORECASE,
)


def headers_for(backend: Backend) -> dict[str, str]:
    key = backend.api_key()
    if backend.key_required and not key:
        raise BackendError("no_api_key", f"backend {backend.name!r}: {backend.api_key_env} is not set",
                           backend=backend.name)
    headers = {"Content-Type": "application/json", "Accept": "application/json"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    return headers


def _upstream_message(payload: bytes) -> str:
    text = payload.decode("utf-8", "replace")
    try:
        data = loads(text)
    except ValueError:
        return text.strip()[:300]
    if isinstance(data, dict):
        err = data.get("error", data)
        if isinstance(err, dict):
            return str(err.get("message") or err.get("detail") or err)[:300]
        return str(err)[:300]
    return text.strip()[:300]


def retry_after_seconds(value: str | None) -> float | None:
    """Retry-After is either seconds or an HTTP date."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


def redact(text: str, backend: Backend) -> str:
    """Blank out the backend's key if an upstream message echoes it (some providers do, on a 401)."""
    key = backend.api_key()
    return text.replace(key, "[redacted]") if key and len(key) >= 4 else text


def _status_error(backend: Backend, status: int, payload: bytes, headers=None) -> BackendError:
    message = redact(_upstream_message(payload), backend)
    if status == 429:
        kind = "http_429"
    elif status >= 500:
        kind = "http_5xx"
    elif CONTEXT_LENGTH.search(message):
        kind = "context_length"
    else:
        kind = "http_4xx"
    retry_after = retry_after_seconds(headers.get("Retry-After")) if headers is not None else None
    return BackendError(kind, f"backend {backend.name!r} answered {status}: {message}",
                        backend=backend.name, status=status, retry_after=retry_after)


def _client_error(backend: Backend, exc: BaseException, phase: str) -> BackendError:
    if isinstance(exc, asyncio.TimeoutError):
        return BackendError("timeout", f"backend {backend.name!r} timed out {phase}", backend=backend.name)
    detail = str(exc) or type(exc).__name__
    return BackendError("connect", f"backend {backend.name!r} unreachable {phase}: {detail}",
                        backend=backend.name)


def admit(backend: Backend, breaker: Breaker | None) -> None:
    """Fail fast while the backend's circuit is open."""
    if breaker is not None and not breaker.allow():
        raise BackendError("circuit_open", f"backend {backend.name!r} is failing; not calling it for another "
                           f"{breaker.retry_in():.0f} s (circuit open)", backend=backend.name)


async def guarded(backend: Backend, breaker: Breaker | None, call):
    """Run `call()` through the backend's circuit breaker: fail fast while open, count the outcome."""
    admit(backend, breaker)
    try:
        result = await call()
    except BackendError as err:
        if breaker is not None:
            breaker.failure(err.kind)
        raise
    if breaker is not None:
        breaker.success()
    return result


async def complete(client: Client, backend: Backend, body: dict[str, Any],
                   *, timeout: float | None = None, breaker: Breaker | None = None) -> dict[str, Any]:
    """One non-streamed chat completion; returns the response JSON."""
    headers = headers_for(backend)
    return await guarded(backend, breaker, lambda: _complete(client, backend, body, headers, timeout))


async def _complete(client: Client, backend: Backend, body: dict[str, Any], headers: dict[str, str],
                    timeout: float | None) -> dict[str, Any]:
    limit = timeout or backend.timeouts["total"]
    response = None
    try:
        async with asyncio.timeout(limit):
            response = await client.request("POST", backend.chat_url, body=compact(body), headers=headers,
                                            connect_timeout=backend.timeouts["connect"])
            payload = await response.read()
    except (asyncio.TimeoutError, OSError) as exc:
        raise _client_error(backend, exc, "before answering") from None
    finally:
        if response is not None:
            response.close()  # a no-op once the body is read; else it drops the connection
    if response.status >= 400:
        raise _status_error(backend, response.status, payload, response.headers)
    try:
        data = loads(payload)
        data["choices"][0]["message"]
    except (ValueError, KeyError, IndexError, TypeError):
        raise BackendError("bad_response", f"backend {backend.name!r} sent a response that is not a "
                           "chat completion", backend=backend.name) from None
    return data


class UpstreamStream:
    """An open SSE stream from a backend; iterate for parsed chunk dicts."""

    def __init__(self, backend: Backend, response: Response, breaker: Breaker | None = None):
        self.backend = backend
        self.response = response
        self.breaker = breaker
        self.finished = False       # saw [DONE] or a finish_reason
        self._pending: list[dict[str, Any]] = []

    async def _next_event(self, limit: float) -> dict[str, Any] | None:
        """Read SSE lines until one `data:` event; None at [DONE] or end of body."""
        while True:
            try:
                # asyncio.timeout, not wait_for: wait_for makes a Task per line (14 % of the
                # engine's time while streaming, bench/README.md).
                async with asyncio.timeout(limit):
                    line = await self.response.readline()
            except asyncio.TimeoutError:
                raise BackendError("timeout", f"backend {self.backend.name!r} stalled mid-stream "
                                   f"(no chunk for {limit:g} s)", backend=self.backend.name) from None
            except OSError:
                raise BackendError("stream_cut", f"backend {self.backend.name!r} ended the stream before "
                                   "finishing the answer (connection lost)", backend=self.backend.name) from None
            if not line:
                if not self.finished:
                    raise BackendError("stream_cut", f"backend {self.backend.name!r} ended the stream "
                                       "before finishing the answer", backend=self.backend.name)
                return None
            line = line.strip()
            if not line.startswith(b"data:"):
                continue  # blank separators, comments, event: lines
            data = line[5:].strip()
            if data == b"[DONE]":
                self.finished = True
                return None
            try:
                chunk = loads(data)
            except ValueError:
                raise BackendError("bad_response", f"backend {self.backend.name!r} sent a malformed "
                                   "stream chunk", backend=self.backend.name) from None
            if not isinstance(chunk, dict):
                raise BackendError("bad_response", f"backend {self.backend.name!r} sent a malformed "
                                   "stream chunk", backend=self.backend.name)
            if "error" in chunk:
                raise BackendError("http_5xx", f"backend {self.backend.name!r} reported mid-stream: "
                                   f"{redact(_upstream_message(data), self.backend)}", backend=self.backend.name)
            for choice in chunk.get("choices") or ():
                if isinstance(choice, dict) and choice.get("finish_reason"):
                    self.finished = True
            return chunk

    async def prefetch(self, limit: float) -> None:
        """Wait for the first chunk (first-token timeout) so failures happen before any byte."""
        first = await self._next_event(limit)
        if first is None:
            raise BackendError("bad_response", f"backend {self.backend.name!r} sent an empty stream",
                               backend=self.backend.name)
        self._pending.append(first)

    async def chunks(self) -> AsyncIterator[dict[str, Any]]:
        while self._pending:
            yield self._pending.pop(0)
        idle = self.backend.timeouts["idle"]
        while True:
            try:
                chunk = await self._next_event(idle)
            except BackendError as err:
                if self.breaker is not None:
                    self.breaker.failure(err.kind)
                raise
            if chunk is None:
                return
            yield chunk

    def close(self) -> None:
        """Release the connection. Closing before the end cancels the upstream generation."""
        self.response.close()


async def open_stream(client: Client, backend: Backend, body: dict[str, Any],
                      breaker: Breaker | None = None) -> UpstreamStream:
    headers = headers_for(backend)
    headers["Accept"] = "text/event-stream"
    return await guarded(backend, breaker, lambda: _open_stream(client, backend, body, headers, breaker))


async def _open_stream(client: Client, backend: Backend, body: dict[str, Any], headers: dict[str, str],
                       breaker: Breaker | None) -> UpstreamStream:
    first_token = backend.timeouts["first_token"]
    try:
        async with asyncio.timeout(first_token):
            response = await client.request("POST", backend.chat_url, body=compact(body), headers=headers,
                                            connect_timeout=backend.timeouts["connect"])
    except (asyncio.TimeoutError, OSError) as exc:
        raise _client_error(backend, exc, "before answering") from None
    if response.status >= 400:
        try:
            async with asyncio.timeout(backend.timeouts["idle"]):
                payload = await response.read()
        except (asyncio.TimeoutError, OSError):
            payload = b""
        headers_in = response.headers
        response.close()
        raise _status_error(backend, response.status, payload, headers_in)
    stream = UpstreamStream(backend, response, breaker)
    try:
        await stream.prefetch(first_token)
    except BackendError as err:
        stream.close()
        if err.kind in ("stream_cut", "bad_response"):
            # A stream that ended before its first event: llama.cpp's server does this for a
            # prompt longer than its context. A one-token non-streamed call gets the real reason
            # (a proper 400), so the client sees "context length exceeded", not "bad gateway".
            await _diagnose_empty_stream(client, backend, body, headers)
        raise
    except BaseException:
        stream.close()
        raise
    return stream


async def _diagnose_empty_stream(client: Client, backend: Backend, body: dict[str, Any], headers: dict[str, str]) -> None:
    """Raise the backend's own error for `body` sent without streaming, if it has one."""
    probe = {k: v for k, v in body.items() if k not in ("stream", "stream_options")}
    probe["max_tokens"] = 1
    # One call: a pooled connection the server dropped along with the stream is the client's
    # to replace (engine.upstream sends again on a new one when not a byte came back).
    try:
        await _complete(client, backend, probe, headers, backend.timeouts["first_token"])
    except BackendError as err:
        if err.kind in ("context_length", "http_4xx"):
            raise
    # It works without streaming, or fails otherwise: the original error stands.
