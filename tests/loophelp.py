"""Helpers for the improvement-loop tests: logs made by the engine itself, and edited graph copies."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from engine.graph import Graph, load_graph
from engine.loop import read_logs
from tests.conftest import ROOT, llm_routes_text, session_logs


async def make_logs(client, backends, requests: list[tuple[str | list, str]],
                    headers: dict | None = None) -> list[dict]:
    """Send each (query or messages, classifier answer) through the app; return the session logs."""
    for query, raw in requests:
        backends.classify_as(raw)
        messages = [{"role": "user", "content": query}] if isinstance(query, str) else query
        resp = await client.post("/v1/chat/completions", json={"model": "ai-router", "messages": messages},
                                 headers=headers or {})
        await resp.read()
    return await session_logs(client)


def log_records(client) -> list:
    from engine.state import STATE

    records, problems = read_logs([client.app[STATE].settings.session_log_dir])
    assert not problems
    return records


def project_copy(tmp_path: Path) -> Path:
    """routes.yaml and prompts/ in a fresh folder, to edit without touching the repository."""
    target = tmp_path / "project"
    shutil.copytree(ROOT / "prompts", target / "prompts")
    # The LLM-only classifier: these tests decide routes through the fake classifier backend.
    (target / "routes.yaml").write_text(llm_routes_text())
    return target


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new, 1))


def graph_of(project: Path, env: dict) -> Graph:
    return load_graph(project / "routes.yaml", env, root=project)


def write_cases(path: Path, cases: list[dict]) -> Path:
    path.write_text("".join(json.dumps(case) + "\n" for case in cases))
    return path
