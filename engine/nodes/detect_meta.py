"""detect-meta: recognise client-generated meta prompts without calling any model.

Use it first in a graph, so that a chat client's housekeeping (Open WebUI's title,
tags, follow-up, search-query, autocomplete, emoji, image-prompt, tool-selection and
compaction prompts) skips classification and goes straight to a model that handles
JSON tasks well.

Reads: the request headers and messages. Writes: a step with `matched` (the rule or
header that decided). Edges: `meta` or `other`.

Two kinds of signal, both declared in routes.yaml:
  headers - Open WebUI >= 0.10 can send the task name in a per-connection header
            (e.g. `X-OpenWebUI-Task: {{TASK}}`); the cleanest signal when set up.
  rules   - content fingerprints (regexes that must all / any / none match). Open WebUI
            strips the task name from the body, so content is the fallback. The RAG
            template also starts with `### Task:` but wraps a real question: the shipped
            rules exclude it with a `none` pattern.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from engine.context import NodeResult, RequestContext, text_of
from engine.lint import regex_problems


@dataclass(frozen=True)
class Rule:
    name: str
    scan: str
    all: tuple[re.Pattern[str], ...]
    any: tuple[re.Pattern[str], ...]
    none: tuple[re.Pattern[str], ...]

    def matches(self, text: str) -> bool:
        return (all(p.search(text) for p in self.all)
                and (not self.any or any(p.search(text) for p in self.any))
                and not any(p.search(text) for p in self.none))


@dataclass(frozen=True)
class Prepared:
    headers: tuple[tuple[str, re.Pattern[str]], ...]
    rules: tuple[Rule, ...]


def prepare(node, graph) -> Prepared:
    compile_all = lambda items: tuple(re.compile(p) for p in items or ())  # noqa: E731
    return Prepared(
        headers=tuple((h["name"], re.compile(h.get("pattern", r"\S"))) for h in node.params.get("headers", ())),
        rules=tuple(Rule(r["name"], r.get("scan", "last-user"), compile_all(r.get("all")),
                         compile_all(r.get("any")), compile_all(r.get("none")))
                    for r in node.params.get("rules", ())),
    )


def scanned_text(messages: list[dict[str, Any]], scan: str) -> str:
    if scan == "last-user":
        for message in reversed(messages):
            if message.get("role") == "user":
                return text_of(message.get("content"))
        return ""
    if scan == "system":
        return "\n".join(text_of(m.get("content")) for m in messages if m.get("role") == "system")
    return "\n".join(text_of(m.get("content")) for m in messages)


def detect(prepared: Prepared, headers, messages: list[dict[str, Any]]) -> str | None:
    """Name of the header or rule that marks the request as meta, or None."""
    for name, pattern in prepared.headers:
        value = headers.get(name)
        if value is not None and pattern.search(value):
            return f"header:{name}"
    texts: dict[str, str] = {}
    for rule in prepared.rules:
        if rule.scan not in texts:
            texts[rule.scan] = scanned_text(messages, rule.scan)
        if rule.matches(texts[rule.scan]):
            return rule.name
    return None


async def run(node, ctx: RequestContext) -> NodeResult:
    matched = detect(node.prepared, ctx.headers, ctx.messages)
    ctx.trace[-1].detail["matched"] = matched
    return NodeResult(edge="meta" if matched else "other")


def check(name: str, spec: dict[str, Any], data: dict[str, Any], smap, root) -> list:
    problems = []
    for i, header in enumerate(spec.get("headers") or []):
        if isinstance(header, dict) and isinstance(header.get("pattern"), str):
            try:
                re.compile(header["pattern"])
            except re.error as exc:
                problems.append(smap.problem(("nodes", name, "headers", i, "pattern"),
                                             f"invalid regular expression: {exc}"))
    for i, rule in enumerate(spec.get("rules") or []):
        if isinstance(rule, dict):
            for key in ("all", "any", "none"):
                problems += regex_problems(rule.get(key), ("nodes", name, "rules", i, key), smap)
    return problems


def templates(spec: dict[str, Any]) -> list:
    return []


def template_variables(spec: dict[str, Any]) -> set[str]:
    return set()


def provides(spec: dict[str, Any]) -> set[str]:
    return set()
