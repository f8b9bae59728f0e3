"""`engine review`, the part without a model: findings read straight from session logs.

Each finding is a dict {kind, title, detail, sessions: [ids]}: every finding cites the
session logs it rests on. The kinds:

  latency_outlier        a request (per route) or a step (per node) far slower than its peers:
                         above median + K * MAD (scaled to a standard deviation) and above twice
                         the median, so the bar moves with the traffic and no fixed threshold
                         is needed
  enrichment_failed      the enrichment hop (a capturing call) errored or fell back
  enrichment_empty       it answered, with nothing
  enrichment_irrelevant  its context shares few content words with the question
  meta_classified        looks like a client meta prompt (the graph's own detect-meta rules, or
                         looser fingerprints) but was classified like a user question
  classifier_default     the classifier's answer mapped to the default (garbage, timeout, error)
  fallback               fallbacks taken, by backend and error kind
  backend_error          failed steps and failed requests, by backend and error kind
"""

from __future__ import annotations

import re
import statistics
from collections import defaultdict
from typing import Any

from multidict import CIMultiDict

from engine.graph import Graph
from engine.loop import last_user_text

K_MAD = 3.5          # how many (scaled) MADs above the median counts as an outlier
MIN_PEERS = 5        # fewer samples than this say nothing about what is normal
MIN_OVERLAP = 0.2    # share of the question's content words the enrichment context must contain

# Looser than the shipped detect-meta rules on purpose: a review may over-report, routing may not.
LOOSE_META = [
    ("task-header+json", [r"(?m)^\s*#{1,4}\s*Task\s*:", r"(?i)\bjson\b"]),
    ("chat-history-block", [r"(?i)<chat_history>"]),
    ("generate-title-tags-followups",
     [r"(?i)\b(generate|suggest|create)\b.{0,60}\b(title|tags|follow[- ]?up questions|search quer(y|ies))\b"]),
    ("reply-only-json", [r"(?i)\b(respond|reply|return)\b.{0,40}\bonly\b.{0,20}\bjson\b"]),
]
RAG_MARKS = re.compile(r"<context>|<source")
STOPWORDS = set("""the and for are but not you your with this that what which who how why when where
from have has had was were will would can could should does did about into than then them they
their there here some any all its it's is in on of to a an be or as at by me my i we our please
tell give show today now right current currently latest""".split())


def _flag(values: list[tuple[str, float]]) -> tuple[float, float, list[tuple[str, float]]]:
    numbers = [v for _, v in values]
    median = statistics.median(numbers)
    mad = statistics.median(abs(v - median) for v in numbers) * 1.4826
    # With identical peers MAD is 0; a twentieth of the median keeps noise from counting. And
    # "far slower" means at least twice the median: jitter on a 1 ms step is not a finding.
    bar = max(median + K_MAD * max(mad, 0.05 * abs(median)), 2 * median)
    return median, bar, [(sid, v) for sid, v in values if v > bar]


def latency_findings(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    groups: dict[tuple[str, str], list[tuple[str, float]]] = defaultdict(list)
    for record in records:
        if record.get("route") and isinstance(record.get("total_ms"), (int, float)):
            groups[("route", record["route"])].append((record["id"], float(record["total_ms"])))
        for step in record.get("steps") or []:
            if step.get("status") in ("ok", "dry-run") and isinstance(step.get("duration_ms"), (int, float)):
                groups[("step", step["node"])].append((record["id"], float(step["duration_ms"])))
    findings = []
    for (scope, name), values in sorted(groups.items()):
        if len(values) < MIN_PEERS:
            continue
        median, bar, slow = _flag(values)
        if slow:
            findings.append({
                "kind": "latency_outlier", "scope": scope, "name": name,
                "title": f"{len(slow)} slow {'request' if scope == 'route' else 'step'}(s) on {scope} {name!r}",
                "detail": f"median {median:.1f} ms over {len(values)}, outlier bar {bar:.1f} ms (median + "
                          f"{K_MAD} MAD, at least twice the median); slowest {max(v for _, v in slow):.1f} ms",
                "sessions": [sid for sid, _ in sorted(slow, key=lambda x: -x[1])]})
    return findings


def content_words(text: str) -> set[str]:
    # Five-letter prefixes: "prices" and "price", "released" and "release" meet.
    return {w[:5] for w in re.findall(r"[a-z0-9]+", text.lower()) if len(w) >= 3 and w not in STOPWORDS}


def overlap(question: str, context: str) -> float | None:
    asked = content_words(question)
    if len(asked) < 2:
        return None  # too short a question to judge relevance by words
    return len(asked & content_words(context)) / len(asked)


def enrichment_findings(records: list[dict[str, Any]], graph: Graph | None) -> list[dict[str, Any]]:
    capture_nodes = {name for name, node in (graph.nodes.items() if graph else [])
                     if node.type == "call-backend" and "capture" in node.params}
    failed, empty, irrelevant = [], [], []
    for record in records:
        for step in record.get("steps") or []:
            if step.get("type") != "call-backend" or not (step["node"] in capture_nodes or step.get("edge") == "next"):
                continue
            if step.get("status") in ("error", "fallback"):
                failed.append((record["id"], step.get("error_kind") or "error"))
            elif step.get("status") == "ok" and not (step.get("response_content") or "").strip():
                empty.append((record["id"], step["node"]))
            elif step.get("status") == "ok":
                question = last_user_text((record.get("request") or {}).get("messages")) or record.get("user_query", "")
                share = overlap(question, step.get("response_content") or "")
                if share is not None and share < MIN_OVERLAP:
                    irrelevant.append((record["id"], share))
    findings = []
    if failed:
        kinds = sorted({k for _, k in failed})
        findings.append({"kind": "enrichment_failed", "title": f"{len(failed)} enrichment hop(s) failed",
                         "detail": "error kinds: " + ", ".join(kinds), "sessions": [s for s, _ in failed]})
    if empty:
        findings.append({"kind": "enrichment_empty", "title": f"{len(empty)} enrichment hop(s) came back empty",
                         "detail": "the answering model got no context", "sessions": [s for s, _ in empty]})
    if irrelevant:
        findings.append({"kind": "enrichment_irrelevant",
                         "title": f"{len(irrelevant)} enrichment context(s) look unrelated to the question",
                         "detail": f"under {MIN_OVERLAP:.0%} of the question's content words appear in the context "
                                   "(lowest " + f"{min(v for _, v in irrelevant):.0%})",
                         "sessions": [s for s, _ in irrelevant]})
    return findings


def meta_findings(records: list[dict[str, Any]], graph: Graph | None) -> list[dict[str, Any]]:
    from engine.nodes.detect_meta import detect

    detectors = [node.prepared for node in (graph.nodes.values() if graph else []) if node.type == "detect-meta"]
    by_signal: dict[str, list[str]] = defaultdict(list)
    for record in records:
        if not any(s.get("type") == "classify" for s in record.get("steps") or []):
            continue
        request = record.get("request") or {}
        messages = request.get("messages") or []
        signal = None
        for prepared in detectors:
            matched = detect(prepared, CIMultiDict(request.get("headers") or {}), messages)
            if matched:
                signal = f"current rule {matched}"
                break
        if signal is None:
            text = "\n".join(str(m.get("content")) for m in messages if isinstance(m, dict))
            if not RAG_MARKS.search(text):
                for name, patterns in LOOSE_META:
                    if all(re.search(p, text) for p in patterns):
                        signal = f"looks like {name}"
                        break
        if signal:
            by_signal[signal].append(record["id"])
    return [{"kind": "meta_classified", "title": f"{len(ids)} classified request(s) that look like client meta prompts",
             "detail": f"signal: {signal}" + ("; the current graph would route these to meta" if signal.startswith("current")
                                             else "; consider a detect-meta rule"),
             "sessions": ids} for signal, ids in sorted(by_signal.items())]


def default_findings(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    by_reason: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for record in records:
        if record.get("classification_source") == "default":
            step = next((s for s in record.get("steps") or [] if s.get("type") == "classify"), {})
            by_reason[step.get("reason") or "unknown"].append(record)
    return [{"kind": "classifier_default",
             "title": f"{len(group)} classifier answer(s) mapped to the default ({reason})",
             "detail": "raw answers: " + ", ".join(repr(r.get("classification_raw"))[:60] for r in group[:5]),
             "sessions": [r["id"] for r in group]} for reason, group in sorted(by_reason.items())]


def failure_findings(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    fallbacks: dict[tuple[str, str], list[str]] = defaultdict(list)
    errors: dict[tuple[str, str], list[str]] = defaultdict(list)
    for record in records:
        for fallback in record.get("fallbacks") or []:
            fallbacks[(fallback.get("backend") or fallback["from"], fallback["kind"])].append(record["id"])
        for step in record.get("steps") or []:
            if (step.get("status") in ("error", "fallback") or step.get("error")) and step.get("provider"):
                errors[(step["provider"], step.get("error_kind") or "error")].append(record["id"])
        if record.get("outcome") == "error" and record.get("steps") and record.get("route"):
            errors[(record["route"], "request failed")].append(record["id"])
    out = [{"kind": "fallback", "title": f"{len(ids)} fallback(s) from backend {backend!r} ({kind})",
            "detail": "the request was answered by the fallback route", "sessions": sorted(set(ids))}
           for (backend, kind), ids in sorted(fallbacks.items())]
    out += [{"kind": "backend_error", "title": f"{len(set(ids))} request(s) with errors on {backend!r} ({kind})",
             "detail": "failed steps and failed requests", "sessions": sorted(set(ids))}
            for (backend, kind), ids in sorted(errors.items())]
    return out


def findings(records: list[dict[str, Any]], graph: Graph | None) -> list[dict[str, Any]]:
    """Every model-free finding over `records` (session logs as dicts)."""
    return (latency_findings(records) + enrichment_findings(records, graph) + meta_findings(records, graph)
            + default_findings(records) + failure_findings(records))
