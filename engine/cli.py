"""The `engine` command. Each subcommand lives in its own module under `engine/commands/`
and is listed in `COMMANDS`; that module's `add_arguments(parser)` declares its flags and
`run(args, settings) -> exit code` does the work.

    engine serve   [--host H] [--port P] [--routes FILE]
    engine lint    [FILE]
    engine dry-run [--routes FILE] [--label LABEL] [--messages-file FILE] [--json] [QUERY]
    engine replay  [--routes FILE] [--json] [LOGS...]
    engine eval    [--routes FILE] [--json] CASES.jsonl
    engine review  [--routes FILE] [--propose] [--apply ID] [--judge/--no-judge] [LOGS...]
"""

from __future__ import annotations

import argparse
import importlib

from engine.settings import Settings

# name -> (module under engine.commands, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "serve": ("serve", "run the HTTP server"),
    "lint": ("lint", "check a route graph and its prompt files"),
    "dry-run": ("dry_run", "trace a request through the graph without answering it"),
    "replay": ("replay", "re-run logged requests through a graph and diff the routing decisions"),
    "eval": ("eval", "score a graph's routing on labelled cases"),
    "review": ("review", "find poor routing and weak answers in the logs; propose and apply prompt changes"),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="engine",
                                     description="An OpenAI-compatible LLM router whose routes are data.")
    sub = parser.add_subparsers(dest="command", required=True)
    modules = {}
    for name, (module_name, help_text) in COMMANDS.items():
        module = importlib.import_module(f"engine.commands.{module_name}")
        module.add_arguments(sub.add_parser(name, help=help_text, description=module.__doc__))
        modules[name] = module
    args = parser.parse_args(argv)
    return modules[args.command].run(args, Settings.from_env())
