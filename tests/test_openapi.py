"""schemas/openapi.json: valid OpenAPI, the same routes as the app, and true to real responses."""

from __future__ import annotations

import json

import pytest
from openapi_spec_validator import validate

from engine.app import create_app
from engine.settings import Settings
from tests.fakes import Answer, is_classifier_call
from tests.openapi_check import OPENAPI_FILE, check_response, openapi

METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}


def test_the_document_is_valid_openapi():
    validate(json.loads(OPENAPI_FILE.read_text(encoding="utf-8")))


def test_every_route_of_the_app_is_described_and_nothing_else(graph, tmp_path):
    app = create_app(Settings(session_log_dir=tmp_path), graph)
    served = set()
    for route in app.router.routes():
        path = route.resource.canonical
        # aiohttp registers HEAD beside every GET; HTTP defines HEAD as GET without a body.
        method = "get" if route.method == "HEAD" else route.method.lower()
        served.add((path, method))
    described = {(path, method) for path, item in openapi()["paths"].items() for method in item if method in METHODS}
    assert described == served, f"only in the app: {served - described}; only in the document: {described - served}"


async def test_the_app_serves_this_document(client):
    resp = await client.get("/openapi.json")
    assert resp.status == 200 and resp.content_type == "application/json"
    assert await resp.json() == openapi()


@pytest.mark.parametrize("path", ["/v1/models", "/health", "/stats", "/openapi.json"])
async def test_get_endpoints_answer_what_the_document_declares(client, backends, path):
    await client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "hi"}]})
    resp = await client.get(path)
    assert resp.status == 200
    check_response(path, "GET", resp.status, resp.content_type, await resp.read())


@pytest.mark.parametrize("stream", [False, True])
async def test_chat_answers_match_the_document(client, backends, stream):
    resp = await client.post("/v1/chat/completions", json={
        "messages": [{"role": "user", "content": "hi"}], "stream": stream,
        "stream_options": {"include_usage": True}})
    assert resp.status == 200
    assert resp.headers["x-engine-route"] == "router"
    events = check_response("/v1/chat/completions", "POST", 200, resp.content_type, await resp.read())
    if stream:
        assert events[-1]["usage"]["total_tokens"] == 12


async def test_a_stream_cut_by_the_backend_ends_in_an_error_event_the_document_declares(client, backends):
    backends.classify_as("MODERATE")
    backends["primary"].answer = lambda body: Answer(content="one two three four", cut_after=2)
    resp = await client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "hi"}],
                                                          "stream": True})
    events = check_response("/v1/chat/completions", "POST", resp.status, resp.content_type, await resp.read())
    assert "error" in events[-1]


async def test_a_400_matches_the_document(client, backends):
    resp = await client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "hi"}],
                                                          "temperature": 9})
    assert resp.status == 400
    data = check_response("/v1/chat/completions", "POST", 400, resp.content_type, await resp.read())
    assert data["error"]["param"] == "temperature"


async def test_a_502_matches_the_document(client, backends):
    # The primary fails, and so does its fallback (the small model); the classifier still answers.
    backends["primary"].answer = lambda body: Answer(status=500)
    backends["router"].answer = lambda body: Answer(content="MODERATE") if is_classifier_call(body) \
        else Answer(status=500)
    resp = await client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "hi"}]})
    assert resp.status == 502
    data = check_response("/v1/chat/completions", "POST", 502, resp.content_type, await resp.read())
    assert data["error"]["type"] == "upstream_error"


async def test_401_matches_the_document(aiohttp_client, graph, tmp_path):
    client = await aiohttp_client(create_app(Settings(session_log_dir=tmp_path, api_keys=frozenset({"k1"})), graph))
    for path in ("/v1/models", "/stats", "/openapi.json"):
        resp = await client.get(path)
        assert resp.status == 401
        check_response(path, "GET", 401, resp.content_type, await resp.read())
    resp = await client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "hi"}]})
    assert resp.status == 401
    check_response("/v1/chat/completions", "POST", 401, resp.content_type, await resp.read())
