"""JSON to and from UTF-8 bytes: orjson where it can, the standard library where it cannot.

Every request is parsed, relayed (once per streamed chunk) and logged as JSON, so the
encoder is on the hot path: the stdlib's was 7 % of the engine's time while streaming and
its indented form the largest single cost of a request (bench/results/optimisations.md).
orjson is a dependency, but the engine still runs without it, and orjson refuses a few
values the stdlib writes (an integer beyond 64 bits, a non-string key): those take the
stdlib path and come out as the same JSON.
"""

from __future__ import annotations

import json
from typing import Any

try:
    import orjson
except ImportError:  # pragma: no cover - exercised where orjson is not installed
    orjson = None

loads = orjson.loads if orjson is not None else json.loads


def compact(value: Any) -> bytes:
    """Compact JSON, not ASCII-escaped: request bodies, answers, SSE events."""
    if orjson is not None:
        try:
            return orjson.dumps(value)
        except TypeError:  # orjson.JSONEncodeError is a TypeError
            pass
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def indented(value: Any) -> bytes:
    """Indented JSON for files people read (session logs); what JSON cannot hold becomes str()."""
    if orjson is not None:
        try:
            return orjson.dumps(value, default=str, option=orjson.OPT_INDENT_2)
        except TypeError:
            pass
    return json.dumps(value, ensure_ascii=False, indent=2, default=str).encode("utf-8")
