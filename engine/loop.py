"""Shared pieces of the improvement loop (`engine replay`, `engine eval`, `engine review`).

- reading session logs from files and folders (`read_logs`), and telling which ones hold a
  request that can be run again (`replayable`);
- the `review:` section of routes.yaml (`review_config`): judge backend, sample size and the
  route strength order that separates under-routing from over-routing;
- what route a label or a node leads to (`label_routes`, `route_from`), and what route a
  trace *decided* on (`decided_route`): the answering node the decision pointed at, before
  any fallback. A fallback is an outage, not a routing decision, so the loop compares decisions.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable

import yaml

from engine.graph import Graph

DEFAULT_STRENGTH = {"router": 0, "primary": 1, "meta": 1, "enrich": 2, "xai": 3}
DEFAULT_SAMPLE = 20


def read_logs(paths: Iterable[Path]) -> tuple[list[tuple[Path, dict[str, Any]]], list[str]]:
    """Every session log under `paths` (files or folders), oldest first, and what could not be read."""
    files: list[Path] = []
    problems: list[str] = []
    for path in paths:
        if path.is_dir():
            files += sorted(p for p in path.glob("*.json") if not p.name.startswith("."))
        elif path.is_file():
            files.append(path)
        else:
            problems.append(f"{path}: no such file or folder")
    records = []
    for path in files:
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            problems.append(f"{path}: not a readable session log ({exc})")
            continue
        if not isinstance(record, dict) or "id" not in record or "steps" not in record:
            problems.append(f"{path}: not a session log (no id/steps)")
            continue
        records.append((path, record))
    records.sort(key=lambda item: (item[1].get("timestamp") or "", item[1]["id"]))
    return records, problems


def replayable(record: dict[str, Any]) -> str | None:
    """None if the logged request can run again; else why not (bad input never reached routing)."""
    request = record.get("request") or {}
    messages = request.get("messages")
    if not isinstance(messages, list) or not messages:
        return "bad input (no messages)"
    if record.get("outcome") == "error" and not record.get("steps"):
        return "bad input (rejected before routing)"
    return None


def review_config(graph: Graph) -> dict[str, Any]:
    """The graph file's `review:` section with defaults filled in."""
    try:
        data = yaml.safe_load(Path(graph.path).read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError):
        data = {}
    section = data.get("review") if isinstance(data, dict) else None
    section = section if isinstance(section, dict) else {}
    strength = dict(DEFAULT_STRENGTH)
    strength.update(section.get("route_strength") or {})
    return {"judge": section.get("judge"), "sample": int(section.get("sample", DEFAULT_SAMPLE)),
            "route_strength": strength}


def route_from(graph: Graph, name: str | None) -> str | None:
    """The route of the answering node reached from node `name` along `next` edges."""
    seen = set()
    while name in graph.nodes and name not in seen:
        seen.add(name)
        node = graph.nodes[name]
        if node.type == "call-backend" and "capture" not in node.params:
            return node.params.get("route") or node.params["backend"]
        if node.type in ("call-backend", "inject-context"):
            name = node.params.get("next")
            continue
        return None
    return None


def label_routes(graph: Graph) -> dict[str, str]:
    """Label (and meta edge) -> the route it leads to in `graph`."""
    out: dict[str, str] = {}
    for node in graph.nodes.values():
        edges = node.params.get("edges") if isinstance(node.params.get("edges"), dict) else {}
        if node.type == "classify":
            for label in node.params["labels"]:
                route = route_from(graph, edges.get(label))
                if route:
                    out.setdefault(label, route)
        elif node.type == "detect-meta":
            route = route_from(graph, edges.get("meta"))
            if route:
                out.setdefault("meta", route)
    return out


def decided_route(graph: Graph, steps: list[dict[str, Any]], route: str | None) -> str | None:
    """The route a trace decided on: `route`, unless a fallback moved it; then the node that failed."""
    for step in steps:
        if step.get("status") == "fallback":
            return route_from(graph, step.get("node")) or route
    return route


def last_user_text(messages: list[dict[str, Any]]) -> str:
    from engine.context import text_of

    for message in reversed(messages or []):
        if isinstance(message, dict) and message.get("role") == "user":
            return text_of(message.get("content"))
    return ""
