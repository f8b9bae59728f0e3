"""A fake OpenAI-compatible backend for the soak run (bench/soak.py), with faults on demand.

Run as its own process: `python bench/soak_backend.py --port 0` prints `ready <port>` once it
listens. The soak points all three of the engine's backends (router, primary, xai) at it.

What it answers is decided by markers in the request's text, so the soak driver can ask for
a behaviour per request without any shared state:

  `label:NAME`   the classifier call (its system prompt says "request classifier") answers
                 NAME; without a marker it answers SIMPLE. Classifier calls never fault.
  `fault:500`    every other call answers HTTP 500 with an OpenAI error body.
  `fault:once#N` the first call for request N answers 500, later ones (the engine's
                 retries) succeed.
  `fault:cut`    streamed: two content chunks, then the connection is dropped (no finish,
                 no [DONE]); not streamed: the connection is dropped before the headers.
  `fault:slow`   the first byte waits `--slow-ms`, and stream chunks are `--slow-ms` / 4 apart.

Without a fault marker it answers a short completion, streamed (by word) when asked to.
`GET /v1/models` answers a one-model list (the engine's /health probes it).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re

from aiohttp import web

LABEL = re.compile(r"label:([A-Z]+)")
FAULT = re.compile(r"fault:(500|cut|slow|once#\d+)")
ANSWER_WORDS = "The soak backend answers with a dozen short words , then it stops .".split(" ")
USAGE = {"prompt_tokens": 20, "completion_tokens": 12, "total_tokens": 32}


def request_text(body: dict) -> str:
    """Every text the request carries, in one string (markers may sit in any message)."""
    parts = []
    for message in body.get("messages") or ():
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, str):
            parts.append(content)
        elif isinstance(content, list):
            parts.extend(p.get("text", "") for p in content if isinstance(p, dict))
    return "\n".join(parts)


def is_classifier(body: dict) -> bool:
    messages = body.get("messages") or [{}]
    first = messages[0] if isinstance(messages[0], dict) else {}
    return first.get("role") == "system" and "request classifier" in str(first.get("content", ""))


def completion(model: str, content: str) -> dict:
    return {"id": "chatcmpl-soak", "object": "chat.completion", "created": 0, "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content},
                         "finish_reason": "stop"}],
            "usage": USAGE}


def chunk(model: str, delta: dict, finish: str | None = None) -> bytes:
    event = {"id": "chatcmpl-soak", "object": "chat.completion.chunk", "created": 0, "model": model,
             "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
    return b"data: " + json.dumps(event, separators=(",", ":")).encode() + b"\n\n"


class SoakBackend:
    def __init__(self, slow_ms: float):
        self.slow = slow_ms / 1000
        self.failed_once: set[str] = set()
        self.app = web.Application()
        self.app.router.add_post("/v1/chat/completions", self.chat)
        self.app.router.add_get("/v1/models", self.models)

    async def models(self, request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": "soak-model", "object": "model"}]})

    async def chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        model = str(body.get("model"))
        text = request_text(body)
        if is_classifier(body):
            label = LABEL.search(text)
            return web.json_response(completion(model, label.group(1) if label else "SIMPLE"))
        fault = FAULT.search(text)
        fault = fault.group(1) if fault else None
        if fault and fault.startswith("once#"):
            if fault in self.failed_once:
                self.failed_once.discard(fault)
                fault = None
            else:
                self.failed_once.add(fault)
                fault = "500"
        if fault == "500":
            return web.json_response({"error": {"message": "soak: injected failure", "type": "server_error"}},
                                     status=500)
        if fault == "slow":
            await asyncio.sleep(self.slow)
        if not body.get("stream"):
            if fault == "cut":
                request.transport.close()  # the server dies before answering
                return web.Response()
            return web.json_response(completion(model, " ".join(ANSWER_WORDS)))
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        for i, word in enumerate(ANSWER_WORDS):
            if fault == "cut" and i == 2:
                # Let the engine read what was sent first, as when a real server dies mid-answer
                # (a reset arriving with unread data would discard it in the reader).
                await asyncio.sleep(0.05)
                request.transport.close()
                return response
            await response.write(chunk(model, {"content": word + " "}))
            if fault == "slow":
                await asyncio.sleep(self.slow / 4)
        await response.write(chunk(model, {}, "stop"))
        if (body.get("stream_options") or {}).get("include_usage"):
            event = {"id": "chatcmpl-soak", "object": "chat.completion.chunk", "created": 0, "model": model,
                     "choices": [], "usage": USAGE}
            await response.write(b"data: " + json.dumps(event).encode() + b"\n\n")
        await response.write(b"data: [DONE]\n\n")
        return response


async def serve(port: int, slow_ms: float) -> None:
    runner = web.AppRunner(SoakBackend(slow_ms).app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port, backlog=1024)
    await site.start()
    print(f"ready {runner.addresses[0][1]}", flush=True)
    await asyncio.Event().wait()  # until the soak driver terminates this process


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port (printed)")
    parser.add_argument("--slow-ms", type=float, default=200, help="delay of the `fault:slow` first byte")
    args = parser.parse_args()
    try:
        asyncio.run(serve(args.port, args.slow_ms))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
