#!/usr/bin/env python3
"""Integration check of a running stack: one PASS/FAIL line per check, exit status 1 if any fails.

    make test-live                                   # the engine on this machine (loopback port)
    make test-live ENGINE_URL=http://localhost       # the same checks through Traefik
    ENGINE_URL=http://gpu-box:8000 python3 scripts/test_live.py

Checks: /health, /v1/models, /stats, an OpenAI-shaped error, one request per route (the route taken is
read from the ``x-engine-route`` response header the engine sets), and a streaming request.

Routes other than meta depend on the classifier model's judgement, so a FAIL there can mean "the model
routed this query differently", not "the engine is broken"; the line says which route was taken.

Standard library only, so it runs with the system python3 on the GPU box. Environment:
ENGINE_URL (default http://localhost:8000), ENGINE_API_KEY (or the first of ENGINE_API_KEYS) for the
bearer token, VIRTUAL_MODEL (default ai-router), TEST_LIVE_TIMEOUT seconds per request (default 300).
"""

from __future__ import annotations

import json
import os
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

ENGINE_URL = os.environ.get("ENGINE_URL", "http://localhost:8000").rstrip("/")
MODEL = os.environ.get("VIRTUAL_MODEL", "ai-router")
TIMEOUT = float(os.environ.get("TEST_LIVE_TIMEOUT", "300"))
API_KEY = os.environ.get("ENGINE_API_KEY") or os.environ.get("ENGINE_API_KEYS", "").split(",")[0].strip()
ROUTE_HEADER = "x-engine-route"

# A real Open WebUI title request, captured from 0.12.4 (shared fixtures), when the checkout has it.
TITLE_FIXTURE = (
    Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "openwebui" / "requests" / "title.json"
)
# The same shape for machines without the fixtures: Open WebUI's title task, rendered into one user message.
TITLE_FALLBACK = (
    "### Task:\nGenerate a concise, 3-5 word title with an emoji summarizing the chat history.\n"
    "### Guidelines:\n- The title should clearly represent the main theme or subject of the conversation.\n"
    "- Your entire response must consist solely of the JSON object, without any introductory or concluding "
    "text.\n### Output:\nJSON format: { \"title\": \"your concise title here\" }\n### Chat History:\n"
    "<chat_history>\nUSER: How do I make a Python virtualenv?\n"
    "ASSISTANT: Run python3 -m venv .venv and then source .venv/bin/activate.\n</chat_history>"
)

# One query per classified route. The classifier decides, so these are chosen to be unambiguous.
ROUTE_QUERIES = {
    "router": "Hi there!",
    "primary": "Write a Python function that checks whether a string is a palindrome, and explain how it works.",
    "xai": (
        "Propose a novel research program for proving lower bounds on circuit complexity that avoids the "
        "natural-proofs barrier, and assess its weaknesses rigorously."
    ),
    "enrich": "What are today's top news headlines? I need the latest real-time information.",
}


class CheckFailed(Exception):
    """A check's expectation was not met; the message says what was seen instead."""


def request(method: str, path: str, body: dict | None = None) -> urllib.request.Request:
    headers = {"Accept": "application/json"}
    if body is not None:
        headers["Content-Type"] = "application/json"
    if API_KEY:
        headers["Authorization"] = f"Bearer {API_KEY}"
    data = json.dumps(body).encode() if body is not None else None
    return urllib.request.Request(ENGINE_URL + path, data=data, method=method, headers=headers)


def fetch_json(method: str, path: str, body: dict | None = None) -> tuple[int, dict, dict]:
    """Status, headers (lower-cased names) and JSON body; HTTP errors are returned, not raised."""
    try:
        with urllib.request.urlopen(request(method, path, body), timeout=TIMEOUT) as response:
            status, headers, raw = response.status, response.headers, response.read()
    except urllib.error.HTTPError as error:
        status, headers, raw = error.code, error.headers, error.read()
    try:
        payload = json.loads(raw or b"null")
    except json.JSONDecodeError as error:
        raise CheckFailed(f"HTTP {status}, body is not JSON: {raw[:200]!r}") from error
    return status, {k.lower(): v for k, v in headers.items()}, payload


def expect(condition: bool, message: str) -> None:
    if not condition:
        raise CheckFailed(message)


def answer_text(payload: dict) -> str:
    try:
        return payload["choices"][0]["message"].get("content") or ""
    except (KeyError, IndexError, TypeError, AttributeError) as error:
        raise CheckFailed(f"not a chat completion: {json.dumps(payload)[:200]}") from error


# --- the checks ------------------------------------------------------------------------------------------


def check_health() -> str:
    status, _, payload = fetch_json("GET", "/health")
    expect(status == 200, f"HTTP {status}: {json.dumps(payload)[:300]}")
    return json.dumps(payload)[:120]


def check_models() -> str:
    status, _, payload = fetch_json("GET", "/v1/models")
    expect(status == 200, f"HTTP {status}")
    ids = [m.get("id") for m in (payload or {}).get("data", [])]
    expect(payload.get("object") == "list", f"object is {payload.get('object')!r}, want 'list'")
    expect(MODEL in ids, f"{MODEL!r} not in {ids}")
    return f"models: {ids}"


def check_stats() -> str:
    status, _, payload = fetch_json("GET", "/stats")
    expect(status == 200, f"HTTP {status}")
    expect(isinstance(payload, dict) and payload, "empty stats")
    return f"keys: {sorted(payload)[:6]}"


def check_error_shape() -> str:
    status, _, payload = fetch_json("POST", "/v1/chat/completions", {"model": MODEL, "messages": "not a list"})
    expect(400 <= status < 500, f"HTTP {status}, want 4xx")
    error = (payload or {}).get("error") if isinstance(payload, dict) else None
    expect(isinstance(error, dict) and error.get("message"), f"no error.message in {json.dumps(payload)[:200]}")
    return f"HTTP {status}: {error['message'][:80]}"


def check_route(route: str, body: dict) -> Callable[[], str]:
    def run() -> str:
        status, headers, payload = fetch_json("POST", "/v1/chat/completions", body)
        expect(status == 200, f"HTTP {status}: {json.dumps(payload)[:300]}")
        taken = headers.get(ROUTE_HEADER)
        expect(taken is not None, f"no {ROUTE_HEADER} header in the response")
        expect(taken == route, f"routed to {taken!r}, expected {route!r}")
        text = answer_text(payload)
        expect(text.strip() != "", "empty answer")
        if route == "meta":
            expect("{" in text and "}" in text, f"title task answer is not JSON-like: {text[:120]!r}")
        return f"{len(text)} chars: {text.strip()[:60]!r}"

    return run


def chat(content: str, **extra: object) -> dict:
    return {"model": MODEL, "messages": [{"role": "user", "content": content}], "stream": False, **extra}


def title_request() -> dict:
    if TITLE_FIXTURE.is_file():
        body = json.loads(TITLE_FIXTURE.read_text())
        body["model"] = MODEL
        return body
    return chat(TITLE_FALLBACK, max_tokens=1000)


def check_streaming() -> str:
    body = chat("Count from one to five in words.", stream=True)
    body["stream"] = True
    started = time.monotonic()
    try:
        response = urllib.request.urlopen(request("POST", "/v1/chat/completions", body), timeout=TIMEOUT)
    except urllib.error.HTTPError as error:
        raise CheckFailed(f"HTTP {error.code}: {error.read()[:200]!r}") from error
    with response:
        content_type = response.headers.get("Content-Type", "")
        expect(content_type.startswith("text/event-stream"), f"Content-Type {content_type!r}")
        chunks, text, first_chunk_ms, done = 0, [], None, False
        for raw_line in response:
            line = raw_line.decode().strip()
            if not line.startswith("data:"):
                continue
            data = line[len("data:"):].strip()
            if data == "[DONE]":
                done = True
                break
            event = json.loads(data)
            expect("error" not in event, f"error event: {data[:200]}")
            if first_chunk_ms is None:
                first_chunk_ms = (time.monotonic() - started) * 1000
            chunks += 1
            for choice in event.get("choices", []):
                delta = choice.get("delta") or {}
                text.append(delta.get("content") or "")
    expect(done, "stream ended without data: [DONE]")
    expect(chunks >= 2, f"only {chunks} chunk(s): the answer was not streamed")
    expect("".join(text).strip() != "", "no content in the stream")
    return f"{chunks} chunks, first after {first_chunk_ms:.0f} ms"


CHECKS: list[tuple[str, Callable[[], str]]] = [
    ("health", check_health),
    ("models", check_models),
    ("stats", check_stats),
    ("error-shape", check_error_shape),
    ("route:meta", check_route("meta", title_request())),
    *[(f"route:{route}", check_route(route, chat(query))) for route, query in ROUTE_QUERIES.items()],
    ("streaming", check_streaming),
]


def main() -> int:
    print(f"Checking {ENGINE_URL} (model {MODEL})")
    failures = 0
    for name, check in CHECKS:
        started = time.monotonic()
        try:
            detail, verdict = check(), "PASS"
        except CheckFailed as error:
            detail, verdict = str(error), "FAIL"
        except (urllib.error.URLError, OSError, json.JSONDecodeError) as error:
            detail, verdict = f"{type(error).__name__}: {error}", "FAIL"
        elapsed = (time.monotonic() - started) * 1000
        failures += verdict == "FAIL"
        print(f"{verdict}  {name:<14} {elapsed:8.0f} ms  {detail}", flush=True)
    print(f"{len(CHECKS) - failures}/{len(CHECKS)} passed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
