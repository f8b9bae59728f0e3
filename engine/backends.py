"""Talking to OpenAI-compatible backends (vLLM, llama.cpp's server, xAI) over one session.

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
import json
import re
from typing import Any, AsyncIterator

import aiohttp

from engine.errors import BackendError
from engine.graph import Backend

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
        data = json.loads(text)
    except ValueError:
        return text.strip()[:300]
    if isinstance(data, dict):
        err = data.get("error", data)
        if isinstance(err, dict):
            return str(err.get("message") or err.get("detail") or err)[:300]
        return str(err)[:300]
    return text.strip()[:300]


def _status_error(backend: Backend, status: int, payload: bytes) -> BackendError:
    message = _upstream_message(payload)
    if status == 429:
        kind = "http_429"
    elif status >= 500:
        kind = "http_5xx"
    elif CONTEXT_LENGTH.search(message):
        kind = "context_length"
    else:
        kind = "http_4xx"
    return BackendError(kind, f"backend {backend.name!r} answered {status}: {message}",
                        backend=backend.name, status=status)


def _client_error(backend: Backend, exc: BaseException, phase: str) -> BackendError:
    if isinstance(exc, asyncio.TimeoutError):
        return BackendError("timeout", f"backend {backend.name!r} timed out {phase}", backend=backend.name)
    detail = str(exc) or type(exc).__name__
    return BackendError("connect", f"backend {backend.name!r} unreachable {phase}: {detail}",
                        backend=backend.name)


async def complete(session: aiohttp.ClientSession, backend: Backend, body: dict[str, Any],
                   *, timeout: float | None = None) -> dict[str, Any]:
    """One non-streamed chat completion; returns the response JSON."""
    headers = headers_for(backend)
    limit = timeout or backend.timeouts["total"]
    try:
        async with asyncio.timeout(limit):
            async with session.post(backend.chat_url, json=body, headers=headers,
                                    timeout=aiohttp.ClientTimeout(connect=backend.timeouts["connect"])) as resp:
                payload = await resp.read()
                if resp.status >= 400:
                    raise _status_error(backend, resp.status, payload)
    except BackendError:
        raise
    except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
        raise _client_error(backend, exc, "before answering") from None
    try:
        data = json.loads(payload)
        data["choices"][0]["message"]
    except (ValueError, KeyError, IndexError, TypeError):
        raise BackendError("bad_response", f"backend {backend.name!r} sent a response that is not a "
                           "chat completion", backend=backend.name) from None
    return data


class UpstreamStream:
    """An open SSE stream from a backend; iterate for parsed chunk dicts."""

    def __init__(self, backend: Backend, response: aiohttp.ClientResponse):
        self.backend = backend
        self.response = response
        self.finished = False       # saw [DONE] or a finish_reason
        self._pending: list[dict[str, Any]] = []

    async def _next_event(self, limit: float) -> dict[str, Any] | None:
        """Read SSE lines until one `data:` event; None at [DONE] or end of body."""
        while True:
            try:
                line = await asyncio.wait_for(self.response.content.readline(), limit)
            except asyncio.TimeoutError:
                raise BackendError("timeout", f"backend {self.backend.name!r} stalled mid-stream "
                                   f"(no chunk for {limit:g} s)", backend=self.backend.name) from None
            except (aiohttp.ClientError, OSError):
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
                chunk = json.loads(data)
            except ValueError:
                raise BackendError("bad_response", f"backend {self.backend.name!r} sent a malformed "
                                   "stream chunk", backend=self.backend.name) from None
            if not isinstance(chunk, dict):
                raise BackendError("bad_response", f"backend {self.backend.name!r} sent a malformed "
                                   "stream chunk", backend=self.backend.name)
            if "error" in chunk:
                raise BackendError("http_5xx", f"backend {self.backend.name!r} reported mid-stream: "
                                   f"{_upstream_message(data)}", backend=self.backend.name)
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
            chunk = await self._next_event(idle)
            if chunk is None:
                return
            yield chunk

    def close(self) -> None:
        """Release the connection. Closing before the end cancels the upstream generation."""
        if not self.response.closed:
            self.response.close()


async def open_stream(session: aiohttp.ClientSession, backend: Backend,
                      body: dict[str, Any]) -> UpstreamStream:
    headers = headers_for(backend)
    headers["Accept"] = "text/event-stream"
    first_token = backend.timeouts["first_token"]
    try:
        response = await asyncio.wait_for(
            session.post(backend.chat_url, json=body, headers=headers,
                         timeout=aiohttp.ClientTimeout(connect=backend.timeouts["connect"])),
            first_token)
    except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
        raise _client_error(backend, exc, "before answering") from None
    if response.status >= 400:
        try:
            payload = await asyncio.wait_for(response.read(), backend.timeouts["idle"])
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError):
            payload = b""
        response.close()
        raise _status_error(backend, response.status, payload)
    stream = UpstreamStream(backend, response)
    try:
        await stream.prefetch(first_token)
    except BaseException:
        stream.close()
        raise
    return stream
