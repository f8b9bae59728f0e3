"""The request context that flows through the graph, and the trace it accumulates.

One `RequestContext` per request. Nodes read the messages and variables from it, and
each node visit appends one `Step` to `ctx.trace`. That trace is the single record of
what happened: `engine dry-run` prints it, the session log stores it, tests assert on it.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable, Mapping

from engine.upstream import Client




def text_of(content: Any) -> str:
    """Plain text of a message's content: a string, or the text parts of a parts list."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(part.get("text", "") for part in content
                         if isinstance(part, dict) and part.get("type") == "text")
    return ""


@dataclass
class Step:
    """What one node did. Serialised as one entry of the session log's `steps[]`."""

    node: str
    type: str
    started: float = field(default_factory=time.perf_counter)
    status: str = "ok"          # ok | error | fallback | dry-run | skipped
    edge: str | None = None     # the edge taken out of this node
    duration_ms: float | None = None
    # Backend calls fill these in (the origin session log's step fields).
    provider: str | None = None
    url: str | None = None
    model: str | None = None
    messages_sent: list[dict[str, Any]] | None = None
    response_content: str | None = None
    reasoning_content: str | None = None
    usage: dict[str, Any] | None = None
    error: str | None = None
    error_kind: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)

    def finish(self, status: str | None = None) -> None:
        if status:
            self.status = status
        if self.duration_ms is None:
            self.duration_ms = round((time.perf_counter() - self.started) * 1000, 2)

    def fail(self, err: Exception) -> None:
        self.status = "error"
        self.error = str(err)
        self.error_kind = getattr(err, "kind", type(err).__name__)
        self.finish()

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"node": self.node, "type": self.type, "status": self.status,
                               "edge": self.edge, "duration_ms": self.duration_ms}
        for key in ("provider", "url", "model", "messages_sent", "response_content",
                    "reasoning_content", "usage", "error", "error_kind"):
            value = getattr(self, key)
            if value is not None:
                out[key] = value
        if self.detail:
            out.update(self.detail)
        return out


@dataclass
class NodeResult:
    """What a node returns: the edge to follow, or a reply that ends the request."""

    edge: str | None = None
    reply: Any = None  # backends.Reply when the node answers the client


@dataclass
class RequestContext:
    """Everything one request carries through the graph."""

    messages: list[dict[str, Any]]
    params: dict[str, Any]
    stream: bool = False
    include_usage: bool = False
    headers: Mapping[str, str] = field(default_factory=dict)
    body: dict[str, Any] = field(default_factory=dict)
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    received_at: datetime = field(default_factory=lambda: datetime.now(timezone.utc))
    started: float = field(default_factory=time.perf_counter)
    variables: dict[str, Any] = field(default_factory=dict)
    trace: list[Step] = field(default_factory=list)
    route: str | None = None
    classification: dict[str, Any] | None = None
    fallbacks: list[dict[str, Any]] = field(default_factory=list)
    retries: list[dict[str, Any]] = field(default_factory=list)
    breakers: Any = None  # engine.breaker.Breakers of the running app; None in dry-run and tools
    # dry-run: never call an answering backend; `forced_label` replaces the classifier.
    dry_run: bool = False
    forced_label: str | None = None
    # replay: (node, url, model, messages_sent) -> the logged raw answer to reuse, or None to ask.
    classifier_cache: Callable[[str, str, str, list[dict[str, Any]]], str | None] | None = None
    upstream: Client | None = None  # the app's pooled backend connections (engine.upstream)

    def begin(self, node: str, node_type: str) -> Step:
        step = Step(node=node, type=node_type)
        self.trace.append(step)
        return step

    @property
    def query(self) -> str:
        """Text of the last user message: what the user asked now."""
        for message in reversed(self.messages):
            if message.get("role") == "user":
                return text_of(message.get("content"))
        return ""

    def history(self, turns: int = 4) -> list[dict[str, str]]:
        """Up to `turns` messages before the last user message, as {role, content} text."""
        last_user = max((i for i, m in enumerate(self.messages) if m.get("role") == "user"), default=0)
        earlier = [m for m in self.messages[:last_user] if m.get("role") in ("user", "assistant")]
        return [{"role": m["role"], "content": text_of(m.get("content"))} for m in earlier[-turns:]] if turns else []

    def template_values(self, **extra: Any) -> dict[str, Any]:
        values = {
            "query": self.query,
            "messages": [{"role": m.get("role"), "content": text_of(m.get("content"))} for m in self.messages],
            "history": self.history(),
            "now": self.received_at.strftime("%Y-%m-%d %H:%M UTC"),
        }
        values.update(self.variables)
        values.update(extra)
        return values

    def breaker(self, backend):
        return self.breakers.for_backend(backend) if self.breakers is not None else None

    def prompt_chars(self) -> int:
        return sum(len(text_of(m.get("content"))) for m in self.messages)

    def elapsed_ms(self) -> float:
        return round((time.perf_counter() - self.started) * 1000, 2)
