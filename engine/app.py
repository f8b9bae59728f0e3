"""The aiohttp application: one factory used by `engine serve` and by every test.

State lives in one `AppState` under a typed app key. The shared upstream `Client` (one
per process, pooled connections to every backend, engine.upstream) and the session-log writer are
resources with a lifetime, opened and closed in `cleanup_ctx`.
"""

from __future__ import annotations

from pathlib import Path

import structlog
from aiohttp import web

from engine import views
from engine.errors import EngineError, RequestError
from engine.graph import Graph
from engine.respond import error_response
from engine.sessionlog import SessionLogWriter
from engine.settings import Settings
from engine.state import STATE, AppState
from engine.upstream import Client

log = structlog.get_logger("engine")

OPEN_PATHS = frozenset({"/health"})
OPENAPI_FILE = Path(__file__).resolve().parent.parent / "schemas" / "openapi.json"


@web.middleware
async def error_middleware(request: web.Request, handler):
    """Every failure leaves as OpenAI-shaped JSON; no traceback ever reaches a client."""
    try:
        return await handler(request)
    except EngineError as err:
        return error_response(err)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        message = {404: f"no such endpoint: {request.method} {request.path}",
                   405: f"method {request.method} is not allowed on {request.path}",
                   413: "request body is too large"}.get(exc.status, exc.reason)
        return error_response(RequestError(message, status=exc.status,
                                           code={404: "not_found", 405: "method_not_allowed"}.get(exc.status)))
    except Exception:
        log.exception("unhandled_error", path=request.path)
        err = EngineError("internal error in the router; the details are in its log")
        return error_response(err)


@web.middleware
async def auth_middleware(request: web.Request, handler):
    keys = request.app[STATE].settings.api_keys
    if keys and request.path not in OPEN_PATHS:
        header = request.headers.get("Authorization", "")
        token = header[7:].strip() if header[:7].lower() == "bearer " else ""
        if token not in keys:
            raise RequestError("missing or invalid API key: send `Authorization: Bearer <key>`",
                               status=401, code="invalid_api_key", error_type="authentication_error")
    return await handler(request)


def create_app(settings: Settings, graph: Graph) -> web.Application:
    app = web.Application(middlewares=[error_middleware, auth_middleware],
                          client_max_size=settings.max_body_bytes)
    app[STATE] = AppState(settings=settings, graph=graph)
    app.cleanup_ctx.append(_resources)
    app.router.add_post("/v1/chat/completions", views.chat_completions)
    app.router.add_get("/v1/models", views.models)
    app.router.add_get("/health", views.health)
    app.router.add_get("/stats", views.stats)
    app.router.add_get("/openapi.json", openapi)
    return app


async def openapi(request: web.Request) -> web.Response:
    """The API's OpenAPI description, kept in the repo as schemas/openapi.json."""
    return web.Response(body=OPENAPI_FILE.read_bytes(), content_type="application/json")


async def _resources(app: web.Application):
    state = app[STATE]
    state.upstream = Client()
    state.writer = SessionLogWriter(state.settings.session_log_dir, state.settings.session_log_max_days,
                                    state.settings.session_log_max_files,
                                    int(state.settings.session_log_max_backlog_mb * 1024 * 1024))
    await state.writer.start()
    yield
    if state.watcher is not None:
        state.watcher.cancel()
    await state.writer.close()
    await state.upstream.close()
