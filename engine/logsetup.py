"""structlog set-up: one structured line per event, JSON when stdout is not a terminal.

Every request writes one line, so the line's cost is on the request path. With orjson
installed, JSON lines are rendered by orjson and written as bytes (about half the cost
of the stdlib json + print path, measured in bench/); the lines are the same JSON.
"""

from __future__ import annotations

import logging
import sys

import structlog

try:
    import orjson
except ImportError:  # pragma: no cover - exercised where orjson is not installed
    orjson = None


def configure(level: str = "info") -> None:
    if sys.stdout.isatty():
        renderer, factory = structlog.dev.ConsoleRenderer(colors=False), structlog.PrintLoggerFactory(file=sys.stdout)
    elif orjson is not None:
        renderer = structlog.processors.JSONRenderer(serializer=_orjson_dumps)
        factory = structlog.BytesLoggerFactory(file=sys.stdout.buffer)
    else:
        renderer, factory = structlog.processors.JSONRenderer(), structlog.PrintLoggerFactory(file=sys.stdout)
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(getattr(logging, level.upper(), logging.INFO)),
        logger_factory=factory,
        cache_logger_on_first_use=True,
    )


def _orjson_dumps(event: dict, **_kwargs) -> bytes:
    # default=str: a stray non-JSON value in a log call must not lose the line.
    return orjson.dumps(event, default=str)
