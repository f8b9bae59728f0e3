"""classify: ask a classifier model for one label out of a declared set.

Use it to decide a route by asking a (small, fast) model. The prompt is two templates,
`system` and `request`; they get the usual variables plus `labels`. The model is asked
for a short answer (small `max_tokens`, temperature 0), optionally constrained to a JSON
schema, and its raw text is mapped onto a label robustly ("SIMPLE.", "Classification:
complex", a label inside a sentence, `{"label": "ENRICH"}`). Garbage, a timeout or a
backend error give the declared `default`, recorded as such: a classifier failure never
fails the request.

Reads: query, history. Writes: `ctx.classification` {label, raw, ms, source, reason}
and a step with the classifier call. Edges: one per label. Under `engine replay`,
`ctx.classifier_cache` may hand back the logged answer instead (source `replayed`).
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from typing import Any

from engine import backends
from engine.context import NodeResult, RequestContext
from engine.errors import BackendError

THINK_BLOCK = re.compile(r"<think>.*?</think>", re.DOTALL | re.IGNORECASE)


def prepare(node, graph) -> dict[str, Any]:
    labels = node.params["labels"]
    pattern = re.compile(r"(?<![A-Za-z0-9_])(" + "|".join(map(re.escape, labels)) + r")(?![A-Za-z0-9_])",
                         re.IGNORECASE)
    return {"backend": graph.backends[node.params["backend"]], "pattern": pattern,
            "by_lower": {label.lower(): label for label in labels}, "templates": graph.templates}


def parse_label(raw: str, labels: list[str], pattern: re.Pattern[str] | None = None) -> str | None:
    """Map a classifier's raw answer onto one declared label, or None if it names none."""
    by_lower = {label.lower(): label for label in labels}
    text = THINK_BLOCK.sub("", raw or "").strip()
    # A JSON answer (constrained output, or a model that likes JSON).
    start, end = text.find("{"), text.rfind("}")
    if start != -1 and end > start:
        try:
            value = json.loads(text[start:end + 1])
        except ValueError:
            value = None
        if isinstance(value, dict):
            for key in ("label", "route", "classification", "category"):
                if isinstance(value.get(key), str) and value[key].strip().lower() in by_lower:
                    return by_lower[value[key].strip().lower()]
    if pattern is None:
        pattern = re.compile(r"(?<![A-Za-z0-9_])(" + "|".join(map(re.escape, labels)) + r")(?![A-Za-z0-9_])",
                             re.IGNORECASE)
    # The first label the answer names wins: "COMPLEX. Not SIMPLE because ..." -> COMPLEX.
    match = pattern.search(text)
    return by_lower[match.group(1).lower()] if match else None


def classifier_messages(node, ctx: RequestContext) -> list[dict[str, str]]:
    p = node.params
    values = ctx.template_values(labels=p["labels"], history=ctx.history(p.get("history_turns", 4)))
    templates = node.prepared["templates"]
    return [{"role": "system", "content": templates.render(p["system"], values)},
            {"role": "user", "content": templates.render(p["request"], values)}]


async def run(node, ctx: RequestContext) -> NodeResult:
    p, prepared = node.params, node.prepared
    backend = prepared["backend"]
    step = ctx.trace[-1]
    step.provider, step.url, step.model = backend.name, backend.url, backend.model
    step.messages_sent = classifier_messages(node, ctx)
    started = time.perf_counter()
    raw: str | None = None
    label: str | None = None
    if ctx.forced_label is not None:
        source, reason, raw = "forced", "label given with --label", ctx.forced_label
        label = parse_label(raw, p["labels"], prepared["pattern"])
        if label is None:
            source, reason = "default", f"--label {raw!r} is not one of {', '.join(p['labels'])}"
    elif ctx.classifier_cache is not None and (cached := ctx.classifier_cache(
            node.name, backend.url, backend.model, step.messages_sent)) is not None:
        # Replay: the classifier would see exactly what it saw then, so its logged answer stands.
        raw = cached
        label = parse_label(raw, p["labels"], prepared["pattern"])
        source, reason = ("replayed", None) if label else ("default", "replayed answer names no declared label")
        step.detail["replayed"] = True
    else:
        body: dict[str, Any] = {"model": backend.model, "messages": step.messages_sent,
                                "max_tokens": p.get("max_tokens", 8), "temperature": p.get("temperature", 0),
                                "stream": False}
        if p.get("constrain") == "json_schema":
            body["response_format"] = {"type": "json_schema", "json_schema": {
                "name": "route", "strict": True, "schema": {
                    "type": "object", "additionalProperties": False, "required": ["label"],
                    "properties": {"label": {"type": "string", "enum": p["labels"]}}}}}
        try:
            response = await backends.complete(ctx.session, backend, body, timeout=p.get("timeout", 10),
                                               breaker=ctx.breaker(backend))
            message = response["choices"][0]["message"]
            raw = message.get("content") or ""
            step.usage = response.get("usage")
            label = parse_label(raw, p["labels"], prepared["pattern"])
            source, reason = ("model", None) if label else ("default", "answer names no declared label")
        except BackendError as err:
            step.error, step.error_kind = str(err), err.kind
            source, reason = "default", f"classifier failed ({err.kind})"
        except asyncio.TimeoutError:
            source, reason = "default", "classifier timed out"
    if label is None:
        label = p["default"]
    step.response_content = raw
    ms = round((time.perf_counter() - started) * 1000, 2)
    ctx.classification = {"label": label, "raw": raw, "ms": ms, "source": source, "reason": reason}
    step.detail.update({"label": label, "source": source, "reason": reason})
    return NodeResult(edge=label)


def check(name: str, spec: dict[str, Any], data: dict[str, Any], smap) -> list:
    from engine.lint import did_you_mean

    problems = []
    labels = [x for x in spec.get("labels") or [] if isinstance(x, str)]
    edges = spec.get("edges") if isinstance(spec.get("edges"), dict) else {}
    default = spec.get("default")
    if isinstance(default, str) and labels and default not in labels:
        problems.append(smap.problem(("nodes", name, "default"),
                                     f"default {default!r} is not one of the labels{did_you_mean(default, labels)}"))
    for label in labels:
        if label not in edges:
            problems.append(smap.problem(("nodes", name, "labels"), f"label {label!r} has no edge"))
    for edge in edges:
        if edge not in labels:
            problems.append(smap.problem(("nodes", name, "edges", edge),
                                         f"edge for unknown label {edge!r}{did_you_mean(edge, labels)}",
                                         key=True))
    return problems


def templates(spec: dict[str, Any]) -> list:
    return [((key,), spec[key]) for key in ("system", "request") if isinstance(spec.get(key), str)]


def template_variables(spec: dict[str, Any]) -> set[str]:
    return {"labels"}


def provides(spec: dict[str, Any]) -> set[str]:
    return set()
