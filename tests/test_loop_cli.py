"""The three loop commands as a user runs them: `engine replay`, `engine eval`, `engine review`."""

from __future__ import annotations

import json

import asyncio

from engine.cli import main
from engine.state import STATE
from tests.conftest import XAI_TEST_KEY
from tests.loophelp import make_logs, project_copy, write_cases


async def run(*argv: str) -> int:
    # The commands call asyncio.run(); the fake backends live on the test's loop, so run them aside.
    return await asyncio.to_thread(main, list(argv))


def llm_routes(tmp_path):
    """The shipped graph with the LLM classifier, beside a copy of prompts/ (the CLI resolves
    templates next to the routes file)."""
    routes = tmp_path / "project" / "routes.yaml"
    return routes if routes.exists() else project_copy(tmp_path) / "routes.yaml"


def use_env(monkeypatch, env):
    for name, value in env.items():
        monkeypatch.setenv(name, value)


async def test_replay_command_prints_the_diff(client, backends, env, monkeypatch, capsys, tmp_path):
    await make_logs(client, backends, [("hi", "SIMPLE"), ("explain DNS", "MODERATE")])
    use_env(monkeypatch, env)
    logs = str(client.app[STATE].settings.session_log_dir)
    assert await run("replay", "--routes", str(llm_routes(tmp_path)), logs) == 0
    out = capsys.readouterr().out
    assert "route changes: 0 of 2" in out and "2 logged answers reused, 0 asked again" in out
    assert await run("replay", "--routes", str(llm_routes(tmp_path)), "--json", logs) == 0
    assert json.loads(capsys.readouterr().out)["changed"] == 0


def test_replay_without_logs_says_so(tmp_path, capsys):
    assert main(["replay", "--routes", str(llm_routes(tmp_path)), str(tmp_path)]) == 2
    assert "no session logs" in capsys.readouterr().err


async def test_eval_command_names_the_split(backends, env, monkeypatch, tmp_path, capsys):
    use_env(monkeypatch, env)
    backends.classify_as("SIMPLE")
    cases = write_cases(tmp_path / "mini-dev.jsonl", [{"query": "hi", "label": "SIMPLE"},
                                                      {"query": "explain DNS", "label": "MODERATE"}])
    assert await run("eval", "--routes", str(llm_routes(tmp_path)), str(cases)) == 0
    out = capsys.readouterr().out
    assert "mini-dev.jsonl" in out and "accuracy: 50.0% (1/2)" in out
    (tmp_path / "broken.jsonl").write_text("{not json\n")
    assert await run("eval", "--routes", str(llm_routes(tmp_path)), str(tmp_path / "broken.jsonl")) == 2


async def test_review_command_writes_reports_without_secrets(client, backends, env, monkeypatch, tmp_path, capsys):
    await make_logs(client, backends, [("hi", "banana")])
    use_env(monkeypatch, env)
    logs = str(client.app[STATE].settings.session_log_dir)
    assert await run("review", "--routes", str(llm_routes(tmp_path)), "--out", str(tmp_path / "rv"), "--no-judge", logs) == 0
    out = capsys.readouterr().out
    assert "classifier_default" in out and "judge: --no-judge" in out
    files = sorted(p.name for p in (tmp_path / "rv").iterdir())
    assert len(files) == 2 and files[0].endswith(".json") and files[1].endswith(".md")
    assert all(XAI_TEST_KEY not in p.read_text() for p in (tmp_path / "rv").iterdir())
