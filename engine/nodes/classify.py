"""classify: decide one label out of a declared set.

Three methods (`method:` in routes.yaml):
  llm        ask a classifier model (below);
  similarity score the request against labelled example utterances by embedding similarity
             (engine.similarity_stage): milliseconds on a CPU, no model server;
  cascade    similarity decides when its margin is clear; otherwise the LLM is asked; if the
             LLM fails or answers garbage, the similarity label is used (not a blind default).

The LLM method: the prompt is two templates,
`system` and `request`; they get the usual variables plus `labels`. The model is asked
for a short answer (small `max_tokens`, temperature 0), optionally constrained to a JSON
schema, and its raw text is mapped onto a label robustly ("SIMPLE.", "Classification:
complex", a label inside a sentence, `{"label": "ENRICH"}`). Garbage, a timeout or a
backend error give the declared `default`, recorded as such: a classifier failure never
fails the request.

Reads: query, history. Writes: `ctx.classification` {label, raw, ms, source, reason,
similarity} and a step with the classifier call and the similarity scores, margin and
deciding examples. Edges: one per label. Under `engine replay`,
`ctx.classifier_cache` may hand back the logged answer instead (source `replayed`).
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from typing import Any

from engine import backends, similarity_stage
from engine.context import NodeResult, RequestContext
from engine.errors import BackendError

THINK_BLOCK = re.compile(r"<think>.*?</think>", re.DOTALL | re.IGNORECASE)


def prepare(node, graph) -> dict[str, Any]:
    p = node.params
    prepared: dict[str, Any] = {"backend": graph.backends.get(p.get("backend")),
                                "pattern": label_pattern(p["labels"]), "templates": graph.templates,
                                "similarity": None, "similarity_off": None,
                                "threshold": similarity_stage.settings(p)["threshold"]}
    if p.get("method", "llm") != "llm":
        prepared["similarity"], prepared["similarity_off"] = similarity_stage.prepare(p, graph.root)
    return prepared


def label_pattern(labels: list[str]) -> re.Pattern[str]:
    """Any declared label as a whole word, case-insensitive."""
    return re.compile(r"(?<![A-Za-z0-9_])(" + "|".join(map(re.escape, labels)) + r")(?![A-Za-z0-9_])",
                      re.IGNORECASE)


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
        pattern = label_pattern(labels)
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
    step = ctx.trace[-1]
    started = time.perf_counter()
    method = p.get("method", "llm")
    sim = None
    if ctx.forced_label is not None:
        raw, label, source, reason = forced(node, ctx)
    else:
        if prepared["similarity"] is not None:
            sim = await similarity_stage.score(prepared["similarity"], ctx.messages)
            step.detail["similarity"] = sim.as_dict()
        threshold = prepared["threshold"]
        if sim is not None and (method == "similarity" or sim.margin >= threshold):
            raw, label, source = None, sim.label, "similarity"
            reason = None if method == "similarity" else f"margin {sim.margin:.3f} >= {threshold}"
        else:
            raw, label, source, reason = await ask_llm(node, ctx)
            if sim is not None:
                reason = f"margin {sim.margin:.3f} < {threshold}; " + (reason or "asked the LLM")
                if label is None:  # the LLM failed: the similarity label beats a blind default
                    label, source = sim.label, "similarity-fallback"
    if label is None:
        label = p["default"]
    step.response_content = raw
    ms = round((time.perf_counter() - started) * 1000, 2)
    ctx.classification = {"label": label, "raw": raw, "ms": ms, "source": source, "reason": reason,
                          "method": method, "similarity": sim.as_dict() if sim else None}
    step.detail.update({"label": label, "source": source, "reason": reason, "method": method})
    return NodeResult(edge=label)


def forced(node, ctx: RequestContext):
    """dry-run --label: the given answer stands in for the classifier."""
    raw = ctx.forced_label
    label = parse_label(raw, node.params["labels"], node.prepared["pattern"])
    if label is None:
        return raw, None, "default", f"--label {raw!r} is not one of {', '.join(node.params['labels'])}"
    return raw, label, "forced", "label given with --label"


async def ask_llm(node, ctx: RequestContext):
    """Ask the classifier backend; (raw, label or None, source, reason)."""
    p, prepared = node.params, node.prepared
    backend = prepared["backend"]
    step = ctx.trace[-1]
    step.provider, step.url, step.model = backend.name, backend.url, backend.model
    step.messages_sent = classifier_messages(node, ctx)
    if ctx.classifier_cache is not None:
        cached = ctx.classifier_cache(node.name, backend.url, backend.model, step.messages_sent)
        if cached is not None:
            # Replay: the classifier would see exactly what it saw then, so its logged answer stands.
            step.detail["replayed"] = True
            label = parse_label(cached, p["labels"], prepared["pattern"])
            if label:
                return cached, label, "replayed", None
            return cached, None, "default", "replayed answer names no declared label"
    body: dict[str, Any] = {"model": backend.model, "messages": step.messages_sent,
                            "max_tokens": p.get("max_tokens", 8), "temperature": p.get("temperature", 0),
                            "stream": False}
    if p.get("constrain") == "json_schema":
        body["response_format"] = {"type": "json_schema", "json_schema": {
            "name": "route", "strict": True, "schema": {
                "type": "object", "additionalProperties": False, "required": ["label"],
                "properties": {"label": {"type": "string", "enum": p["labels"]}}}}}
    try:
        response = await backends.complete(ctx.upstream, backend, body, timeout=p.get("timeout", 10),
                                           breaker=ctx.breaker(backend))
    except BackendError as err:
        step.error, step.error_kind = str(err), err.kind
        return None, None, "default", f"classifier failed ({err.kind})"
    except asyncio.TimeoutError:
        return None, None, "default", "classifier timed out"
    raw = response["choices"][0]["message"].get("content") or ""
    step.usage = response.get("usage")
    label = parse_label(raw, p["labels"], prepared["pattern"])
    return raw, label, "model" if label else "default", None if label else "answer names no declared label"


def check(name: str, spec: dict[str, Any], data: dict[str, Any], smap, root) -> list:
    from engine.lint import did_you_mean

    problems = similarity_stage.check(name, spec, root, smap)
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
