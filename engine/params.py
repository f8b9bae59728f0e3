"""Client parameters -> upstream request body, through a backend's parameter profile.

The profile in routes.yaml (`backends.<name>.params`) says which client parameters a
backend gets and within which bounds: `true` passes a parameter as given, `{min, max}`
clamps a number, anything not listed is not sent. Unknown client fields are therefore
ignored, never rejected, and a backend that rejects a parameter (xAI's reasoning models
and `presence_penalty`, say) simply does not get it.
"""

from __future__ import annotations

from typing import Any, Mapping

# Fields of the client body that are never "parameters": the engine owns them.
ENGINE_OWNED = frozenset({"model", "messages", "stream", "stream_options", "n"})


def apply_profile(profile: Mapping[str, Any], client_params: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, value in client_params.items():
        rule = profile.get(name)
        if rule is None or rule is False or name in ENGINE_OWNED or value is None:
            continue
        if isinstance(rule, dict):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                continue  # request validation already rejected bad types of known params
            if "min" in rule:
                value = max(value, rule["min"])
            if "max" in rule:
                value = min(value, rule["max"])
            if isinstance(client_params[name], int) and float(value).is_integer():
                value = int(value)
        out[name] = value
    # OpenAI's newer name for max_tokens; send what every backend here understands.
    if "max_completion_tokens" in out and "max_tokens" not in out:
        out["max_tokens"] = out.pop("max_completion_tokens")
    return out


def build_body(*, model: str, messages: list[dict[str, Any]], profile: Mapping[str, Any],
               client_params: Mapping[str, Any], fixed: Mapping[str, Any] | None = None,
               max_tokens_cap: int | None = None, stream: bool = False) -> dict[str, Any]:
    body: dict[str, Any] = {"model": model, "messages": messages}
    body.update(apply_profile(profile, client_params))
    for key, value in (fixed or {}).items():
        body[key] = value
    if max_tokens_cap is not None:
        body["max_tokens"] = min(body.get("max_tokens", max_tokens_cap), max_tokens_cap)
    if stream:
        body["stream"] = True
        # Always ask for usage so the session log has token counts; the engine drops the
        # usage-only chunk for clients that did not ask for it.
        body["stream_options"] = {"include_usage": True}
    return body
