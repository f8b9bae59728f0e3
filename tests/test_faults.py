"""The fault-injection suite: one fake backend misbehaving in each way docs/reliability.md lists.

Graph under test: one answering node on backend `main` (short timeouts, a breaker that opens
after 3 failures), with or without a declared retry and fallback to backend `spare`.
Each test states the behaviour the scenario table promises.
"""

from __future__ import annotations

import asyncio
import itertools

import pytest

from engine.app import create_app
from engine.graph import load_graph
from engine.settings import Settings
from engine.state import STATE
from tests.conftest import read_sse, session_logs
from tests.fakes import Answer, FakeBackend

GRAPH = """
version: 1
virtual_model: test-model
start: answer
backends:
  main:
    url: {main}
    model: m
    timeouts: {{connect: 1, first_token: 0.4, idle: 0.4, total: 1}}
    breaker: {{failures: 3, cooldown: {cooldown}}}
  spare: {{url: {spare}, model: s}}
nodes:
  answer:
    type: call-backend
    backend: main
    route: main
{extra}
  spare-answer: {{type: call-backend, backend: spare, route: spare}}
"""
RETRY = "    retry: {attempts: 2, initial: 0.01, max_wait: 0.3}\n"
FALLBACK = "    fallback: {to: spare-answer}\n"
CHAT = {"messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture
async def make_client(aiohttp_server, aiohttp_client, tmp_path):
    """Build (client, main, spare) for a graph with the given retry/fallback lines."""

    async def build(*, retry: bool = False, fallback: bool = False, cooldown: float = 60):
        fakes = {}
        for name in ("main", "spare"):
            fake = FakeBackend(name)
            fake.url = str((await aiohttp_server(fake.app)).make_url("/v1"))
            fakes[name] = fake
        extra = (RETRY if retry else "") + (FALLBACK if fallback else "")
        if not fallback:
            extra += "    # spare is only reachable as a fallback; keep it reachable for lint\n"
        path = tmp_path / "faults.yaml"
        text = GRAPH.format(main=fakes["main"].url, spare=fakes["spare"].url, extra=extra, cooldown=cooldown)
        if not fallback:
            text = text.replace("  spare-answer: {type: call-backend, backend: spare, route: spare}\n", "")
        path.write_text(text)
        graph = load_graph(path, {})
        client = await aiohttp_client(create_app(Settings(session_log_dir=tmp_path / "logs"), graph))
        return client, fakes["main"], fakes["spare"]

    return build


async def post(client, stream: bool = False):
    return await client.post("/v1/chat/completions", json={**CHAT, "stream": stream})


def sequence(*answers: Answer):
    """Answer requests in turn with these, repeating the last one."""
    it = itertools.chain(answers, itertools.repeat(answers[-1]))
    return lambda body: next(it)


# ----------------------------------------------------------------------------- before the first byte

async def test_429_with_retry_after_is_waited_for_then_retried(make_client):
    client, main, _ = await make_client(retry=True)
    main.answer = sequence(Answer(status=429, retry_after="0.2"), Answer(content="ok"))
    resp = await post(client)
    assert resp.status == 200 and (await resp.json())["choices"][0]["message"]["content"] == "ok"
    [log] = await session_logs(client)
    assert log["retries"] == [{"node": "answer", "attempt": 1, "kind": "http_429", "wait_s": 0.2}]


async def test_429_with_a_retry_after_longer_than_max_wait_falls_back_at_once(make_client):
    client, main, spare = await make_client(retry=True, fallback=True)
    main.answer = lambda body: Answer(status=429, retry_after="120")
    resp = await post(client)
    assert resp.status == 200 and resp.headers["x-engine-route"] == "spare"
    assert len(main.requests) == 1
    [log] = await session_logs(client)
    assert log["retries"] == [] and log["fallbacks"][0]["kind"] == "http_429"


async def test_429_without_retry_after_and_no_fallback_is_a_429(make_client):
    client, main, _ = await make_client(retry=True)
    main.answer = lambda body: Answer(status=429)
    resp = await post(client)
    assert resp.status == 429
    assert (await resp.json())["error"]["type"] == "rate_limit_error"
    assert len(main.requests) == 3
    [log] = await session_logs(client)
    assert len(log["retries"]) == 2 and all(0 < r["wait_s"] <= 0.3 for r in log["retries"])


@pytest.mark.parametrize("status", [500, 503])
async def test_5xx_is_retried_then_falls_back(make_client, status):
    client, main, spare = await make_client(retry=True, fallback=True)
    main.answer = lambda body: Answer(status=status)
    for stream in (False, True):
        resp = await post(client, stream)
        assert resp.status == 200 and resp.headers["x-engine-route"] == "spare"
        await resp.read()
    assert len(spare.requests) == 2


@pytest.mark.parametrize("status,code", [(500, "http_5xx"), (503, "http_5xx")])
async def test_5xx_without_fallback_is_502(make_client, status, code):
    client, main, _ = await make_client()
    main.answer = lambda body: Answer(status=status)
    resp = await post(client, stream=True)
    assert resp.status == 502 and (await resp.json())["error"]["code"] == code


async def test_connection_reset_before_headers(make_client):
    client, main, _ = await make_client(retry=True)
    main.answer = sequence(Answer(reset=True), Answer(content="second try"))
    resp = await post(client)
    assert resp.status == 200 and (await resp.json())["choices"][0]["message"]["content"] == "second try"
    [log] = await session_logs(client)
    assert log["retries"][0]["kind"] == "connect"
    main.answer = lambda body: Answer(reset=True)
    resp = await post(client)
    assert resp.status == 502 and (await resp.json())["error"]["code"] == "connect"


@pytest.mark.parametrize("stream", [False, True])
async def test_a_backend_that_never_answers_times_out_with_504(make_client, stream):
    client, main, _ = await make_client()
    main.answer = lambda body: Answer(delay=30)
    resp = await post(client, stream)
    assert resp.status == 504 and (await resp.json())["error"]["code"] == "timeout"


async def test_first_token_later_than_its_timeout_falls_back_before_any_byte(make_client):
    client, main, spare = await make_client(fallback=True)
    main.answer = lambda body: Answer(first_chunk_delay=30)  # headers at once, then nothing
    resp = await post(client, stream=True)
    assert resp.status == 200 and resp.headers["x-engine-route"] == "spare"
    events, done = await read_sse(resp)
    assert done and "".join(e["choices"][0]["delta"].get("content", "") for e in events if e["choices"]) == "spare answer"


async def test_context_length_400_is_not_retried_and_is_a_clear_400(make_client):
    client, main, _ = await make_client(retry=True)
    main.answer = lambda body: Answer(status=400, error_body={"error": {
        "message": "the request exceeds the available context size (4096 tokens)"}})
    resp = await post(client)
    assert resp.status == 400 and (await resp.json())["error"]["code"] == "context_length_exceeded"
    assert len(main.requests) == 1


# ----------------------------------------------------------------------------- after the first byte

async def assert_error_event(resp, code: str) -> list[dict]:
    assert resp.status == 200
    events, done = await read_sse(resp)
    assert not done, "a failed stream must not end with [DONE]"
    assert events[-1]["error"]["code"] == code
    return events


async def test_stream_cut_after_some_tokens(make_client):
    client, main, spare = await make_client(retry=True, fallback=True)
    main.answer = lambda body: Answer(content="a b c d e", cut_after=2)
    events = await assert_error_event(await post(client, True), "stream_cut")
    assert len([e for e in events if e.get("choices")]) == 2
    assert spare.requests == []  # too late for a fallback: the client already has part of an answer
    [log] = await session_logs(client)
    assert log["outcome"] == "error" and log["steps"][-1]["error_kind"] == "stream_cut"


async def test_stream_stalling_mid_answer_hits_the_idle_timeout(make_client):
    client, main, _ = await make_client()
    main.answer = lambda body: Answer(content="a b c d e", stall_after=2)
    await assert_error_event(await post(client, True), "timeout")


async def test_malformed_chunk(make_client):
    client, main, _ = await make_client()
    main.answer = lambda body: Answer(content="a b c", malformed_after=1)
    await assert_error_event(await post(client, True), "bad_response")


async def test_missing_done_after_a_finish_reason_is_a_clean_end(make_client):
    client, main, _ = await make_client()
    main.answer = lambda body: Answer(content="a b", omit_done=True)
    resp = await post(client, True)
    events, done = await read_sse(resp)
    assert done and all("error" not in e for e in events)


async def test_missing_done_and_finish_reason_is_a_cut_stream(make_client):
    client, main, _ = await make_client()
    main.answer = lambda body: Answer(content="a b", omit_done=True, no_finish=True)
    await assert_error_event(await post(client, True), "stream_cut")


# ----------------------------------------------------------------------------- breaker, flapping, hang-ups

async def test_breaker_opens_after_repeated_failures_and_probes_after_cooldown(make_client):
    client, main, spare = await make_client(fallback=True, cooldown=0.3)
    main.answer = lambda body: Answer(status=500)
    for _ in range(3):
        assert (await post(client)).headers["x-engine-route"] == "spare"
    assert len(main.requests) == 3
    # Open: the next requests do not reach main at all.
    for _ in range(3):
        assert (await post(client)).headers["x-engine-route"] == "spare"
    assert len(main.requests) == 3
    stats = await (await client.get("/stats")).json()
    assert stats["breakers"]["main"]["state"] == "open"
    assert stats["errors_by_kind"]["circuit_open"] == 3
    health = await (await client.get("/health")).json()
    assert health["backends"]["main"]["breaker"]["state"] == "open"
    # After the cooldown one probe goes through; it succeeds and closes the breaker.
    await asyncio.sleep(0.35)
    main.answer = lambda body: Answer(content="back")
    resp = await post(client)
    assert resp.headers["x-engine-route"] == "main"
    assert client.app[STATE].breakers["main"].state == "closed"


async def test_flapping_backend_is_ridden_out_by_retries(make_client):
    client, main, spare = await make_client(retry=True, fallback=True)
    flip = itertools.cycle([Answer(status=503), Answer(content="up")])
    main.answer = lambda body: next(flip)
    routes = [(await post(client)).headers["x-engine-route"] for _ in range(6)]
    assert routes == ["main"] * 6 and spare.requests == []
    assert client.app[STATE].breakers["main"].state == "closed"


async def test_client_hang_up_cancels_a_non_streamed_upstream_call(make_client):
    client, main, _ = await make_client()
    main.answer = lambda body: Answer(delay=0.8)  # still "generating" when the client leaves
    request = asyncio.create_task(post(client))
    for _ in range(100):
        await asyncio.sleep(0.02)
        if main.requests:
            break
    request.cancel()  # the client's connection closes with the request in flight
    for _ in range(100):
        await asyncio.sleep(0.02)
        if main.aborted:
            break
    assert main.aborted == 1  # the backend saw the engine hang up before it answered
    [log] = await session_logs(client)
    assert (log["outcome"], log["status"]) == ("client_disconnected", 499)
    assert log["steps"][-1]["status"] == "cancelled"


async def test_client_hang_up_cancels_the_upstream_stream(make_client):
    client, main, _ = await make_client()
    main.answer = lambda body: Answer(content=" ".join(["tok"] * 200), gap=0.02)
    resp = await post(client, True)
    await resp.content.readline()
    resp.close()
    for _ in range(100):
        await asyncio.sleep(0.05)
        if main.aborted:
            break
    assert main.aborted == 1  # the model server saw us hang up: no GPU time wasted on a closed tab
    [log] = await session_logs(client)
    assert log["outcome"] == "client_disconnected"
