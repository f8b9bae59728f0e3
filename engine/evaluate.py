"""`engine eval`: how well a graph routes a set of labelled cases.

Each case runs through the real graph with `dry_run=True`: meta detection runs, the
classifier is asked for real, no answering backend is called. The decided route (before
any fallback, see `engine.loop.decided_route`) is compared with the expected one: a case's
`route`, or the route its `label` leads to in the graph under evaluation.

`score()` is pure (results in, numbers out), so the numbers can be checked by hand:
accuracy; per route precision, recall and support; the confusion matrix; under-routing
(decided weaker than expected: a quality risk) and over-routing (stronger or costlier: a
cost risk), told apart by `review.route_strength`; lateral misses (other route, same
strength); the classifier's invalid-output and timeout rates over the classified cases; and
classification latency p50/p95.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any


from engine.dryrun import trace_request
from engine.graph import Graph, Node
from engine.loop import decided_route, label_routes, review_config
from engine.upstream import Client


class CaseError(ValueError):
    """A cases file that cannot be evaluated; the message names file and line."""


def load_cases(path: Path) -> list[dict[str, Any]]:
    cases = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise CaseError(f"{path}: cannot read: {exc.strerror or exc}") from None
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            case = json.loads(line)
        except ValueError as exc:
            raise CaseError(f"{path}:{number}: not JSON: {exc}") from None
        if not isinstance(case, dict) or not (("query" in case) ^ ("messages" in case)) \
                or not (("label" in case) ^ ("route" in case)):
            raise CaseError(f"{path}:{number}: a case needs one of query/messages and one of label/route")
        case["line"] = number
        cases.append(case)
    return cases


def expected_route(case: dict[str, Any], routes_by_label: dict[str, str], routes: set[str]) -> str:
    if "route" in case:
        return case["route"]
    label = case["label"]
    if label in routes_by_label:
        return routes_by_label[label]
    if label in routes:
        return label
    raise CaseError(f"line {case['line']}: label {label!r} leads nowhere in this graph "
                    f"(labels: {', '.join(sorted(routes_by_label))})")


async def run_case(graph: Graph, case: dict[str, Any], upstream) -> dict[str, Any]:
    messages = case.get("messages") or [{"role": "user", "content": case.get("query", "")}]
    ctx, _ = await trace_request(graph, {"messages": messages}, upstream=upstream)
    steps = [step.as_dict() for step in ctx.trace]
    classify = next((s for s in steps if s["type"] == "classify"), None)
    classification = ctx.classification or {}
    reason = classification.get("reason") or ""
    return {"route": decided_route(graph, steps, ctx.route), "classified": classify is not None,
            "llm_asked": bool(classify and classify.get("provider")),
            "label": classification.get("label"), "raw": classification.get("raw"),
            "ms": classification.get("ms") if classify else None,
            "invalid": "names no declared label" in reason,
            "timeout": "timed out" in reason or (classify or {}).get("error_kind") == "timeout"}


async def evaluate(graph: Graph, cases: list[dict[str, Any]], name: str) -> dict[str, Any]:
    """Run every case through `graph` and score the results."""
    routes_by_label = label_routes(graph)
    expected = [expected_route(case, routes_by_label, set(graph.routes())) for case in cases]
    results = []
    async with Client() as client:
        for case, want in zip(cases, expected):
            result = await run_case(graph, case, client)
            result.update(expected=want, line=case["line"], query=_query_of(case))
            results.append(result)
    report = score(results, review_config(graph)["route_strength"])
    report.update(cases=name, graph=str(graph.path), results=results)
    return report


def _query_of(case: dict[str, Any]) -> str:
    if "query" in case:
        return case["query"]
    users = [m.get("content") for m in case["messages"] if m.get("role") == "user"]
    return str(users[-1] if users else case["messages"][-1].get("content"))[:200]


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def score(results: list[dict[str, Any]], strength: dict[str, float]) -> dict[str, Any]:
    """Numbers from results [{expected, route, classified, ms, invalid, timeout, line, query}]."""
    confusion: dict[str, Counter[str]] = defaultdict(Counter)
    under, over, lateral = [], [], []
    for r in results:
        confusion[r["expected"]][str(r["route"])] += 1
        if r["route"] == r["expected"]:
            continue
        miss = {"line": r.get("line"), "query": r.get("query"), "expected": r["expected"], "route": r["route"]}
        want, got = strength.get(r["expected"], 1), strength.get(str(r["route"]), 1)
        (under if got < want else over if got > want else lateral).append(miss)
    routes = sorted(set(confusion) | {str(r["route"]) for r in results})
    per_route = {}
    for route in routes:
        support = sum(confusion[route].values())
        predicted = sum(row.get(route, 0) for row in confusion.values())
        hits = confusion[route].get(route, 0)
        per_route[route] = {"support": support, "predicted": predicted,
                            "precision": round(hits / predicted, 4) if predicted else None,
                            "recall": round(hits / support, 4) if support else None}
    classified = [r for r in results if r.get("classified")]
    latencies = [r["ms"] for r in classified if r.get("ms") is not None]
    correct = sum(r["route"] == r["expected"] for r in results)
    return {
        "total": len(results), "correct": correct,
        "accuracy": round(correct / len(results), 4) if results else None,
        "per_route": per_route,
        "confusion": {want: dict(row) for want, row in sorted(confusion.items())},
        "under_routing": under, "over_routing": over, "lateral": lateral,
        "classified": len(classified),
        "invalid_rate": round(sum(r["invalid"] for r in classified) / len(classified), 4) if classified else None,
        "timeout_rate": round(sum(r["timeout"] for r in classified) / len(classified), 4) if classified else None,
        "latency_ms": {"p50": percentile(latencies, 50), "p95": percentile(latencies, 95)},
        "llm_share": round(sum(bool(r.get("llm_asked")) for r in classified) / len(classified), 4)
        if classified else None,
    }


METHODS = ("llm", "similarity", "cascade")


def with_method(graph: Graph, method: str) -> Graph | None:
    """`graph` with every classify node switched to `method`; None if a node cannot run it
    (no `similarity` block for similarity/cascade, no backend for llm)."""
    from engine.nodes import NODES

    nodes = {}
    for name, node in graph.nodes.items():
        if node.type != "classify":
            nodes[name] = node
            continue
        params = {**node.params, "method": method}
        if method != "llm" and "similarity" not in params or method != "similarity" and "backend" not in params:
            return None
        nodes[name] = Node(name, node.type, params)
    changed = dataclasses.replace(graph, nodes=nodes)
    for node in nodes.values():
        if node.type == "classify":
            node.prepared = NODES["classify"].prepare(node, changed)
    return changed


async def compare_methods(graph: Graph, cases: list[dict[str, Any]], name: str,
                          methods=METHODS) -> dict[str, Any]:
    """Evaluate the same cases with each classify method; {method: report or None}."""
    reports = {}
    for method in methods:
        variant = with_method(graph, method)
        reports[method] = await evaluate(variant, cases, name) if variant is not None else None
    return {"cases": name, "graph": str(graph.path), "methods": reports}


def format_comparison(comparison: dict[str, Any]) -> str:
    reports = {m: r for m, r in comparison["methods"].items() if r is not None}
    routes = sorted({route for r in reports.values() for route in r["per_route"]})
    head = f"{'method':<11}{'accuracy':>9}" + "".join(f"{'R ' + r:>10}" for r in routes)
    head += f"{'under':>7}{'over':>6}{'p50 ms':>8}{'p95 ms':>8}{'LLM asked':>10}"
    lines = [f"cases: {comparison['cases']}   graph: {comparison['graph']}   (R = recall per route)", head]
    for method, r in reports.items():
        row = f"{method:<11}{_pct(r['accuracy']):>9}"
        row += "".join(f"{_pct((r['per_route'].get(route) or {}).get('recall')):>10}" for route in routes)
        lat = r["latency_ms"]
        row += (f"{len(r['under_routing']):>7}{len(r['over_routing']):>6}{_fmt(lat['p50']):>8}{_fmt(lat['p95']):>8}"
                f"{_pct(r['llm_share']):>10}")
        lines.append(row)
    for method, r in comparison["methods"].items():
        if r is None:
            lines.append(f"{method:<11}(not available for this graph)")
    return "\n".join(lines)


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.1f}%"


def format_report(report: dict[str, Any]) -> str:
    from engine.replay import format_matrix

    lines = [f"cases: {report['cases']} ({report['total']})   graph: {report['graph']}",
             f"accuracy: {_pct(report['accuracy'])} ({report['correct']}/{report['total']})", "",
             f"{'route':<10}{'precision':>10}{'recall':>8}{'support':>9}"]
    for route, m in report["per_route"].items():
        lines.append(f"{route:<10}{_pct(m['precision']):>10}{_pct(m['recall']):>8}{m['support']:>9}")
    lines += ["", "confusion (expected \\ decided):"]
    lines += ["  " + line for line in format_matrix(report["confusion"], corner="expected")]
    lines += ["", f"under-routing (quality risk): {len(report['under_routing'])}   "
              f"over-routing (cost risk): {len(report['over_routing'])}   lateral: {len(report['lateral'])}"]
    for kind in ("under_routing", "over_routing", "lateral"):
        for miss in report[kind]:
            lines.append(f"  {kind.split('_')[0]:<8} line {miss['line']}: {miss['expected']} -> {miss['route']}"
                         f"  {str(miss['query'])[:70]!r}")
    lat = report["latency_ms"]
    lines += ["", f"classifier ({report['classified']} cases classified): invalid output {_pct(report['invalid_rate'])}, "
              f"timeouts {_pct(report['timeout_rate'])}, latency p50 {lat['p50']} ms, p95 {lat['p95']} ms, "
              f"LLM asked for {_pct(report['llm_share'])}"]
    return "\n".join(lines)
