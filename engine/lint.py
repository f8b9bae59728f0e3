"""Every check `engine lint` (and therefore `engine serve`) makes on a route graph.

The checks run in layers and keep going, so one run lists every problem:
  1. the JSON Schema (`schemas/routes.schema.json`, which pulls in `schemas/nodes/<type>.json`):
     unknown keys, unknown node types, wrong types, missing fields;
  2. the graph: edges to missing nodes, backends that do not exist, unreachable nodes, cycles;
  3. each node type's own rules (labels without an edge, bad regexes, ...);
  4. templates: missing prompt files, paths outside the project, syntax errors, and variables
     that no earlier node provides on every path to the node.
Each problem is a `Problem` that prints as `FILE:LINE:COL: dotted.path: message`.
"""

from __future__ import annotations

import difflib
import graphlib
import json
import re
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable, Mapping

import jinja2
import jsonschema
from referencing import Registry, Resource

from engine.graph import outgoing_edges
from engine.templates import TemplateSet
from engine.yamlsource import Problem, SourceMap

SCHEMA_DIR = Path(__file__).resolve().parent.parent / "schemas"

# Variables every template may use; the runner provides them for every request.
BASE_VARIABLES = frozenset({"query", "messages", "history", "now"})


def did_you_mean(word: str, options: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(options), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


@lru_cache(maxsize=1)
def schema_validator() -> jsonschema.protocols.Validator:
    """The routes schema with the node schemas registered, so `$ref: nodes/x.json` resolves."""
    routes_schema = json.loads((SCHEMA_DIR / "routes.schema.json").read_text())
    resources = []
    for path in sorted((SCHEMA_DIR / "nodes").glob("*.json")):
        schema = json.loads(path.read_text())
        resources.append((schema["$id"], Resource.from_contents(schema)))
    registry = Registry().with_resources(resources)
    cls = jsonschema.validators.validator_for(routes_schema)
    return cls(routes_schema, registry=registry)


def check(data: Any, smap: SourceMap, templates: TemplateSet, env: Mapping[str, str]) -> list[Problem]:
    problems = schema_problems(data, smap)
    if not isinstance(data, dict) or not isinstance(data.get("nodes"), dict):
        return problems
    # Graph-level checks work on nodes whose type is known; schema problems are already listed.
    problems += graph_problems(data, smap, templates.root)
    problems += template_problems(data, smap, templates)
    return problems


def warnings(data: Any, smap: SourceMap, env: Mapping[str, str]) -> list[Problem]:
    """Things that are not wrong but a user should know (printed, exit status unaffected)."""
    from engine import similarity_stage

    out = []
    if isinstance(data, dict) and isinstance(data.get("nodes"), dict):
        for name, spec in data["nodes"].items():
            if isinstance(spec, dict) and spec.get("type") == "classify":
                warning = similarity_stage.unavailable_warning(name, spec, smap)
                if warning:
                    out.append(warning)
    if isinstance(data, dict) and isinstance(data.get("backends"), dict):
        for name, spec in data["backends"].items():
            if isinstance(spec, dict) and spec.get("api_key_env") and spec.get("key_required"):
                if not env.get(spec["api_key_env"]):
                    out.append(smap.problem(("backends", name, "api_key_env"),
                                            f"{spec['api_key_env']} is not set: calls to {name!r} "
                                            "fail with no_api_key (its fallbacks take over)"))
    return out


# ---------------------------------------------------------------- 1. schema

def schema_problems(data: Any, smap: SourceMap) -> list[Problem]:
    problems = []
    errors = sorted(schema_validator().iter_errors(data), key=lambda e: list(map(str, e.absolute_path)))
    for error in errors:
        path = tuple(error.absolute_path)
        if error.validator == "additionalProperties" and isinstance(error.instance, dict):
            # One problem per unknown key, pointing at the key itself.
            allowed = list((error.schema.get("properties") or {}).keys())
            for key in error.instance:
                if key not in allowed:
                    problems.append(smap.problem(path + (key,), f"unknown key{did_you_mean(key, allowed)}",
                                                 key=True))
            continue
        problems.append(smap.problem(path, schema_message(error, data), key=bool(path)))
    return problems


def schema_message(error: jsonschema.ValidationError, data: Any) -> str:
    """Turn a jsonschema error into a sentence, with "did you mean" for near-miss names."""
    if error.validator == "enum" and isinstance(error.instance, str):
        hint = did_you_mean(error.instance, [str(v) for v in error.validator_value])
        options = ", ".join(map(str, error.validator_value))
        return f"{error.instance!r} is not one of: {options}{hint}"
    if error.validator == "required":
        return error.message.replace("is a required property", "is required")
    if error.validator == "dependentRequired":
        return error.message
    return error.message


# ---------------------------------------------------------------- 2. graph

def _typed_nodes(data: dict[str, Any]) -> dict[str, dict[str, Any]]:
    from engine.nodes import NODES

    return {name: spec for name, spec in data["nodes"].items()
            if isinstance(spec, dict) and spec.get("type") in NODES}


def graph_problems(data: dict[str, Any], smap: SourceMap, root: Path) -> list[Problem]:
    from engine.nodes import NODES

    problems: list[Problem] = []
    nodes = _typed_nodes(data)
    names = list(data["nodes"])
    backends = data.get("backends") if isinstance(data.get("backends"), dict) else {}

    start = data.get("start")
    if isinstance(start, str) and start not in data["nodes"]:
        problems.append(smap.problem(("start",), f"no node named {start!r}{did_you_mean(start, names)}"))

    successors: dict[str, set[str]] = {name: set() for name in nodes}
    for name, spec in nodes.items():
        for key_path, target in outgoing_edges(spec):
            if target not in data["nodes"]:
                problems.append(smap.problem(("nodes", name) + key_path,
                                             f"edge to missing node {target!r}{did_you_mean(target, names)}"))
            elif target in nodes:
                successors[name].add(target)
        backend = spec.get("backend")
        if isinstance(backend, str) and backend not in backends:
            problems.append(smap.problem(("nodes", name, "backend"),
                                         f"no backend named {backend!r}{did_you_mean(backend, backends)}"))
        problems += NODES[spec["type"]].check(name, spec, data, smap, root)

    # Cycles: a request must always end, so the graph must be acyclic.
    try:
        graphlib.TopologicalSorter(successors).prepare()
    except graphlib.CycleError as exc:
        cycle = exc.args[1]
        problems.append(smap.problem(("nodes", cycle[0]), "cycle: " + " -> ".join(cycle)))

    # Reachability from the start node.
    if isinstance(start, str) and start in nodes:
        seen, todo = set(), [start]
        while todo:
            current = todo.pop()
            if current in seen:
                continue
            seen.add(current)
            todo.extend(successors.get(current, ()))
        for name in nodes:
            if name not in seen:
                problems.append(smap.problem(("nodes", name), f"unreachable: no path from start node {start!r}"))
    return problems


# ---------------------------------------------------------------- 4. templates

def available_variables(data: dict[str, Any]) -> dict[str, set[str]]:
    """For each node, the variables guaranteed set on *every* path that reaches it."""
    from engine.nodes import NODES

    nodes = _typed_nodes(data)
    preds: dict[str, set[str]] = {name: set() for name in nodes}
    for name, spec in nodes.items():
        for _, target in outgoing_edges(spec):
            if target in preds:
                preds[target].add(name)
    try:
        order = list(graphlib.TopologicalSorter(preds).static_order())
    except graphlib.CycleError:
        return {name: set(BASE_VARIABLES) for name in nodes}
    available: dict[str, set[str]] = {}
    for name in order:
        incoming = [available[p] | NODES[nodes[p]["type"]].provides(nodes[p]) for p in preds[name]]
        available[name] = set.intersection(*incoming) if incoming else set(BASE_VARIABLES)
    return available


def template_problems(data: dict[str, Any], smap: SourceMap, templates: TemplateSet) -> list[Problem]:
    from engine.nodes import NODES

    problems: list[Problem] = []
    available = available_variables(data)
    for name, spec in _typed_nodes(data).items():
        module = NODES[spec["type"]]
        for key_path, relpath in module.templates(spec):
            where = ("nodes", name) + key_path
            message = templates.check_path(relpath)
            if message:
                problems.append(smap.problem(where, message))
                continue
            try:
                used = templates.variables(relpath)
            except jinja2.TemplateSyntaxError as exc:
                problems.append(smap.problem(where, f"{relpath}:{exc.lineno}: template syntax: {exc.message}"))
                continue
            known = available.get(name, set(BASE_VARIABLES)) | module.template_variables(spec)
            for var in sorted(used - known):
                problems.append(smap.problem(where, f"{relpath} uses variable {var!r}, which no earlier "
                                                    f"node provides on every path here{did_you_mean(var, known)}"))
    return problems


def regex_problems(patterns: Any, where: tuple, smap: SourceMap) -> list[Problem]:
    out = []
    for i, pattern in enumerate(patterns or []):
        if not isinstance(pattern, str):
            continue
        try:
            re.compile(pattern)
        except re.error as exc:
            out.append(smap.problem(where + (i,), f"invalid regular expression: {exc}"))
    return out
