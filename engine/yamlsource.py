"""Read a YAML file into plain Python data, remembering where every value came from.

`engine lint` reports problems as `FILE:LINE:COL: dotted.path: message`. PyYAML's
`compose()` keeps a start mark on every node; we walk that node tree once, build the
plain dicts/lists the rest of the engine uses, and keep a `{path tuple: (line, col)}`
map beside them. jsonschema's `ValidationError.absolute_path` is such a tuple, so a
schema error maps straight back onto the line it is about.

`${VAR}` and `${VAR:-default}` inside string values are replaced from the environment
here, so every later stage sees final values; a variable with neither a value nor a
default is a problem at that value's position.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import yaml
from yaml.constructor import SafeConstructor

Path_ = tuple[str | int, ...]

ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?-)([^}]*))?\}")


@dataclass(frozen=True)
class Problem:
    """One lint finding. `str()` gives the `FILE:LINE:COL: path: message` line."""

    file: str
    line: int
    col: int
    path: str
    message: str

    def __str__(self) -> str:
        where = f"{self.path}: " if self.path else ""
        return f"{self.file}:{self.line}:{self.col}: {where}{self.message}"

    def as_dict(self) -> dict[str, Any]:
        return {"file": self.file, "line": self.line, "col": self.col, "path": self.path,
                "message": self.message}


def dotted(path: Path_) -> str:
    """('nodes', 'enrich', 'messages', 0) -> 'nodes.enrich.messages[0]'."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


class SourceMap:
    """Positions of values in one file; `where(path)` falls back to the nearest parent."""

    def __init__(self, file: str):
        self.file = file
        self.marks: dict[Path_, tuple[int, int]] = {}
        self.key_marks: dict[Path_, tuple[int, int]] = {}

    def where(self, path: Path_, *, key: bool = False) -> tuple[int, int]:
        path = tuple(path)
        if key and path in self.key_marks:
            return self.key_marks[path]
        while path:
            if path in self.marks:
                return self.marks[path]
            path = path[:-1]
        return self.marks.get((), (1, 1))

    def problem(self, path: Path_, message: str, *, key: bool = False) -> Problem:
        line, col = self.where(path, key=key)
        return Problem(self.file, line, col, dotted(path), message)


def load_yaml(path: Path, env: Mapping[str, str] | None = None,
              display_name: str | None = None) -> tuple[Any, SourceMap, list[Problem]]:
    """Parse `path`; return (data, source map, problems). Never raises on bad YAML."""
    env = os.environ if env is None else env
    name = display_name or str(path)
    smap = SourceMap(name)
    problems: list[Problem] = []
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        return None, smap, [Problem(name, 1, 1, "", f"cannot read file: {exc.strerror or exc}")]
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        return None, smap, [Problem(name, line, col, "", f"YAML syntax: {exc.problem or exc}")]
    if root is None:
        return None, smap, [Problem(name, 1, 1, "", "file is empty")]
    constructor = SafeConstructor()

    def walk(node: yaml.Node, path: Path_) -> Any:
        smap.marks[path] = (node.start_mark.line + 1, node.start_mark.column + 1)
        if isinstance(node, yaml.MappingNode):
            out: dict[str, Any] = {}
            merged: dict[str, Any] = {}
            for key_node, value_node in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    # `<<: *anchor` (or a list of anchors): defaults that explicit keys override.
                    sources = value_node.value if isinstance(value_node, yaml.SequenceNode) else [value_node]
                    for source in sources:
                        value = walk(source, path)
                        if isinstance(value, dict):
                            merged = {**value, **merged}
                    continue
                key = str(constructor.construct_object(key_node))
                child = path + (key,)
                if key in out:
                    problems.append(Problem(name, key_node.start_mark.line + 1,
                                            key_node.start_mark.column + 1, dotted(child),
                                            "duplicate key (the later one would silently win)"))
                smap.key_marks[child] = (key_node.start_mark.line + 1, key_node.start_mark.column + 1)
                out[key] = walk(value_node, child)
            return {**merged, **out}
        if isinstance(node, yaml.SequenceNode):
            return [walk(item, path + (i,)) for i, item in enumerate(node.value)]
        value = constructor.construct_object(node)
        if isinstance(value, str) and "${" in value:
            value = substitute_env(value, env, lambda msg: problems.append(smap.problem(path, msg)))
        return value

    try:
        return walk(root, ()), smap, problems
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        return None, smap, problems + [Problem(name, line, col, "", f"YAML: {exc.problem or exc}")]


def substitute_env(value: str, env: Mapping[str, str], report) -> str:
    """Replace `${VAR}` / `${VAR:-default}` / `${VAR-default}` in one string."""

    def replace(match: re.Match[str]) -> str:
        var, op, default = match.group(1), match.group(2), match.group(3)
        current = env.get(var)
        if op == ":-" and not current:
            return default or ""
        if op == "-" and current is None:
            return default or ""
        if current is None:
            report(f"environment variable {var} is not set and has no default "
                   f"(set it, or write ${{{var}:-default}})")
            return ""
        return current

    return ENV_REF.sub(replace, value)
