"""inject-context: render a template with earlier variables into the message list.

Use it after a capturing call-backend, to hand what it fetched (the enrichment hop's
`context`) to the model that answers. `position: system` merges the rendered text into
the leading system message (or inserts one); `before-last-user` prepends it to the last
user message, for models that ignore system prompts.

Reads: the variables its template names (checked by lint). Writes: ctx.messages.
Edge: `next`.
"""

from __future__ import annotations

from typing import Any

from engine.context import NodeResult, RequestContext
from engine.nodes.call_backend import with_system


def prepare(node, graph) -> dict[str, Any]:
    return {"templates": graph.templates}


async def run(node, ctx: RequestContext) -> NodeResult:
    text = node.prepared["templates"].render(node.params["template"], ctx.template_values())
    if node.params.get("position", "system") == "system":
        ctx.messages = with_system(ctx.messages, text)
    else:
        ctx.messages = prepend_to_last_user(ctx.messages, text)
    ctx.trace[-1].detail["injected"] = text
    return NodeResult(edge="next")


def prepend_to_last_user(messages: list[dict[str, Any]], text: str) -> list[dict[str, Any]]:
    out = [dict(m) for m in messages]
    for message in reversed(out):
        if message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, list):
                message["content"] = [{"type": "text", "text": text}] + content
            else:
                message["content"] = f"{text}\n\n{content or ''}"
            break
    return out


def check(name: str, spec: dict[str, Any], data: dict[str, Any], smap, root) -> list:
    return []


def templates(spec: dict[str, Any]) -> list:
    return [(("template",), spec["template"])] if isinstance(spec.get("template"), str) else []


def template_variables(spec: dict[str, Any]) -> set[str]:
    return set()


def provides(spec: dict[str, Any]) -> set[str]:
    return set()
