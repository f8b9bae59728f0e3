"""The five routes end to end through the HTTP API, against fake backends on loopback."""

from __future__ import annotations

import pytest

from tests.conftest import fixture_request, read_sse, session_logs
from tests.fakes import Answer

CHAT = {"model": "ai-router", "messages": [{"role": "user", "content": "hello there"}]}


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("label,route,answerer", [
    ("SIMPLE", "router", "router"),
    ("MODERATE", "primary", "primary"),
    ("COMPLEX", "xai", "xai"),
    ("ENRICH", "enrich", "primary"),
])
async def test_classified_routes(client, backends, label, route, answerer, stream):
    backends.classify_as(label)
    resp = await client.post("/v1/chat/completions", json={**CHAT, "stream": stream})
    assert resp.status == 200
    assert resp.headers["x-engine-route"] == route
    if stream:
        assert resp.headers["Content-Type"].startswith("text/event-stream")
        events, done = await read_sse(resp)
        assert done
        text = "".join(e["choices"][0]["delta"].get("content") or "" for e in events if e["choices"])
        assert all(e["model"] == "ai-router" for e in events)
    else:
        data = await resp.json()
        text = data["choices"][0]["message"]["content"]
        assert data["model"] == "ai-router"
    assert text == f"{answerer} answer"
    # The classifier was asked exactly once, and the answer came from the right backend.
    assert len(backends.calls("router", classifier=True)) == 1
    answered = backends.calls(answerer, classifier=False)
    assert answered and answered[-1]["messages"][-1]["content"] == "hello there"
    [log] = await session_logs(client)
    assert log["route"] == route
    assert log["classification_raw"] == label and log["classification_label"] == label
    assert log["stream"] is stream and log["error"] is None and log["outcome"] == "ok"


async def test_enrich_hop_sends_only_the_question_and_injects_the_context(client, backends):
    backends.classify_as("ENRICH")
    backends["xai"].answer = lambda body: Answer(content="BRIEF: it rained")
    body = {"messages": [
        {"role": "system", "content": "You are my assistant."},
        {"role": "user", "content": "my secret project is called Falcon"},
        {"role": "assistant", "content": "noted"},
        {"role": "user", "content": "what's the weather in Paris today?"},
    ]}
    resp = await client.post("/v1/chat/completions", json=body)
    assert resp.status == 200
    [cloud_call] = backends.calls("xai")
    sent = "\n".join(m["content"] for m in cloud_call["messages"])
    assert "weather in Paris" in sent
    assert "Falcon" not in sent and "You are my assistant" not in sent  # the privacy boundary
    [answer_call] = backends.calls("primary")
    system = answer_call["messages"][0]
    assert system["role"] == "system"
    assert "BRIEF: it rained" in system["content"] and "You are my assistant." in system["content"]
    assert answer_call["messages"][1:] == body["messages"][1:]
    [log] = await session_logs(client)
    assert [s["node"] for s in log["steps"]] == ["meta", "classify", "enrich-fetch", "enrich-inject", "enrich-answer"]
    assert log["steps"][2]["response_content"] == "BRIEF: it rained"


@pytest.mark.parametrize("fixture", ["title.json", "tags.json", "follow_ups.json"])
async def test_open_webui_meta_requests_skip_classification(client, backends, fixture):
    resp = await client.post("/v1/chat/completions", json=fixture_request(fixture))
    assert resp.status == 200
    assert resp.headers["x-engine-route"] == "meta"
    assert backends.calls("router") == []
    [call] = backends.calls("primary")
    assert call["chat_template_kwargs"] == {"enable_thinking": False}
    assert call["messages"][0]["role"] == "system"
    [log] = await session_logs(client)
    assert log["route"] == "meta" and log["classification_raw"] is None
    assert log["steps"][0]["matched"].startswith("openwebui-")


async def test_open_webui_chat_turn_is_classified(client, backends):
    backends.classify_as("SIMPLE")
    resp = await client.post("/v1/chat/completions", json=fixture_request("chat_stream.json"))
    assert resp.status == 200 and resp.headers["x-engine-route"] == "router"
    events, done = await read_sse(resp)
    assert done and len([e for e in events if e["choices"]]) >= 2


async def test_meta_header_marks_a_task(client, backends):
    resp = await client.post("/v1/chat/completions", json=CHAT, headers={"X-OpenWebUI-Task": "title_generation"})
    assert resp.headers["x-engine-route"] == "meta"
    resp = await client.post("/v1/chat/completions", json=CHAT, headers={"X-OpenWebUI-Task": ""})
    assert resp.headers["x-engine-route"] == "router"


async def test_cloud_key_is_sent_to_the_cloud_only(client, backends):
    from tests.conftest import XAI_TEST_KEY

    backends.classify_as("COMPLEX")
    await client.post("/v1/chat/completions", json=CHAT)
    assert backends["xai"].headers[-1]["Authorization"] == f"Bearer {XAI_TEST_KEY}"
    assert "Authorization" not in backends["router"].headers[-1]
