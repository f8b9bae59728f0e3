"""The embedded default: a real local model server in front of which the engine runs.

`engine serve --embedded` (what `make run` does when no ROUTER_URL / PRIMARY_URL is set)
starts llama.cpp's server with Gemma 3 270M (engine.localmodel), waits until it answers,
points the `router` and `primary` backends at it, and classifies by similarity alone
(a 270M base model cannot follow a routing prompt; see docs/similarity.md). Without
XAI_API_KEY the cloud routes fall back to `primary` as routes.yaml declares, visibly.
On exit (Ctrl-C, SIGTERM) the model server is stopped too.
"""

from __future__ import annotations

import os
from pathlib import Path

from engine.localmodel import DEFAULT_ALIAS, LlamaServer, LocalModelError, model_path

DEFAULT_PORT = 8081


def start(log_dir: Path) -> tuple[LlamaServer, dict[str, str]]:
    """Start the local model server; return it and the environment the graph should read.

    Raises LocalModelError with a one-line reason (not installed, port in use, model failed
    to load, server died).
    """
    port = int(os.environ.get("ENGINE_LOCAL_PORT", DEFAULT_PORT))
    print(f"engine: starting the local model server (llama.cpp, Gemma 3 270M) on port {port} ...", flush=True)
    server = LlamaServer(model_path(), port=port, log_path=log_dir / f"llama-server-{port}.log")
    server.start_sync(timeout=float(os.environ.get("ENGINE_LOCAL_TIMEOUT", 180)))
    env = {
        "ROUTER_URL": server.url, "PRIMARY_URL": server.url,
        "ROUTER_MODEL": DEFAULT_ALIAS, "PRIMARY_MODEL": DEFAULT_ALIAS,
        # Similarity alone: the base model's answers to a routing prompt are not labels.
        "CLASSIFY_METHOD": os.environ.get("CLASSIFY_METHOD") or "similarity",
    }
    print(f"engine: local model server ready at {server.url} (log: {server.log_path})", flush=True)
    return server, env


__all__ = ["DEFAULT_PORT", "LocalModelError", "start"]
