"""`engine lint`: every check, each with a broken fixture under tests/fixtures/graphs/."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from engine.cli import main
from engine.graph import read_graph
from tests.conftest import ROOT

GRAPHS = ROOT / "tests" / "fixtures" / "graphs"
LINE = re.compile(r"^(?P<file>[^:]+):(?P<line>\d+):(?P<col>\d+): (?P<path>[^:]*): (?P<message>.+)$")


def lint(name: str, env: dict | None = None) -> list[str]:
    graph, problems, _ = read_graph(GRAPHS / name, env or {})
    assert (graph is None) == bool(problems)
    return [str(p) for p in problems]


def test_shipped_routes_yaml_lints_clean():
    graph, problems, _ = read_graph(ROOT / "routes.yaml", {})
    assert problems == []
    assert graph.routes() == ["enrich", "meta", "primary", "router", "xai"]


def test_valid_fixture_is_clean():
    assert lint("valid.yaml") == []


@pytest.mark.parametrize("fixture,expected", [
    ("unknown-key.yaml", ["unknown-key.yaml:11:5: nodes.classify.sytem: unknown key (did you mean 'system'?)"]),
    ("unknown-type.yaml", ["nodes.answer-a.type: 'call-backnd' is not one of: detect-meta, classify, "
                           "call-backend, inject-context (did you mean 'call-backend'?)"]),
    ("missing-node.yaml", ["missing-node.yaml:15:16: nodes.classify.edges.A: edge to missing node 'answer-aa' "
                           "(did you mean 'answer-a'?)"]),
    ("fallback-to-missing.yaml", ["fallback-to-missing.yaml:16:65: nodes.answer-a.fallback.to: edge to missing node "
                                  "'answer-bb' (did you mean 'answer-b'?)"]),
    ("unknown-backend.yaml", ["nodes.answer-a.backend: no backend named 'locl' (did you mean 'local'?)"]),
    ("unreachable.yaml", ["unreachable.yaml:20:11: nodes.orphan: unreachable: no path from start node 'classify'"]),
    ("cycle.yaml", ["nodes.fetch: cycle: fetch -> inject -> fetch"]),
    ("label-without-edge.yaml", ["nodes.classify.labels: label 'C' has no edge"]),
    ("missing-prompt.yaml", ["nodes.classify.request: prompt file 'prompts/nope.md' does not exist"]),
    ("outside-project.yaml", ["nodes.classify.request: '../../../../etc/passwd' points outside the project"]),
    ("unknown-variable.yaml", ["nodes.classify.request: prompts/uses-unknown.md uses variable 'undefined_thing', "
                               "which no earlier node provides"]),
    ("variable-too-early.yaml", ["nodes.inject.template: prompts/inject.md uses variable 'context'"]),
    ("missing-env.yaml", ["missing-env.yaml:6:16: backends.cloud.url: environment variable CLOUD_URL_UNSET_FOR_TEST "
                          "is not set and has no default"]),
    ("bad-template.yaml", ["nodes.classify.request: prompts/bad-syntax.md:1: template syntax:"]),
    ("bad-regex.yaml", ["nodes.meta.rules[0].all[0]: invalid regular expression"]),
    ("yaml-syntax.yaml", ["yaml-syntax.yaml:4:1: YAML syntax:"]),
])
def test_each_check_reports_file_line_col_path_and_message(fixture, expected):
    problems = lint(fixture)
    assert problems, f"{fixture} should not lint clean"
    for line in problems:
        assert LINE.match(line), line
    for want in expected:
        assert any(want in p for p in problems), f"{want!r} not in {problems}"


def test_env_var_with_value_is_clean():
    assert lint("missing-env.yaml", {"CLOUD_URL_UNSET_FOR_TEST": "http://127.0.0.1:1/v1"}) == []


def test_every_problem_is_listed_not_just_the_first(tmp_path):
    text = (GRAPHS / "valid.yaml").read_text()
    text = text.replace("backend: locl", "").replace("labels: [A, B]", "labels: [A, B, C]")
    text = text.replace("  answer-a: {type: call-backend, backend: local}", "  answer-a: {type: call-backend, backend: lcal, tempalte: x}")
    path = GRAPHS / "_tmp_many.yaml"
    path.write_text(text)
    try:
        problems = lint(path.name)
    finally:
        path.unlink()
    assert len(problems) >= 3
    assert any("label 'C' has no edge" in p for p in problems)
    assert any("tempalte" in p for p in problems)
    assert any("no backend named 'lcal'" in p for p in problems)


def test_cli_exit_codes(capsys):
    assert main(["lint", str(GRAPHS / "valid.yaml")]) == 0
    assert main(["lint", str(GRAPHS / "cycle.yaml")]) == 1
    out = capsys.readouterr().out
    assert "cycle: fetch -> inject -> fetch" in out


def test_python_dash_m_engine_works():
    result = subprocess.run([sys.executable, "-m", "engine", "lint", str(ROOT / "routes.yaml")],
                            capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert "ok" in result.stdout


def test_serve_refuses_a_graph_that_does_not_lint(capsys):
    assert main(["serve", "--routes", str(GRAPHS / "missing-node.yaml"), "--port", "1"]) == 1
    err = capsys.readouterr().err
    assert "edge to missing node 'answer-aa'" in err and "not starting" in err


def test_node_registry_schemas_and_type_enum_agree():
    import json

    from engine.nodes import NODES

    schema_files = {p.stem for p in (ROOT / "schemas" / "nodes").glob("*.json")}
    routes_schema = json.loads((ROOT / "schemas" / "routes.schema.json").read_text())
    enum = set(routes_schema["$defs"]["node"]["properties"]["type"]["enum"])
    assert set(NODES) == schema_files == enum
    for node_type in NODES:
        schema = json.loads((ROOT / "schemas" / "nodes" / f"{node_type}.json").read_text())
        assert schema["additionalProperties"] is False and schema["properties"]["type"] == {"const": node_type}
