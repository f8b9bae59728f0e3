"""Check a chat-completions request body and say exactly what is wrong with it.

Checked by hand rather than by JSON Schema so each message names the field
(`messages[2].role`) and says what was expected, as OpenAI's own errors do. Fields the
engine does not know are ignored, not rejected: clients send all sorts of extras.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from engine.errors import RequestError

# Deeper than any real request (tool schemas nest a dozen levels); deeper bodies would
# exhaust Python's recursion limit in the JSON decoder or the session-log encoder.
MAX_NESTING = 64
# A lone UTF-16 surrogate (`"\ud800"`) parses, but is not Unicode text: it cannot be
# written as UTF-8, so the session log (and most model servers) would fail on it.
LONE_SURROGATE = re.compile("[\ud800-\udfff]")

ROLES = ("system", "developer", "user", "assistant", "tool", "function")
PART_TYPES_WITH_TEXT = {"text"}

# Known parameters: (accepted Python types, description of the expectation, bounds).
NUMBER = (int, float)
KNOWN_PARAMS: dict[str, tuple[tuple[type, ...], str, tuple[float, float] | None]] = {
    "temperature": (NUMBER, "a number between 0 and 2", (0, 2)),
    "top_p": (NUMBER, "a number between 0 and 1", (0, 1)),
    "max_tokens": ((int,), "a positive integer", (1, float("inf"))),
    "max_completion_tokens": ((int,), "a positive integer", (1, float("inf"))),
    "n": ((int,), "an integer", (1, 1)),
    "seed": ((int,), "an integer", None),
    "presence_penalty": (NUMBER, "a number between -2 and 2", (-2, 2)),
    "frequency_penalty": (NUMBER, "a number between -2 and 2", (-2, 2)),
    "top_k": ((int,), "an integer", None),
    "min_p": (NUMBER, "a number between 0 and 1", (0, 1)),
    "repetition_penalty": (NUMBER, "a positive number", (0, float("inf"))),
    "logit_bias": ((dict,), "an object", None),
    "response_format": ((dict,), "an object", None),
    "stream_options": ((dict,), "an object", None),
    "chat_template_kwargs": ((dict,), "an object", None),
    "user": ((str,), "a string", None),
    "model": ((str,), "a string", None),
    "tools": ((list,), "an array", None),
}


@dataclass
class ChatRequest:
    body: dict[str, Any]
    messages: list[dict[str, Any]]
    params: dict[str, Any]
    stream: bool
    include_usage: bool


def parse_body(raw: bytes) -> dict[str, Any]:
    if not raw.strip():
        raise RequestError("request body is empty; expected a JSON object with `messages`")
    try:
        body = json.loads(raw)
    except UnicodeDecodeError:
        raise RequestError("request body is not UTF-8 text") from None
    except RecursionError:
        raise RequestError(f"request body is nested too deeply (more than {MAX_NESTING} levels)") from None
    except ValueError as exc:
        raise RequestError(f"request body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise RequestError(f"request body must be a JSON object, not {type_name(body)}")
    check_structure(body)
    return body


def check_structure(body: dict[str, Any]) -> None:
    """Reject JSON that parses but would break the engine further on: too deep, or not Unicode."""
    pending: list[tuple[Any, int]] = [(body, 1)]
    while pending:
        value, depth = pending.pop()
        if isinstance(value, str):
            if LONE_SURROGATE.search(value):
                raise RequestError("request body contains an unpaired UTF-16 surrogate escape "
                                   "(\\ud800-\\udfff); text must be valid Unicode")
        elif isinstance(value, (dict, list)):
            if depth > MAX_NESTING:
                raise RequestError(f"request body is nested too deeply (more than {MAX_NESTING} levels)")
            children = [*value.keys(), *value.values()] if isinstance(value, dict) else value
            pending.extend((child, depth + 1) for child in children)


def type_name(value: Any) -> str:
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean",
            type(None): "null", int: "a number", float: "a number"}.get(type(value), type(value).__name__)


def validate_chat(body: dict[str, Any]) -> ChatRequest:
    messages = body.get("messages")
    if messages is None:
        raise RequestError("`messages` is required: a non-empty array of {role, content}", param="messages")
    if not isinstance(messages, list):
        raise RequestError(f"`messages` must be an array, not {type_name(messages)}", param="messages")
    if not messages:
        raise RequestError("`messages` must not be empty", param="messages")
    for i, message in enumerate(messages):
        check_message(i, message)

    stream = body.get("stream", False)
    if stream is None:
        stream = False
    if not isinstance(stream, bool):
        raise RequestError(f"`stream` must be a boolean, not {type_name(stream)}", param="stream")

    for name, (types, expected, bounds) in KNOWN_PARAMS.items():
        if name not in body or body[name] is None:
            continue
        value = body[name]
        if isinstance(value, bool) or not isinstance(value, types):
            raise RequestError(f"`{name}` must be {expected}, not {type_name(value)}", param=name)
        if bounds and not bounds[0] <= value <= bounds[1]:
            if name == "n":
                raise RequestError("`n` other than 1 is not supported by this router", param="n")
            raise RequestError(f"`{name}` must be {expected}; got {value}", param=name)
    check_stop(body.get("stop"))

    options = body.get("stream_options") or {}
    include_usage = bool(options.get("include_usage")) if stream else False
    params = {k: v for k, v in body.items() if k not in ("messages", "stream", "stream_options", "model")}
    return ChatRequest(body=body, messages=messages, params=params, stream=stream, include_usage=include_usage)


def check_message(i: int, message: Any) -> None:
    where = f"messages[{i}]"
    if not isinstance(message, dict):
        raise RequestError(f"`{where}` must be an object with `role` and `content`, not {type_name(message)}",
                           param=where)
    role = message.get("role")
    if role is None:
        raise RequestError(f"`{where}.role` is required", param=f"{where}.role")
    if role not in ROLES:
        raise RequestError(f"`{where}.role` is {role!r}; expected one of: {', '.join(ROLES)}",
                           param=f"{where}.role")
    content = message.get("content")
    if content is None:
        # An assistant turn that only carries tool calls has no content; anything else needs some.
        if role == "assistant" and (message.get("tool_calls") or message.get("function_call")):
            return
        raise RequestError(f"`{where}.content` is required", param=f"{where}.content")
    if isinstance(content, str):
        return
    if not isinstance(content, list):
        raise RequestError(f"`{where}.content` must be a string or an array of content parts, "
                           f"not {type_name(content)}", param=f"{where}.content")
    for j, part in enumerate(content):
        here = f"{where}.content[{j}]"
        if not isinstance(part, dict) or not isinstance(part.get("type"), str):
            raise RequestError(f"`{here}` must be an object with a `type` (text, image_url, ...)", param=here)
        if part["type"] == "text" and not isinstance(part.get("text"), str):
            raise RequestError(f"`{here}.text` must be a string", param=f"{here}.text")
        if part["type"] == "image_url":
            image = part.get("image_url")
            url = image.get("url") if isinstance(image, dict) else image
            if not isinstance(url, str):
                raise RequestError(f"`{here}.image_url.url` must be a string", param=f"{here}.image_url")


def check_stop(stop: Any) -> None:
    if stop is None or isinstance(stop, str):
        return
    if isinstance(stop, list) and all(isinstance(s, str) for s in stop):
        if len(stop) > 16:
            raise RequestError("`stop` may hold at most 16 sequences", param="stop")
        return
    raise RequestError(f"`stop` must be a string or an array of strings, not {type_name(stop)}", param="stop")
