"""Fuzzing every endpoint of the real app (hypothesis): no 5xx, no traceback, OpenAI-shaped errors.

Each test sends generated requests through `create_app` with the fake backends behind it,
and checks every answer with `check_response` (tests/openapi_check.py): a status the
OpenAPI document declares, a body that matches its schema, OpenAI's error shape for every
non-2xx, nothing that looks like Python internals. After each example the app must still
answer `GET /v1/models`. Generated: raw bytes (broken JSON, invalid UTF-8, empty, huge,
deeply nested), any JSON value at the top level, and chat requests whose every field may
be of the wrong type or out of range (odd unicode, lone surrogates, NaN, 2**1000, ...).

The examples are derandomized and there is no example database, so a run is the same on
every machine; `FUZZ_EXAMPLES` scales the example counts (default 1).
"""

from __future__ import annotations

import json
import math
import os

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from engine.app import create_app
from engine.settings import Settings
from engine.state import STATE
from engine.validation import KNOWN_PARAMS, ROLES
from tests.conftest import session_logs
from tests.openapi_check import check_response

SCALE = float(os.environ.get("FUZZ_EXAMPLES", "1"))


def fuzz(examples: int):
    return settings(max_examples=max(1, int(examples * SCALE)), deadline=None, database=None, derandomize=True,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                           HealthCheck.data_too_large, HealthCheck.large_base_example])


# -- values --------------------------------------------------------------------------------------------------

# Text a user might send, and text no one should: control characters, RTL marks, emoji, NUL,
# Jinja syntax, and lone surrogates (valid JSON escapes, but not Unicode).
odd_text = st.one_of(
    st.text(max_size=40),
    st.text(st.characters(codec="utf-8"), max_size=40),
    st.sampled_from(["", " ", "\x00", "\u202e\u200f", "🦀" * 50, "{{ 7*7 }}", "{% raw %}", "\r\n\r\n",
                     "a" * 70_000, "\\", "\"", "null", "[DONE]", "data: [DONE]\n\n"]),
    st.text(st.characters(categories=["Cs"]), min_size=1, max_size=3),
)
extreme_numbers = st.one_of(
    st.integers(min_value=-(2 ** 70), max_value=2 ** 70),
    st.sampled_from([0, -0.0, 1, 2, 2.0000001, -2.0000001, 1e-320, 1e308, -1e308, 2 ** 63, 2 ** 1000,
                     math.inf, -math.inf, math.nan]),
    st.floats(allow_nan=True, allow_infinity=True),
)
scalars = st.one_of(st.none(), st.booleans(), extreme_numbers, odd_text)
any_json = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                         st.dictionaries(odd_text, inner, max_size=4)),
                        max_leaves=12)


def deep(depth: int) -> bytes:
    return b'{"messages": [{"role": "user", "content": "hi"}], "x": ' + b"[" * depth + b"]" * depth + b"}"


def dumps(value) -> bytes:
    # ensure_ascii: lone surrogates travel as \ud800 escapes, exactly as a JS client sends them.
    return json.dumps(value, allow_nan=True).encode()


# -- chat requests whose fields may all be wrong ------------------------------------------------------------

content_part = st.one_of(
    st.fixed_dictionaries({"type": st.just("text"), "text": st.one_of(odd_text, scalars)}),
    st.fixed_dictionaries({"type": st.just("image_url"),
                           "image_url": st.one_of(st.fixed_dictionaries({"url": st.one_of(odd_text, scalars)}),
                                                  scalars)}),
    st.dictionaries(st.sampled_from(["type", "text", "image_url", "input_audio"]), scalars, max_size=3),
    scalars,
)
message = st.one_of(
    st.fixed_dictionaries(
        {"role": st.one_of(st.sampled_from(ROLES), odd_text, scalars)},
        optional={"content": st.one_of(odd_text, st.lists(content_part, max_size=3), scalars),
                  "name": odd_text, "tool_calls": any_json, "tool_call_id": scalars, "function_call": any_json}),
    scalars,
)
good_message = st.fixed_dictionaries({"role": st.sampled_from(["user", "system", "assistant"]),
                                      "content": odd_text.filter(lambda t: not any(0xd800 <= ord(c) <= 0xdfff
                                                                                 for c in t))})
param_values = {name: st.one_of(scalars, any_json) for name in KNOWN_PARAMS}
param_values.update({
    "temperature": st.one_of(st.floats(-1, 3), extreme_numbers, scalars),
    "top_p": st.one_of(st.floats(-0.5, 1.5), scalars),
    "max_tokens": st.one_of(st.integers(-5, 10 ** 6), extreme_numbers, scalars),
    "stop": st.one_of(odd_text, st.lists(odd_text, max_size=20), any_json),
    "stream": st.one_of(st.booleans(), scalars),
    "stream_options": st.one_of(st.fixed_dictionaries({"include_usage": scalars}), any_json),
    "tool_choice": any_json,
    "response_format": st.one_of(st.fixed_dictionaries({"type": st.sampled_from(["json_object", "text"])}),
                                 any_json),
})
chat_request = st.fixed_dictionaries(
    {"messages": st.one_of(st.lists(message, max_size=4), st.lists(good_message, min_size=1, max_size=3), scalars)},
    optional={**param_values, "model": scalars, "frobnicate": any_json, "metadata": any_json},
)


# -- the checks ---------------------------------------------------------------------------------------------

async def send_and_check(client, method: str, path: str, **kwargs):
    resp = await client.request(method, path, **kwargs)
    body = await resp.read()
    check_response(path, method, resp.status, resp.content_type, body)
    still = await client.get("/v1/models")
    assert still.status == 200, "the app stopped answering after the request above"
    await still.read()
    return resp.status


CONTENT_TYPES = st.sampled_from(["application/json", "text/plain", "application/x-www-form-urlencoded",
                                 "multipart/form-data; boundary=x", "application/json; charset=latin-1", ""])


@fuzz(250)
@given(body=st.one_of(st.binary(max_size=300), any_json.map(dumps),
                      st.builds(lambda b, cut: b[:cut], chat_request.map(dumps), st.integers(0, 200))),
       content_type=CONTENT_TYPES)
@example(body=b"", content_type="application/json")
@example(body=b"\xff\xfe\xfd", content_type="application/json")
@example(body=b"[" * 100_000, content_type="application/json")
@example(body=deep(5000), content_type="application/json")
@example(body=deep(900), content_type="application/json")
@example(body=b'{"messages": [{"role": "user", "content": "\\ud800"}]}', content_type="application/json")
@example(body=b'{"messages": [{"role": "user", "content": "hi"}], "max_tokens": 1' + b"0" * 5000 + b"}",
         content_type="application/json")
@example(body=b'{"messages": [{"role": "user", "content": "hi"}], "temperature": NaN}', content_type="")
@example(body=b"null", content_type="application/json")
@example(body=b"\xef\xbb\xbf{}", content_type="application/json")
async def test_chat_raw_bodies(client, backends, body, content_type):
    headers = {"Content-Type": content_type} if content_type else {}
    await send_and_check(client, "POST", "/v1/chat/completions", data=body, headers=headers)


@fuzz(300)
@given(request=chat_request)
@example(request={"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2 ** 1000, "seed": 2 ** 1000,
                  "top_k": -(2 ** 70)})
@example(request={"messages": [{"role": "user", "content": "hi"}], "stream": True, "stream_options": None})
@example(request={"messages": [{"role": "assistant", "content": None, "tool_calls": []}]})
@example(request={"messages": [{"role": "tool", "content": [{"type": "image_url", "image_url": "x"}]}]})
async def test_chat_requests_with_wrong_fields(client, backends, request):
    await send_and_check(client, "POST", "/v1/chat/completions", data=dumps(request),
                         headers={"Content-Type": "application/json"})


@fuzz(80)
@given(size=st.integers(0, 3000), fill=st.sampled_from([b"x", b"\xff", b"["]))
async def test_bodies_around_the_size_limit(aiohttp_client, graph, tmp_path, size, fill):
    client = await aiohttp_client(create_app(Settings(session_log_dir=tmp_path, max_body_bytes=1024), graph))
    body = b'{"messages": [{"role": "user", "content": "' + fill * size + b'"}]}'
    status = await send_and_check(client, "POST", "/v1/chat/completions", data=body,
                                  headers={"Content-Type": "application/json"})
    assert (status == 413) == (len(body) > 1024)


PATHS = ["/v1/chat/completions", "/v1/models", "/health", "/stats", "/openapi.json"]
header_text = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7e), max_size=60)


@fuzz(150)
@given(method=st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD"]),
       path=st.one_of(st.sampled_from(PATHS), st.builds(lambda p, s: p + s, st.sampled_from(PATHS),
                                                        st.sampled_from(["/", "/x", "//", "%00", "%ff"]))),
       query=st.dictionaries(header_text, header_text, max_size=3),
       headers=st.dictionaries(st.sampled_from(["Authorization", "X-OpenWebUI-Task", "Accept", "Content-Type",
                                                "X-OpenWebUI-User-Email", "User-Agent"]), header_text, max_size=4),
       body=st.one_of(st.none(), st.binary(max_size=100)))
async def test_every_endpoint_with_any_method_query_and_headers(client, backends, method, path, query, headers,
                                                                body):
    await send_and_check(client, method, path, params=query, headers=headers, data=body)


@fuzz(60)
@given(token=st.one_of(header_text, st.just("right-key"), st.just("right-key ")),
       scheme=st.sampled_from(["Bearer ", "bearer ", "Basic ", "", "Bearer  "]),
       path=st.sampled_from(PATHS))
async def test_api_keys_any_authorization_header(aiohttp_client, graph, tmp_path, backends, token, scheme, path):
    client = await aiohttp_client(create_app(Settings(session_log_dir=tmp_path, api_keys=frozenset({"right-key"})),
                                             graph))
    method = "POST" if path == "/v1/chat/completions" else "GET"
    resp = await client.request(method, path, headers={"Authorization": scheme + token},
                                json={"messages": [{"role": "user", "content": "hi"}]})
    check_response(path, method, resp.status, resp.content_type, await resp.read())
    authorised = scheme.lower().startswith("bearer") and token.strip() == "right-key"
    assert (resp.status != 401) == (authorised or path == "/health")


# -- the bugs the fuzzing found, kept as plain regression tests ---------------------------------------------

@pytest.mark.parametrize("body,message", [
    (deep(5000), "nested too deeply"),                 # was a 500: RecursionError in json.loads
    (deep(900), "nested too deeply"),                  # parsed, but deeper than any real request
    (b'{"messages": [{"role": "user", "content": "a \\udc80 b"}]}', "unpaired UTF-16 surrogate"),
])
async def test_regression_bodies_that_broke_the_engine_get_a_400_and_a_session_log(client, backends, body,
                                                                                   message):
    resp = await client.post("/v1/chat/completions", data=body)
    assert resp.status == 400
    assert message in (await resp.json())["error"]["message"]
    [log] = await session_logs(client)  # a lone surrogate used to make the log unwritable
    assert log["status"] == 400 and message in log["error"]
    assert client.app[STATE].writer.failed == 0
