"""The official `openai` Python client against the running app, streaming and not."""

from __future__ import annotations

import openai
import pytest

from tests.fakes import Answer


@pytest.fixture
async def openai_client(client):
    async with openai.AsyncOpenAI(base_url=str(client.make_url("/v1")), api_key="unused", max_retries=0) as oa:
        yield oa


async def test_models(openai_client):
    models = await openai_client.models.list()
    assert [m.id for m in models.data] == ["ai-router"]


async def test_non_streaming(openai_client, backends):
    backends.classify_as("MODERATE")
    completion = await openai_client.chat.completions.create(
        model="ai-router", messages=[{"role": "user", "content": "explain recursion"}], max_tokens=50)
    assert completion.model == "ai-router"
    assert completion.choices[0].message.content == "primary answer"
    assert completion.usage.total_tokens == 12
    assert backends.calls("primary")[-1]["max_tokens"] == 50


async def test_streaming(openai_client, backends):
    backends.classify_as("SIMPLE")
    backends["router"].answer = lambda body: Answer(content="SIMPLE" if body.get("max_tokens") == 8 else "hi there friend")
    stream = await openai_client.chat.completions.create(
        model="ai-router", messages=[{"role": "user", "content": "hello"}], stream=True,
        stream_options={"include_usage": True})
    pieces, usage = [], None
    async for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            pieces.append(chunk.choices[0].delta.content)
        if chunk.usage:
            usage = chunk.usage
    assert "".join(pieces) == "hi there friend" and len(pieces) == 3
    assert usage.total_tokens == 12


async def test_errors_surface_as_openai_exceptions(openai_client, backends):
    with pytest.raises(openai.BadRequestError) as info:
        await openai_client.chat.completions.create(model="ai-router", messages=[])
    assert "must not be empty" in str(info.value)
    backends.classify_as("MODERATE")
    backends["primary"].answer = lambda body: Answer(content="a b c d", cut_after=2)
    stream = await openai_client.chat.completions.create(
        model="ai-router", messages=[{"role": "user", "content": "x"}], stream=True)
    with pytest.raises(openai.APIError) as info:
        async for _ in stream:
            pass
    assert "before finishing the answer" in str(info.value)
