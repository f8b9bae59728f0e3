"""Process settings from the environment.

Backends (URLs, models, keys) are not here: they live in `routes.yaml`, which pulls
values from the environment with `${VAR:-default}`. This module holds what belongs to
the server process itself. `ENV_VARS` lists every variable the engine reads, so the
compose file and the docs can be checked against it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

# name -> what it does. Those marked (routes.yaml) are read through `${...}` in routes.yaml.
ENV_VARS: dict[str, str] = {
    "ROUTER_URL": "(routes.yaml) base URL of the small classifier model, with /v1",
    "ROUTER_MODEL": "(routes.yaml) model name served at ROUTER_URL",
    "ROUTER_API_KEY": "(routes.yaml) bearer key for ROUTER_URL, if it needs one",
    "PRIMARY_URL": "(routes.yaml) base URL of the big local model, with /v1",
    "PRIMARY_MODEL": "(routes.yaml) model name served at PRIMARY_URL",
    "PRIMARY_API_KEY": "(routes.yaml) bearer key for PRIMARY_URL, if it needs one",
    "XAI_URL": "(routes.yaml) base URL of the cloud model (default https://api.x.ai/v1)",
    "XAI_MODEL": "(routes.yaml) cloud model name (default grok-4-1-fast-reasoning)",
    "XAI_API_KEY": "(routes.yaml) xAI API key; without it the cloud routes fall back to primary",
    "VIRTUAL_MODEL": "(routes.yaml) the one model clients see (default ai-router)",
    "CLASSIFY_METHOD": "(routes.yaml) llm, similarity or cascade (default cascade; the embedded default uses similarity)",
    "ENGINE_LOCAL_PORT": "port of the embedded local model server (default 8081)",
    "ENGINE_API_KEYS": "comma-separated keys; when set, every endpoint but /health needs one",
    "ENGINE_HOST": "address to listen on (default 127.0.0.1)",
    "ENGINE_PORT": "port to listen on (default 8000)",
    "ROUTES_FILE": "the route graph (default routes.yaml)",
    "SESSION_LOG_DIR": "where session logs go (default logs/sessions)",
    "SESSION_LOG_MAX_DAYS": "rotation: delete session logs older than this (default 7)",
    "SESSION_LOG_MAX_FILES": "rotation: keep at most this many session logs (default 5000)",
    "SESSION_LOG_MAX_BACKLOG_MB": "session logs waiting for the disk, at most; past it new requests wait (default 8)",
    "MAX_BODY_BYTES": "largest request body accepted (default 8388608, 8 MiB)",
    "LOG_LEVEL": "debug, info, warning or error (default info)",
    "ENGINE_WATCH": "1: reload the graph when routes.yaml or a prompt changes (SIGHUP always reloads)",
    "ENGINE_DRAIN_SECONDS": "on SIGTERM, how long in-flight requests may finish before exit (default 30)",
    "ENGINE_WORKERS": "worker processes sharing the port with SO_REUSEPORT (default 1; each has its own /stats)",
    "ENGINE_EVENT_LOOP": "asyncio (default) or uvloop (if installed; not measured faster here, see bench/README.md)",
}


def _int_env(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError:
        raise SystemExit(f"{name}={raw!r} is not a whole number") from None


def _workers() -> int:
    workers = _int_env("ENGINE_WORKERS", 1)
    if workers < 1:
        raise SystemExit(f"ENGINE_WORKERS={workers} must be at least 1")
    return workers


def _event_loop() -> str:
    value = os.environ.get("ENGINE_EVENT_LOOP", "").strip().lower() or "asyncio"
    if value not in ("uvloop", "asyncio"):
        raise SystemExit(f"ENGINE_EVENT_LOOP={value!r} must be uvloop or asyncio")
    return value


@dataclass(frozen=True)
class Settings:
    host: str = "127.0.0.1"
    port: int = 8000
    routes_file: Path = Path("routes.yaml")
    session_log_dir: Path = Path("logs/sessions")
    session_log_max_days: int = 7
    session_log_max_files: int = 5000
    session_log_max_backlog_mb: float = 8.0
    max_body_bytes: int = 8 * 1024 * 1024
    api_keys: frozenset[str] = field(default_factory=frozenset)
    log_level: str = "info"
    watch: bool = False
    drain_seconds: float = 30.0
    workers: int = 1
    event_loop: str = "asyncio"

    @classmethod
    def from_env(cls) -> "Settings":
        keys = os.environ.get("ENGINE_API_KEYS", "")
        return cls(
            host=os.environ.get("ENGINE_HOST", "127.0.0.1"),
            port=_int_env("ENGINE_PORT", 8000),
            routes_file=Path(os.environ.get("ROUTES_FILE", "routes.yaml")),
            session_log_dir=Path(os.environ.get("SESSION_LOG_DIR", "logs/sessions")),
            session_log_max_days=_int_env("SESSION_LOG_MAX_DAYS", 7),
            session_log_max_files=_int_env("SESSION_LOG_MAX_FILES", 5000),
            session_log_max_backlog_mb=float(_int_env("SESSION_LOG_MAX_BACKLOG_MB", 8)),
            max_body_bytes=_int_env("MAX_BODY_BYTES", 8 * 1024 * 1024),
            api_keys=frozenset(k.strip() for k in keys.split(",") if k.strip()),
            log_level=os.environ.get("LOG_LEVEL", "info").lower(),
            watch=os.environ.get("ENGINE_WATCH", "").strip().lower() in ("1", "true", "yes", "on"),
            drain_seconds=float(_int_env("ENGINE_DRAIN_SECONDS", 30)),
            workers=_workers(),
            event_loop=_event_loop(),
        )
