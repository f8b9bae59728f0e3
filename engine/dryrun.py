"""`engine dry-run`: trace a request through the graph without calling an answering backend.

It runs the very same `run_graph` as the server, with `ctx.dry_run` set: call-backend
nodes record what they would send and stop; the classifier is asked for real unless
`--label` supplies its answer (an unreachable classifier shows up in the trace, with the
default it fell back to). The trace printed is the one a session log would hold.
"""

from __future__ import annotations

import json
from typing import Any, Mapping


from engine.context import RequestContext
from engine.errors import EngineError
from engine.graph import Graph
from engine.runner import run_graph
from engine.upstream import Client
from engine.validation import validate_chat


async def trace_request(graph: Graph, body: dict[str, Any], *, upstream, label: str | None = None,
                        headers: Mapping[str, str] | None = None, classifier_cache=None,
                        received_at=None) -> tuple[RequestContext, str | None]:
    """Run one request body through `graph` in dry-run mode: the shared core of `engine dry-run`,
    `engine replay` and `engine eval`. Returns the context (its trace, route, classification)
    and the error that ended the walk, if any. Raises RequestError for a malformed body."""
    chat = validate_chat(body)
    ctx = RequestContext(messages=list(chat.messages), params=chat.params, stream=chat.stream,
                         body=chat.body, headers=headers if headers is not None else {}, dry_run=True,
                         forced_label=label, classifier_cache=classifier_cache, upstream=upstream)
    if received_at is not None:
        ctx.received_at = received_at
    error = None
    try:
        await run_graph(graph, ctx)
    except EngineError as err:
        error = str(err)
    for step in ctx.trace:
        step.finish()
    return ctx, error


async def dry_run(graph: Graph, body: dict[str, Any], *, label: str | None = None,
                  headers: Mapping[str, str] | None = None) -> dict[str, Any]:
    async with Client() as client:
        ctx, error = await trace_request(graph, body, upstream=client, label=label, headers=dict(headers or {}))
    return {
        "graph": str(graph.path),
        "query": ctx.query,
        "route": ctx.route,
        "classification": ctx.classification,
        "fallbacks": ctx.fallbacks,
        "error": error,
        "steps": [step.as_dict() for step in ctx.trace],
    }


def format_trace(trace: dict[str, Any]) -> str:
    """Human-readable form of a dry-run trace."""
    lines = [f"query: {trace['query'][:200]!r}", f"graph: {trace['graph']}", ""]
    for i, step in enumerate(trace["steps"], 1):
        head = f"{i}. {step['node']} [{step['type']}]"
        if step.get("provider"):
            head += f"  backend {step['provider']} ({step.get('model')} at {step.get('url')})"
        lines.append(head)
        if step.get("matched") is not None or step["type"] == "detect-meta":
            lines.append(f"   matched: {step.get('matched') or 'nothing'}")
        if step["type"] == "classify":
            sim = step.get("similarity")
            if sim:
                scores = ", ".join(f"{label} {score:.3f}" for label, score in sim["scores"].items())
                lines.append(f"   similarity: {sim['label']} (margin {sim['margin']:.3f}; {scores})")
                for label, example, cosine in sim["top_examples"][:3]:
                    lines.append(f"     {cosine:.3f} {label}: {example}")
            if step.get("provider"):
                lines.append(f"   classifier answered: {step.get('response_content')!r}")
            lines.append(f"   -> label {step.get('label')} ({step.get('source')}"
                         f"{', ' + step['reason'] if step.get('reason') else ''})")
        if step.get("error"):
            lines.append(f"   error: {step['error']}")
        for message in step.get("messages_sent") or []:
            content = message.get("content")
            text = content if isinstance(content, str) else json.dumps(content)
            lines.append(f"   {message['role']}: " + indent(text))
        if step.get("injected"):
            lines.append("   injected: " + indent(step["injected"]))
        if step["status"] == "dry-run":
            lines.append("   (not called: dry-run)")
        lines.append(f"   -> {step.get('edge') or ('answers the client' if step['type'] == 'call-backend' else '-')}"
                     f"   [{step['status']}]")
    lines.append("")
    for fallback in trace["fallbacks"]:
        lines.append(f"fallback: {fallback['from']} -> {fallback['to']} ({fallback['kind']})")
    if trace.get("error"):
        lines.append(f"error: {trace['error']}")
    lines.append(f"route: {trace['route']}")
    return "\n".join(lines)


def indent(text: str, width: int = 6) -> str:
    pad = "\n" + " " * width
    return pad.join(text.splitlines()) if text else "''"
