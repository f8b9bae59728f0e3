"""call-backend: send messages to a named backend.

Two uses, chosen by `capture`:
  - answer (no `capture`): the backend's reply goes to the client, streamed or not, and
    the request ends here. `route` names the route for the logs (default: the backend).
  - capture (`capture: NAME`, with `next`): the reply text is stored in the variable NAME
    for later nodes (the enrichment hop captures `context` this way), and the graph goes on.

What is sent: the conversation (optionally with a `system` template put in front), or,
when `messages` is given, exactly those rendered templates. The second is how a hop
declares what it may see: the cloud enrichment hop gets the question, not the chat.
Client parameters pass through the backend's parameter profile (engine.params); `body`
adds fixed fields (e.g. `chat_template_kwargs` to turn a model's thinking off).

A failure before the client has seen a byte is first retried if the node declares
`retry` (exponential backoff with jitter, honouring the backend's Retry-After), then raises
BackendError; the runner follows the node's declared `fallback` if it covers that kind.
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass
from typing import Any

from engine import backends
from engine.context import NodeResult, RequestContext, Step, text_of
from engine.errors import BackendError
from engine.graph import Backend
from engine.params import build_body

DEFAULT_RETRY_KINDS = ("connect", "timeout", "http_429", "http_5xx")


@dataclass
class Reply:
    """The answer for the client: an open upstream stream, a full response, or (dry-run) nothing."""

    route: str
    backend: Backend
    step: Step
    stream: backends.UpstreamStream | None = None
    response: dict[str, Any] | None = None
    dry_run: bool = False
    thinking_off: bool = False  # the request turned the model's thinking off


def prepare(node, graph) -> dict[str, Any]:
    return {"backend": graph.backends[node.params["backend"]], "templates": graph.templates}


def outgoing_messages(node, ctx: RequestContext) -> list[dict[str, Any]]:
    p, templates = node.params, node.prepared["templates"]
    if p.get("messages"):
        values = ctx.template_values()
        return [{"role": m["role"], "content": templates.render(m["template"], values)} for m in p["messages"]]
    messages = [dict(m) for m in ctx.messages]
    if p.get("system"):
        messages = with_system(messages, templates.render(p["system"], ctx.template_values()))
    return messages


def with_system(messages: list[dict[str, Any]], text: str) -> list[dict[str, Any]]:
    """Put `text` first in the system message, creating one if the client sent none.

    Many chat templates read only one leading system message, so we merge instead of
    stacking a second one.
    """
    if messages and messages[0].get("role") == "system" and isinstance(messages[0].get("content"), str):
        first = dict(messages[0])
        first["content"] = text + "\n\n" + first["content"] if first["content"] else text
        return [first] + messages[1:]
    return [{"role": "system", "content": text}] + messages


async def run(node, ctx: RequestContext) -> NodeResult:
    p = node.params
    backend: Backend = node.prepared["backend"]
    step = ctx.trace[-1]
    step.provider, step.url, step.model = backend.name, backend.url, backend.model
    messages = outgoing_messages(node, ctx)
    step.messages_sent = messages
    capture = p.get("capture")
    answering = capture is None
    body = build_body(model=backend.model, messages=messages, profile=backend.params,
                      client_params=ctx.params if answering else {}, fixed=p.get("body"),
                      max_tokens_cap=p.get("max_tokens"), stream=answering and ctx.stream)
    route = p.get("route") or backend.name
    thinking_off = (body.get("chat_template_kwargs") or {}).get("enable_thinking") is False

    if ctx.dry_run:
        # A missing key fails the same way it would when serving, so the fallback shows.
        backends.headers_for(backend)
        step.status = "dry-run"
        if capture:
            ctx.variables[capture] = f"[dry-run: the reply of backend {backend.name!r} would be here]"
            return NodeResult(edge="next")
        ctx.route = route
        return NodeResult(reply=Reply(route=route, backend=backend, step=step, dry_run=True))

    breaker = ctx.breaker(backend)
    if capture:
        response = await with_retries(node, ctx, lambda: backends.complete(ctx.upstream, backend, body,
                                                                           breaker=breaker))
        message = response["choices"][0]["message"]
        step.response_content = text_of(message.get("content"))
        step.usage = response.get("usage")
        ctx.variables[capture] = step.response_content
        return NodeResult(edge="next")

    ctx.route = route
    if ctx.stream:
        stream = await with_retries(node, ctx, lambda: backends.open_stream(ctx.upstream, backend, body, breaker))
        return NodeResult(reply=Reply(route=route, backend=backend, step=step, stream=stream,
                                     thinking_off=thinking_off))
    response = await with_retries(node, ctx, lambda: backends.complete(ctx.upstream, backend, body, breaker=breaker))
    return NodeResult(reply=Reply(route=route, backend=backend, step=step, response=response,
                                 thinking_off=thinking_off))


async def with_retries(node, ctx: RequestContext, call):
    """Run `call()`; on a retryable failure wait (backoff with jitter, or Retry-After) and try again."""
    retry = node.params.get("retry")
    attempts = retry["attempts"] if retry else 0
    kinds = set(retry.get("when", DEFAULT_RETRY_KINDS)) if retry else set()
    for attempt in range(attempts + 1):
        try:
            return await call()
        except BackendError as err:
            if attempt >= attempts or err.kind not in kinds:
                raise
            wait = backoff(retry, attempt, err.retry_after)
            if wait is None:
                raise  # Retry-After longer than we are willing to wait: let the fallback answer
            record = {"node": node.name, "attempt": attempt + 1, "kind": err.kind, "wait_s": round(wait, 3)}
            ctx.retries.append(record)
            ctx.trace[-1].detail.setdefault("retries", []).append(record)
            await asyncio.sleep(wait)
    raise AssertionError("unreachable")


def backoff(retry: dict[str, Any], attempt: int, retry_after: float | None) -> float | None:
    """Seconds to wait before retry number `attempt + 1`, or None if not worth waiting."""
    max_wait = retry.get("max_wait", 10.0)
    if retry_after is not None:
        return retry_after if retry_after <= max_wait else None
    # "Full jitter": a random wait up to the exponential bound, so clients do not retry in step.
    bound = min(max_wait, retry.get("initial", 0.5) * 2 ** attempt)
    return random.uniform(bound / 2, bound)


def check(name: str, spec: dict[str, Any], data: dict[str, Any], smap, root) -> list:
    return []


def templates(spec: dict[str, Any]) -> list:
    out = []
    if isinstance(spec.get("system"), str):
        out.append((("system",), spec["system"]))
    for i, message in enumerate(spec.get("messages") or []):
        if isinstance(message, dict) and isinstance(message.get("template"), str):
            out.append((("messages", i, "template"), message["template"]))
    return out


def template_variables(spec: dict[str, Any]) -> set[str]:
    return set()


def provides(spec: dict[str, Any]) -> set[str]:
    return {spec["capture"]} if isinstance(spec.get("capture"), str) else set()
