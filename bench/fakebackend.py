"""A fake OpenAI-compatible backend that answers at once: the floor every target is measured against.

Run as its own process (`python bench/fakebackend.py --port 0`); it prints `ready <port>`
when it listens. It must never be the bottleneck, so it is a raw asyncio protocol (uvloop
when installed) with every response prepared as bytes at start-up: no HTTP framework, no
JSON encoding per request.

  POST /v1/chat/completions  non-streamed: one fixed chat completion (Content-Length).
                             A request whose body mentions "request classifier" (the
                             shipped graph's classifier prompt) gets `--label` as content.
                             `"stream": true`: `--chunks` SSE chunks, `--gap-ms` apart
                             (chunked transfer encoding), a finish chunk, a usage chunk
                             when asked for, then `data: [DONE]`.
  GET  /v1/models, /health   a small JSON answer (the engine's /health probes /models).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys

CLASSIFIER_MARK = b"request classifier"


def http_response(status: str, body: bytes, content_type: bytes = b"application/json") -> bytes:
    return (b"HTTP/1.1 " + status.encode() + b"\r\nContent-Type: " + content_type +
            b"\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)


def completion(content: str) -> bytes:
    return json.dumps({
        "id": "chatcmpl-bench", "object": "chat.completion", "created": 0, "model": "bench-model",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 12, "completion_tokens": 8, "total_tokens": 20},
    }, separators=(",", ":")).encode()


def chunk_event(delta: dict, finish: str | None = None, usage: dict | None = None) -> bytes:
    event = {"id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": 0, "model": "bench-model",
             "choices": [] if usage else [{"index": 0, "delta": delta, "finish_reason": finish}]}
    if usage:
        event["usage"] = usage
    return b"data: " + json.dumps(event, separators=(",", ":")).encode() + b"\n\n"


def http_chunk(data: bytes) -> bytes:
    """One piece of a chunked-encoding body: each SSE event leaves as its own chunk."""
    return b"%x\r\n%s\r\n" % (len(data), data)


class Canned:
    """Every byte the fake ever sends, built once."""

    def __init__(self, label: str, chunks: int, gap_ms: float):
        self.answer = http_response("200 OK", completion("The quick brown fox jumps over the lazy dog."))
        self.label = http_response("200 OK", completion(label))
        self.models = http_response("200 OK", b'{"object":"list","data":[{"id":"bench-model","object":"model"}]}')
        self.not_found = http_response("404 Not Found", b'{"error":{"message":"not found"}}')
        self.stream_head = (b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
                            b"Transfer-Encoding: chunked\r\n\r\n")
        self.stream_chunks = [http_chunk(chunk_event({"content": f"tok{i} "})) for i in range(chunks)]
        self.stream_finish = http_chunk(chunk_event({}, finish="stop"))
        self.stream_usage = http_chunk(chunk_event({}, usage={"prompt_tokens": 12, "completion_tokens": chunks,
                                                              "total_tokens": 12 + chunks}))
        self.stream_end = http_chunk(b"data: [DONE]\n\n") + b"0\r\n\r\n"
        self.gap = gap_ms / 1000


class FakeProtocol(asyncio.Protocol):
    def __init__(self, canned: Canned):
        self.canned = canned
        self.buffer = b""
        self.transport: asyncio.Transport | None = None
        self.streaming = False  # requests that arrive during a stream wait for it to end

    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if not self.streaming:
            self.process()

    def process(self) -> None:
        while not self.streaming:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buffer[:end]
            length = 0
            lower = head.lower()
            at = lower.find(b"\r\ncontent-length:")
            if at >= 0:
                stop = lower.find(b"\r\n", at + 2)
                length = int(head[at + 17:stop if stop > 0 else None].strip())
            if len(self.buffer) < end + 4 + length:
                return
            body = self.buffer[end + 4:end + 4 + length]
            self.buffer = self.buffer[end + 4 + length:]
            self.answer(head, body)

    def answer(self, head: bytes, body: bytes) -> None:
        canned = self.canned
        if head.startswith(b"POST ") and b"/chat/completions" in head[:200]:
            if b'"stream"' in body and json.loads(body).get("stream"):
                usage = b'"include_usage"' in body and bool(
                    (json.loads(body).get("stream_options") or {}).get("include_usage"))
                self.streaming = True
                asyncio.get_running_loop().create_task(self.stream(usage))
            elif CLASSIFIER_MARK in body:
                self.transport.write(canned.label)
            else:
                self.transport.write(canned.answer)
        elif head.startswith(b"GET ") and (b"/models" in head[:100] or b"/health" in head[:100]):
            self.transport.write(canned.models)
        else:
            self.transport.write(canned.not_found)

    async def stream(self, usage: bool) -> None:
        canned, transport = self.canned, self.transport
        transport.write(canned.stream_head)
        for i, piece in enumerate(canned.stream_chunks):
            if transport.is_closing():
                return
            if i and canned.gap:
                await asyncio.sleep(canned.gap)
            transport.write(piece)
        if transport.is_closing():
            return
        transport.write(canned.stream_finish + (canned.stream_usage if usage else b"") + canned.stream_end)
        self.streaming = False
        self.process()


async def serve(host: str, port: int, canned: Canned) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: FakeProtocol(canned), host, port, backlog=1024)
    print(f"ready {server.sockets[0].getsockname()[1]}", flush=True)
    async with server:
        await server.serve_forever()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0: any free port (printed as `ready <port>`)")
    parser.add_argument("--label", default="SIMPLE", help="what the classifier call is answered")
    parser.add_argument("--chunks", type=int, default=20, help="content chunks per streamed answer")
    parser.add_argument("--gap-ms", type=float, default=5.0, help="pause between streamed chunks")
    args = parser.parse_args(argv)
    canned = Canned(args.label, args.chunks, args.gap_ms)
    try:
        import uvloop  # optional: the fake is faster with it, and correct without it
        runner = uvloop.run
    except ImportError:
        runner = asyncio.run
    try:
        runner(serve(args.host, args.port, canned))
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
