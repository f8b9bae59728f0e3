"""Turn a Reply into what the client receives, and close the books on the request.

Non-streamed: the backend's JSON with our virtual model name and `reasoning_content`.
Streamed: one SSE event written (and flushed) per upstream chunk, `data: [DONE]` at the
end. A backend failure after the first byte cannot be hidden any more: the client gets a
final `data: {"error": ...}` event (Open WebUI shows it, the openai client raises), and
the session log says what happened. A client that hangs up closes the upstream stream,
which cancels the generation on the model server.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

from engine.context import RequestContext, text_of
from engine.errors import BackendError, EngineError
from engine.jsonbytes import compact

SSE_HEADERS = {
    "Content-Type": "text/event-stream",
    "Cache-Control": "no-cache",
    "Connection": "keep-alive",
    "X-Accel-Buffering": "no",  # tells nginx-style proxies not to buffer the stream
}


def error_response(err: EngineError) -> web.Response:
    return web.json_response(err.to_openai(), status=err.status)


def route_headers(ctx: RequestContext) -> dict[str, str]:
    return {"x-engine-route": ctx.route or "", "x-engine-session": ctx.id}


def fix_reasoning(holder: dict[str, Any], thinking_off: bool) -> None:
    """vLLM >= 0.16 says `reasoning`, older ones `reasoning_content`; clients read the latter.

    With thinking turned off, any text a parser still labelled as reasoning is the answer.
    """
    reasoning = holder.pop("reasoning", None)
    if reasoning and not holder.get("reasoning_content"):
        holder["reasoning_content"] = reasoning
    if thinking_off and holder.get("reasoning_content") and not holder.get("content"):
        holder["content"] = holder.pop("reasoning_content")


def json_reply(reply, ctx: RequestContext, virtual_model: str) -> tuple[web.Response, dict | None]:
    data = dict(reply.response)
    data["model"] = virtual_model
    for choice in data.get("choices") or ():
        message = choice.get("message")
        if isinstance(message, dict):
            fix_reasoning(message, reply.thinking_off)
            reply.step.response_content = text_of(message.get("content"))
            if message.get("reasoning_content"):
                reply.step.reasoning_content = message["reasoning_content"]
    reply.step.usage = data.get("usage")
    reply.step.finish()
    response = web.Response(body=compact(data), content_type="application/json", charset="utf-8",
                            headers=route_headers(ctx))
    return response, data.get("usage")


def sse_event(value: Any) -> bytes:
    return b"data: " + compact(value) + b"\n\n"


async def relay_stream(request: web.Request, reply, ctx: RequestContext,
                       virtual_model: str) -> tuple[web.StreamResponse, str, str | None, dict | None]:
    """Relay the upstream SSE stream; return (response, outcome, error, usage)."""
    response = web.StreamResponse(status=200, headers={**SSE_HEADERS, **route_headers(ctx)})
    content: list[str] = []
    reasoning: list[str] = []
    usage = None
    outcome, error = "ok", None
    step = reply.step
    try:
        await response.prepare(request)
        async for chunk in reply.stream.chunks():
            if chunk.get("usage"):
                usage = chunk["usage"]
            chunk["model"] = virtual_model
            for choice in chunk.get("choices") or ():
                delta = choice.get("delta") if isinstance(choice, dict) else None
                if isinstance(delta, dict):
                    fix_reasoning(delta, reply.thinking_off)
                    if isinstance(delta.get("content"), str):
                        content.append(delta["content"])
                    if isinstance(delta.get("reasoning_content"), str):
                        reasoning.append(delta["reasoning_content"])
            if not chunk.get("choices") and chunk.get("usage") and not ctx.include_usage:
                continue  # the usage-only chunk the engine asked for on its own account
            await response.write(sse_event(chunk))
        await response.write(b"data: [DONE]\n\n")
    except BackendError as err:
        outcome, error = "error", str(err)
        step.fail(err)
        await _write_quietly(response, sse_event(err.to_openai()))
    except EngineError as err:
        outcome, error = "error", str(err)
        step.fail(err)
        await _write_quietly(response, sse_event(err.to_openai()))
    except (ConnectionResetError, asyncio.CancelledError) as exc:
        outcome, error = "client_disconnected", "client closed the connection mid-stream"
        step.status = "cancelled"
        if isinstance(exc, asyncio.CancelledError):
            raise
    finally:
        reply.stream.close()
        step.response_content = "".join(content)
        if reasoning:
            step.reasoning_content = "".join(reasoning)
        step.usage = usage
        step.finish()
    return response, outcome, error, usage


async def _write_quietly(response: web.StreamResponse, data: bytes) -> None:
    try:
        await response.write(data)
    except (ConnectionResetError, RuntimeError):
        pass
