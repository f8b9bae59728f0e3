"""The OpenAPI description (schemas/openapi.json) as a checker for real responses.

Shared by test_openapi.py and test_fuzz.py: `check_response()` validates what the app
actually answered against the schema the document declares for that path, method,
status and content type, so the document cannot drift from the code unnoticed.
"""

from __future__ import annotations

import json
import re
from functools import lru_cache
from typing import Any

import jsonschema

from tests.conftest import ROOT

OPENAPI_FILE = ROOT / "schemas" / "openapi.json"
# What a leaked Python failure looks like in a body: a traceback, a frame, an object repr.
PYTHON_INTERNALS = re.compile(r'Traceback \(most recent|File "[^"]+", line \d+|object at 0x[0-9a-f]+|'
                              r"site-packages|<(?:class|function|coroutine) ")


@lru_cache(maxsize=1)
def openapi() -> dict[str, Any]:
    return json.loads(OPENAPI_FILE.read_text(encoding="utf-8"))


def validator_for(schema: dict[str, Any]) -> jsonschema.Draft202012Validator:
    """A validator for one schema of the document; its `#/components/...` refs resolve in the document."""
    return jsonschema.Draft202012Validator({**schema, "components": openapi()["components"]})


def declared_schema(path: str, method: str, status: int, content_type: str) -> dict[str, Any]:
    operation = openapi()["paths"][path][method.lower()]
    responses = operation["responses"]
    response = responses.get(str(status)) or responses.get("default")
    assert response is not None, f"{method} {path} answered {status}, which the document does not declare"
    content = response.get("content", {})
    assert content_type in content, (f"{method} {path} {status} answered {content_type}; the document "
                                     f"declares {sorted(content)}")
    return content[content_type]["schema"]


def assert_valid(instance: Any, schema: dict[str, Any], what: str) -> None:
    errors = sorted(validator_for(schema).iter_errors(instance), key=lambda e: list(e.absolute_path))
    assert not errors, f"{what}: " + "; ".join(f"{'.'.join(map(str, e.absolute_path)) or '(root)'}: {e.message}"
                                                for e in errors[:3])


def error_schema() -> dict[str, Any]:
    return {"$ref": "#/components/schemas/Error"}


def check_sse(body: bytes, what: str) -> list[dict[str, Any]]:
    """Every event of a stream is a chunk or an error, and the stream ends in [DONE] or an error."""
    events, done = [], False
    for line in body.decode("utf-8").splitlines():
        if not line.startswith("data:"):
            assert not line.strip(), f"{what}: stray line in the stream: {line[:80]!r}"
            continue
        data = line[5:].strip()
        assert not done, f"{what}: an event after [DONE]"
        if data == "[DONE]":
            done = True
            continue
        events.append(json.loads(data))
    assert events, f"{what}: an empty stream"
    *chunks, last = events
    for chunk in chunks:
        assert_valid(chunk, {"$ref": "#/components/schemas/ChatCompletionChunk"}, what)
    if "error" in last:
        assert not done, f"{what}: an error event followed by [DONE]"
        assert_valid(last, error_schema(), what)
    else:
        assert done, f"{what}: the stream ended without [DONE] or an error event (silently truncated)"
        assert_valid(last, {"$ref": "#/components/schemas/ChatCompletionChunk"}, what)
    return events


def check_response(path: str, method: str, status: int, content_type: str, body: bytes) -> Any:
    """Assert one response is what the document says; return the parsed body."""
    what = f"{method} {path} -> {status}"
    assert status < 500 or status in (502, 503, 504), f"{what}: {body[:300]!r}"
    if method == "HEAD":
        assert not body, f"{what}: a body in an answer to HEAD"
        return None
    text = body.decode("utf-8")  # every answer is UTF-8 text
    assert not PYTHON_INTERNALS.search(text), f"{what}: Python internals in the body: {text[:300]!r}"
    if path not in openapi()["paths"] or method.lower() not in openapi()["paths"][path]:
        # Unknown paths and methods: 404 / 405, still OpenAI-shaped.
        assert status in (404, 405), what
        data = json.loads(text)
        assert_valid(data, error_schema(), what)
        return data
    schema = declared_schema(path, method, status, content_type)
    if content_type == "text/event-stream":
        return check_sse(body, what)
    data = json.loads(text)
    assert_valid(data, schema, what)
    if status >= 400:
        assert_valid(data, error_schema(), what)
    return data
