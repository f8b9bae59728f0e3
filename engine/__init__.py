"""The engine: a self-hosted, OpenAI-compatible LLM router whose routes are data.

A request travels: socket -> `views.chat_completions` -> `runner.run_graph` over the
graph loaded from `routes.yaml` (`graph.load_graph`) -> node executors in `nodes/` ->
`backends.BackendClient` -> the client -> `sessionlog.SessionLogWriter`.
"""

__version__ = "0.1.0"
