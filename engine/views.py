"""HTTP handlers: parse, run the graph, answer, log. Thin on purpose.

Follow a chat request from here: `chat_completions` validates the body
(engine.validation), builds a RequestContext, walks the graph (engine.runner), answers
(engine.respond), and `finish()` records it (session log + /stats + one log line).
"""

from __future__ import annotations

import asyncio
import time

import structlog
from aiohttp import web

from engine import backends
from engine.context import RequestContext
from engine.errors import EngineError, RequestError
from engine.respond import error_response, json_reply, relay_stream
from engine.runner import run_graph
from engine.sessionlog import build_record
from engine.state import STATE
from engine.validation import parse_body, validate_chat

log = structlog.get_logger("engine")

# Backend probes are reused for this long (seconds).
HEALTH_CACHE_SECONDS = 5.0


async def chat_completions(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    graph = state.graph  # one graph for the whole request, even if a reload swaps it meanwhile
    ctx = RequestContext(messages=[], params={}, headers=request.headers, upstream=state.upstream,
                         breakers=state.breakers)
    try:
        if state.writer is not None and not state.writer.has_room:
            await state.writer.room()  # session logs are behind the traffic: wait, rather than pile up
        try:
            raw = await request.read()
        except web.HTTPRequestEntityTooLarge:
            raise RequestError(f"request body is larger than the limit of {state.settings.max_body_bytes} "
                               "bytes (MAX_BODY_BYTES)", status=413, code="body_too_large") from None
        except ConnectionError:
            client_left_early(state, ctx)  # its client left while it was held (session-log backlog)
            return web.Response(status=499)
        chat = validate_chat(parse_body(raw))
        ctx.body, ctx.messages, ctx.params = chat.body, list(chat.messages), chat.params
        ctx.stream, ctx.include_usage = chat.stream, chat.include_usage
        reply = await run_graph(graph, ctx)
    except EngineError as err:
        finish(state, ctx, status=err.status, outcome="error", error=str(err))
        response = error_response(err)
        response.headers["x-engine-session"] = ctx.id
        return response
    except asyncio.CancelledError:
        # aiohttp cancels the handler when the client hangs up: mid-upload, or while the graph
        # waits on a backend (the cancellation closes that call, so the model stops too).
        client_left_early(state, ctx)
        raise
    except Exception as exc:
        # A bug of ours: the error middleware answers a generic 500 and logs the traceback;
        # the session log must still record that this request failed, and how.
        finish(state, ctx, status=500, outcome="error", error=f"internal error: {type(exc).__name__}: {exc}")
        raise

    if reply.stream is not None:
        try:
            response, outcome, error, usage = await relay_stream(request, reply, ctx, graph.virtual_model)
        except asyncio.CancelledError:
            # aiohttp cancels the handler when the client hangs up; the log must still say so.
            finish(state, ctx, status=200, outcome="client_disconnected",
                   error="client closed the connection mid-stream", usage=reply.step.usage)
            raise
        finish(state, ctx, status=200, outcome=outcome, error=error, usage=usage)
        return response
    response, usage = json_reply(reply, ctx, graph.virtual_model)
    # Send the answer first, then close the books: the client need not wait for the
    # session record, /stats and the log line (about 0.1 ms a request, bench/README.md).
    try:
        await response.prepare(request)
        await response.write_eof()
    except ConnectionError:
        pass  # the client left; aiohttp notes it as it does for any response it cannot send
    finally:
        finish(state, ctx, status=200, outcome="ok", error=None, usage=usage)
    return response


def client_left_early(state, ctx: RequestContext) -> None:
    """Log a request whose client hung up before its answer began: not our failure, no 500."""
    if ctx.trace and ctx.trace[-1].duration_ms is None:
        ctx.trace[-1].status = "cancelled"  # the step that was waiting when the client left
    finish(state, ctx, status=499, outcome="client_disconnected",
           error="client closed the connection before its answer began")


def finish(state, ctx: RequestContext, *, status: int, outcome: str, error: str | None,
           usage: dict | None = None) -> None:
    """Close the books on a request: session log (written in the background), stats, log line."""
    for step in ctx.trace:
        step.finish()
    record = build_record(ctx, status=status, outcome=outcome, error=error,
                          virtual_model=state.graph.virtual_model, usage=usage)
    state.stats.record(record)
    if state.writer is not None:
        state.writer.submit(record)
    log.info("request", id=ctx.id, route=ctx.route, status=status, outcome=outcome,
             ms=record["total_ms"], stream=ctx.stream, error=error)


async def models(request: web.Request) -> web.Response:
    graph = request.app[STATE].graph
    return web.json_response({"object": "list", "data": [
        {"id": graph.virtual_model, "object": "model", "created": 0, "owned_by": "engine"}]})


async def health(request: web.Request) -> web.Response:
    """The engine is up if this answers; each backend is probed with GET /models, in parallel."""
    state = request.app[STATE]
    names = list(state.graph.backends)
    cached = state.health_cache
    if cached and time.monotonic() - cached[0] < HEALTH_CACHE_SECONDS and cached[1] is state.graph:
        results = cached[2]  # a container health check every few seconds must not probe xAI each time
    else:
        results = await asyncio.gather(*(probe(state.upstream, state.graph.backends[n]) for n in names))
        state.health_cache = (time.monotonic(), state.graph, results)
    backends_status = {name: dict(result) for name, result in zip(names, results)}
    for name, result in backends_status.items():
        if name in state.breakers:
            result["breaker"] = state.breakers[name].snapshot()
    healthy = all(r["reachable"] for r in results)
    return web.json_response({"status": "ok" if healthy else "degraded", "engine": "ok",
                              "virtual_model": state.graph.virtual_model, "backends": backends_status})


async def probe(client, backend, timeout: float = 3.0) -> dict:
    started = time.perf_counter()
    result = {"url": backend.url, "model": backend.model, "reachable": False}
    try:
        headers = backends.headers_for(backend)
    except EngineError as err:
        result["error"] = str(err)
        return result
    try:
        async with asyncio.timeout(timeout):
            resp = await client.request("GET", backend.url.rstrip("/") + "/models", headers=headers)
            try:
                await resp.read()
            finally:
                resp.close()
            result["status"] = resp.status
            result["reachable"] = resp.status < 500
    except Exception as exc:  # a probe never fails /health
        result["error"] = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    result["latency_ms"] = round((time.perf_counter() - started) * 1000, 1)
    return result


async def stats(request: web.Request) -> web.Response:
    state = request.app[STATE]
    snapshot = state.stats.snapshot()
    snapshot["breakers"] = {name: breaker.snapshot() for name, breaker in state.breakers.items()}
    snapshot["graph"] = {"file": str(state.graph.path), "reloads": dict(state.reloads)}
    if state.writer is not None:
        snapshot["session_logs"] = {"written": state.writer.written, "failed": state.writer.failed,
                                    "queued": state.writer.queue.qsize(), "queued_bytes": state.writer.backlog_bytes,
                                    "requests_held": state.writer.held}
    return web.json_response(snapshot)
