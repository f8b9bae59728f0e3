"""A fake OpenAI-compatible backend: a real aiohttp server on loopback.

Used where a real model server cannot run in a unit test. It speaks the same wire
protocol as vLLM / llama.cpp / xAI (JSON, or SSE chunks ending in `data: [DONE]`),
records every request it receives, and can be told how to answer each one.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from aiohttp import web


@dataclass
class Answer:
    """How the fake answers one request."""

    content: str = "hello from the fake"
    reasoning: str | None = None
    reasoning_field: str = "reasoning_content"   # vLLM >= 0.16 uses "reasoning"
    status: int = 200
    error_body: Any = None
    chunks: int | None = None        # stream the content in this many pieces (default: by word)
    cut_after: int | None = None     # stream: drop the connection after this many chunks
    omit_done: bool = False
    malformed_after: int | None = None
    delay: float = 0.0               # before the headers
    gap: float = 0.0                 # between chunks
    reset: bool = False              # drop the connection before sending headers
    first_chunk_delay: float = 0.0   # stream: headers at once, first chunk after this long
    stall_after: int | None = None   # stream: stop sending (but keep the connection) after N chunks
    retry_after: str | None = None   # Retry-After header on an error status
    no_finish: bool = False          # stream: never send a finish_reason
    usage: dict[str, int] = field(default_factory=lambda: {"prompt_tokens": 7, "completion_tokens": 5,
                                                             "total_tokens": 12})


class FakeBackend:
    def __init__(self, name: str):
        self.name = name
        self.requests: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.aborted = 0  # requests the engine closed before the end
        self.answer: Callable[[dict[str, Any]], Answer] = lambda body: Answer(content=f"{name} answer")
        self.app = web.Application()
        self.app.router.add_post("/v1/chat/completions", self.chat)
        self.app.router.add_get("/v1/models", self.models)
        self.url = ""

    async def models(self, request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": f"{self.name}-model"}]})

    async def chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.requests.append(body)
        self.headers.append(dict(request.headers))
        answer = self.answer(body)
        if answer.reset:
            request.transport.close()
            return web.Response()
        if answer.delay:
            try:
                await asyncio.sleep(answer.delay)
            except asyncio.CancelledError:
                self.aborted += 1  # the engine hung up while we were "generating"
                raise
        if answer.status != 200:
            headers = {"Retry-After": answer.retry_after} if answer.retry_after else None
            return web.json_response(answer.error_body or {"error": {"message": f"{self.name} failed"}},
                                     status=answer.status, headers=headers)
        if body.get("stream"):
            return await self.stream(request, body, answer)
        message: dict[str, Any] = {"role": "assistant", "content": answer.content}
        if answer.reasoning:
            message[answer.reasoning_field] = answer.reasoning
        return web.json_response({
            "id": "chatcmpl-fake", "object": "chat.completion", "created": int(time.time()),
            "model": body.get("model"),
            "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
            "usage": answer.usage,
        })

    async def stream(self, request: web.Request, body: dict[str, Any], answer: Answer) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        pieces = split(answer.content, answer.chunks)
        base = {"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": int(time.time()),
                "model": body.get("model")}
        events: list[dict[str, Any]] = []
        if answer.reasoning:
            events.append({**base, "choices": [{"index": 0, "delta": {answer.reasoning_field: answer.reasoning},
                                                "finish_reason": None}]})
        for piece in pieces:
            events.append({**base, "choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": None}]})
        if not answer.no_finish:
            events.append({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
        if (body.get("stream_options") or {}).get("include_usage"):
            events.append({**base, "choices": [], "usage": answer.usage})
        if answer.first_chunk_delay:
            await asyncio.sleep(answer.first_chunk_delay)
        try:
            await self.send_events(request, response, events, answer)
        except (ConnectionResetError, asyncio.CancelledError):
            self.aborted += 1  # the engine hung up on us: generation would stop here
            raise
        return response

    async def send_events(self, request, response, events, answer: Answer) -> None:
        for i, event in enumerate(events):
            if answer.stall_after is not None and i >= answer.stall_after:
                await asyncio.sleep(3600)
            if answer.cut_after is not None and i >= answer.cut_after:
                await asyncio.sleep(0.1)  # let the client read what was sent, as in a real crash
                request.transport.close()  # the server dies mid-answer
                return
            if answer.malformed_after is not None and i >= answer.malformed_after:
                await response.write(b"data: {not json\n\n")
                return
            await response.write(b"data: " + json.dumps(event).encode() + b"\n\n")
            if answer.gap:
                await asyncio.sleep(answer.gap)
        if not answer.omit_done:
            await response.write(b"data: [DONE]\n\n")


def split(text: str, pieces: int | None) -> list[str]:
    if pieces is None:
        words = text.split(" ")
        return [w + (" " if i < len(words) - 1 else "") for i, w in enumerate(words)]
    size = max(1, -(-len(text) // pieces))
    return [text[i:i + size] for i in range(0, len(text), size)]


def is_classifier_call(body: dict[str, Any]) -> bool:
    system = body["messages"][0]
    return system.get("role") == "system" and "request classifier" in system.get("content", "")
