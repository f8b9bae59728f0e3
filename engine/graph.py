"""The route graph: `routes.yaml` loaded, linted and prepared for serving.

`load_graph(path)` is the single way in: it reads the YAML (with positions), runs every
lint check (`engine.lint`), and only when nothing is wrong returns a `Graph` whose nodes
are prepared once (regexes compiled, templates compiled) so that nothing is re-parsed per
request. `engine serve`, `engine lint` and `engine dry-run` all go through here.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Mapping

from engine.errors import ConfigError
from engine.templates import TemplateSet
from engine.yamlsource import Problem, SourceMap, load_yaml

DEFAULT_TIMEOUTS = {"connect": 5.0, "first_token": 120.0, "idle": 120.0, "total": 600.0}
DEFAULT_BREAKER = {"failures": 5, "cooldown": 30.0}


@dataclass(frozen=True)
class Backend:
    """One OpenAI-compatible server, as declared under `backends:`."""

    name: str
    url: str
    model: str
    api_key_env: str | None = None
    key_required: bool = False
    timeouts: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_TIMEOUTS))
    params: Mapping[str, Any] = field(default_factory=dict)
    breaker: Mapping[str, Any] = field(default_factory=lambda: dict(DEFAULT_BREAKER))

    @property
    def chat_url(self) -> str:
        return self.url.rstrip("/") + "/chat/completions"

    def api_key(self, env: Mapping[str, str] | None = None) -> str | None:
        """The key's value, read from the environment at call time; never logged."""
        if not self.api_key_env:
            return None
        return (os.environ if env is None else env).get(self.api_key_env) or None


@dataclass
class Node:
    """One node of the graph: its name, type, declared parameters and prepared state."""

    name: str
    type: str
    params: dict[str, Any]
    prepared: Any = None

    @cached_property
    def edges(self) -> dict[str, str]:
        """Every outgoing edge, by edge name (labels, meta/other, next, fallback).

        Worked out once per node: a graph does not change once loaded (a reload builds a new
        one), and the runner looks an edge up at every step of every request.
        """
        return {key_path[-1] if key_path[0] == "edges" else key_path[0]: target
                for key_path, target in outgoing_edges(self.params)}


def outgoing_edges(spec: dict[str, Any]) -> list[tuple[tuple[str, ...], str]]:
    """(key path inside the node, target) for every outgoing edge of a node spec.

    The one definition of where edges live: `edges` (labels, meta/other), `next`, `fallback.to`.
    Lint walks it for checks on raw specs; the runner through `Node.edges`.
    """
    out: list[tuple[tuple[str, ...], str]] = []
    if isinstance(spec.get("edges"), dict):
        out += [(("edges", str(k)), v) for k, v in spec["edges"].items() if isinstance(v, str)]
    if isinstance(spec.get("next"), str):
        out.append((("next",), spec["next"]))
    fallback = spec.get("fallback")
    if isinstance(fallback, dict) and isinstance(fallback.get("to"), str):
        out.append((("fallback", "to"), fallback["to"]))
    return out


@dataclass
class Graph:
    """A linted, prepared route graph. Immutable once built; reload builds a new one."""

    path: Path
    root: Path
    virtual_model: str
    start: str
    backends: dict[str, Backend]
    nodes: dict[str, Node]
    templates: TemplateSet
    source: SourceMap
    warnings: list[Problem] = field(default_factory=list)

    def routes(self) -> list[str]:
        """Every route name a request can end on (for /stats and the docs)."""
        names = []
        for node in self.nodes.values():
            if node.type == "call-backend" and "capture" not in node.params:
                names.append(node.params.get("route") or node.params["backend"])
        return sorted(set(names))


def read_graph(path: Path, env: Mapping[str, str] | None = None, root: Path | None = None,
               *, prepare: bool = True) -> tuple[Graph | None, list[Problem], list[Problem]]:
    """Load and lint `path`. Returns (graph or None, problems, warnings); never raises on bad input.

    `prepare=False` skips the per-node preparation (compiling, loading the embedding model):
    `engine lint` only needs the checks.
    """
    from engine import lint  # lint imports node modules, which import this module

    env = os.environ if env is None else env
    root = (root or path.resolve().parent).resolve()
    data, smap, problems = load_yaml(path, env, display_name=str(path))
    if data is None:
        return None, problems, []
    templates = TemplateSet(root)
    problems += lint.check(data, smap, templates, env)
    warnings = lint.warnings(data, smap, env)
    if problems:
        return None, problems, warnings
    graph = Graph(
        path=path,
        root=root,
        virtual_model=data["virtual_model"],
        start=data["start"],
        backends={name: _backend(name, spec) for name, spec in data["backends"].items()},
        nodes={name: Node(name, spec["type"], spec) for name, spec in data["nodes"].items()},
        templates=templates,
        source=smap,
        warnings=warnings,
    )
    from engine.nodes import NODES

    if prepare:
        for node in graph.nodes.values():
            node.prepared = NODES[node.type].prepare(node, graph)
    return graph, [], warnings


def load_graph(path: Path, env: Mapping[str, str] | None = None, root: Path | None = None) -> Graph:
    """Like `read_graph`, but raises ConfigError listing every problem."""
    graph, problems, _ = read_graph(path, env, root)
    if graph is None:
        raise ConfigError(problems)
    return graph


def _backend(name: str, spec: dict[str, Any]) -> Backend:
    timeouts = dict(DEFAULT_TIMEOUTS)
    timeouts.update({k: float(v) for k, v in (spec.get("timeouts") or {}).items()})
    return Backend(
        name=name,
        url=spec["url"],
        model=spec["model"],
        api_key_env=spec.get("api_key_env"),
        key_required=bool(spec.get("key_required", False)),
        timeouts=timeouts,
        params=dict(spec.get("params") or {}),
        breaker={**DEFAULT_BREAKER, **(spec.get("breaker") or {})},
    )
