"""A small HTTP/1.1 client for the engine's calls to model backends.

Why our own: every request the engine routes makes at least one backend call, and in the
benchmark (bench/results/optimisations.md) aiohttp's client was the largest single cost
of a routed request: a minimal aiohttp proxy added 0.37 ms at one client and served
7,200 req/s at 16, the same proxy on this client 0.23 ms and 14,300 req/s. Backend calls
need little of what a general client offers (no cookies, redirects, proxies,
compression, multipart), so this one does only what they need:

- keep-alive connections, pooled per host (`Client`), TLS for https backends;
- a request is one write of bytes prepared in full; the response head is parsed here;
- bodies framed by Content-Length, by chunked transfer encoding (what vLLM, llama.cpp's
  server and most APIs use to stream), or by the end of the connection;
- `Response.read()` for a whole body, `Response.readline()` for SSE streams, with flow
  control: a backend that streams faster than the client reads is paused, not buffered;
- `Response.close()` before the end drops the connection, which is how a model server
  learns that nobody wants the rest of the answer.

Timeouts are the caller's (`asyncio.timeout` around the awaits, see engine.backends):
this module only has the connect timeout, because a connection is made inside it.

Failures raise `UpstreamError` (a `ConnectionError`, so an `OSError` like the socket's
own errors): connection refused, reset, closed before the response was complete, or a
response that is not HTTP/1.1.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from functools import lru_cache
from typing import NamedTuple
from urllib.parse import urlsplit

MAX_HEAD_BYTES = 64 * 1024        # status line + headers
MAX_LINE_BYTES = 8 * 1024 * 1024  # one SSE line (a big tool call can be long)
PAUSE_BYTES = 256 * 1024          # unread body buffered before the backend is paused


class UpstreamError(ConnectionError):
    """The connection to the backend failed, or what came back is not HTTP/1.1."""

    def __init__(self, message: str, *, before_response: bool = False):
        super().__init__(message)
        # True when not a byte of the response had arrived: on a reused keep-alive
        # connection that means the server had closed it, and a new one may be tried.
        self.before_response = before_response


class Target(NamedTuple):
    key: tuple[str, str, int]  # scheme, host, port: the pool a connection belongs to
    host_header: bytes
    path: bytes


@lru_cache(maxsize=256)
def target(url: str) -> Target:
    """Where a URL's requests go; cached, since backends call the same few URLs."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"not an http(s) URL: {url!r}")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    default_port = port == (443 if parts.scheme == "https" else 80)
    host = parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]"
    host_header = host if default_port else f"{host}:{port}"
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return Target((parts.scheme, parts.hostname, port), host_header.encode("ascii"), path.encode("ascii"))


def request_head(method: str, where: Target, headers: dict[str, str], body_length: int) -> bytes:
    lines = [b"%s %s HTTP/1.1" % (method.encode("ascii"), where.path), b"Host: " + where.host_header]
    for name, value in headers.items():
        # Values come from the environment (an API key): they must not inject headers, and
        # the error names the header, never its value.
        if "\r" in value or "\n" in value or "\r" in name or "\n" in name:
            raise UpstreamError(f"header {name!r} contains a line break")
        try:
            lines.append(b"%s: %s" % (name.encode("latin-1"), value.encode("latin-1")))
        except UnicodeEncodeError:
            raise UpstreamError(f"header {name!r} has characters HTTP headers cannot carry") from None
    if body_length or method not in ("GET", "HEAD"):
        lines.append(b"Content-Length: %d" % body_length)
    return b"\r\n".join(lines) + b"\r\n\r\n"


class Headers(dict):
    """Response headers, lower-cased names; a repeated header's values joined by ", "."""

    def get(self, name: str, default=None):  # type: ignore[override]
        return super().get(name.lower(), default)


class Response:
    """One backend response: status and headers at once, the body as it arrives."""

    def __init__(self, status: int, reason: str, headers: Headers, connection: "Connection"):
        self.status = status
        self.reason = reason
        self.headers = headers
        self._connection: Connection | None = connection  # None once the body is complete
        self._body = bytearray()
        self._done = False
        self._error: BaseException | None = None
        self._waiter: asyncio.Future | None = None
        self._whole = False  # read() wants the whole body: no point pausing the backend

    # -- fed by the connection -------------------------------------------------------
    def _feed(self, data: bytes | bytearray) -> None:
        self._body += data
        self._wake()
        if len(self._body) > PAUSE_BYTES and self._connection is not None and not self._whole:
            self._connection.pause()

    def _finish(self) -> None:
        self._done = True
        self._connection = None
        self._wake()

    def _fail(self, error: BaseException) -> None:
        self._error = error
        self._connection = None
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def _more(self) -> None:
        """Wait until more of the body, its end, or an error has arrived."""
        if self._error is not None:
            raise self._error
        if self._connection is not None:
            self._connection.resume()
        self._waiter = asyncio.get_running_loop().create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None
        if self._error is not None:
            raise self._error

    # -- read by the caller ----------------------------------------------------------
    @property
    def closed(self) -> bool:
        return self._done or self._error is not None

    async def read(self) -> bytes:
        """The whole body."""
        self._whole = True
        while not self._done:
            await self._more()
        body = bytes(self._body)
        self._body.clear()
        return body

    async def readline(self) -> bytes:
        """The next line with its b"\\n"; at the end of the body what is left, then b""."""
        start = 0
        while True:
            end = self._body.find(b"\n", start)
            if end >= 0:
                line = bytes(self._body[:end + 1])
                del self._body[:end + 1]
                return line
            if self._done:
                line = bytes(self._body)
                self._body.clear()
                return line
            if len(self._body) > MAX_LINE_BYTES:
                self.close()
                raise UpstreamError(f"a line of the response is longer than {MAX_LINE_BYTES} bytes")
            start = len(self._body)
            await self._more()

    def close(self) -> None:
        """Done with this response. Before its end, that drops the connection."""
        if self._connection is not None:
            connection, self._connection = self._connection, None
            connection.close()
            self._error = self._error or UpstreamError("response closed before its end")


class Connection(asyncio.Protocol):
    """One keep-alive connection: sends a request, parses its response, goes back to the pool."""

    def __init__(self, client: "Client", key: tuple[str, str, int]):
        self.client = client
        self.key = key
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.idle_since = 0.0
        self._paused = False
        self._buffer = bytearray()  # bytes not parsed yet (head, chunk framing)
        self._head_waiter: asyncio.Future | None = None
        self._response: Response | None = None
        self._got_bytes = False
        # How the current body ends: "length" (self._remaining bytes), "chunked", "eof".
        self._framing = ""
        self._remaining = 0
        self._chunk_state = "size"  # size | data | crlf | trailer
        self._keep_alive = True
        self._method = "POST"

    # -- asyncio.Protocol ------------------------------------------------------------
    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self._got_bytes = True
        if self._response is None:
            if self._head_waiter is None:  # bytes nobody asked for: the connection is unusable
                self.close()
                return
            self._buffer += data
            self._parse_head()
        elif self._framing == "length" and not self._buffer:
            self._feed_length(data)
        else:
            self._buffer += data
            self._parse_body()

    def eof_received(self):
        return False  # let the transport close; connection_lost reports it

    def connection_lost(self, exc) -> None:
        self.closed = True
        self.client._forget(self)
        waiter, self._head_waiter = self._head_waiter, None
        if waiter is not None and not waiter.done():
            detail = f": {exc}" if exc else ""
            waiter.set_exception(UpstreamError(
                f"the backend closed the connection before answering{detail}", before_response=not self._got_bytes))
        response, self._response = self._response, None
        if response is not None:
            if self._framing == "eof" and exc is None:
                response._finish()
            else:
                response._fail(UpstreamError("the backend closed the connection before the end of the response"))

    # -- flow control ----------------------------------------------------------------
    def pause(self) -> None:
        if not self._paused and self.transport is not None and not self.closed:
            self._paused = True
            self.transport.pause_reading()

    def resume(self) -> None:
        if self._paused and self.transport is not None and not self.closed:
            self._paused = False
            self.transport.resume_reading()

    # -- one request -----------------------------------------------------------------
    async def send(self, head: bytes, body: bytes, method: str) -> Response:
        self._got_bytes = False
        self._method = method
        waiter = self._head_waiter = asyncio.get_running_loop().create_future()
        self.transport.write(head + body)
        try:
            return await waiter
        finally:
            # The parser lets go of the waiter when it resolves it: by the time this runs,
            # the connection may be back in the pool and waiting for someone else's answer.
            if self._head_waiter is waiter:
                self._head_waiter = None

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.client._forget(self)
            if self.transport is not None:
                self.transport.close()

    # -- parsing ---------------------------------------------------------------------
    def _protocol_error(self, message: str) -> None:
        error = UpstreamError(f"the backend's response is not valid HTTP/1.1: {message}")
        waiter, self._head_waiter = self._head_waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(error)
        response, self._response = self._response, None
        if response is not None:
            response._fail(error)
        self.close()

    def _parse_head(self) -> None:
        while True:  # 1xx interim responses (100 Continue, 103 Early Hints) come before the real one
            end = self._buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(self._buffer) > MAX_HEAD_BYTES:
                    self._protocol_error("the response head is too long")
                return
            lines = bytes(self._buffer[:end]).decode("latin-1").split("\r\n")
            del self._buffer[:end + 4]
            version, _, rest = lines[0].partition(" ")
            code, _, reason = rest.partition(" ")
            if not version.startswith("HTTP/1.") or not (code.isdigit() and len(code) == 3):
                self._protocol_error(f"bad status line {lines[0][:80]!r}")
                return
            status = int(code)
            if status >= 200:
                break
        headers = Headers()
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if not sep or not name or name != name.strip():
                self._protocol_error(f"bad header line {line[:80]!r}")
                return
            name, value = name.lower(), value.strip()
            headers[name] = f"{headers[name]}, {value}" if name in headers else value

        self._keep_alive = version == "HTTP/1.1" and "close" not in headers.get("connection", "").lower()
        if "chunked" in headers.get("transfer-encoding", "").lower():
            self._framing, self._chunk_state = "chunked", "size"
        elif "content-length" in headers:
            length = headers["content-length"]
            if not length.isdigit():
                self._protocol_error(f"bad Content-Length {length[:40]!r}")
                return
            self._framing, self._remaining = "length", int(length)
        elif status in (204, 304) or self._method == "HEAD":
            self._framing, self._remaining = "length", 0
        else:
            self._framing, self._keep_alive = "eof", False

        response = Response(status, reason, headers, self)
        self._response = response
        waiter, self._head_waiter = self._head_waiter, None
        if not waiter.done():  # done: the caller gave up (a timeout) and closes the connection
            waiter.set_result(response)
        if self._framing == "length" and self._remaining == 0:
            self._body_done()
        elif self._buffer:
            self._parse_body()

    def _parse_body(self) -> None:
        if self._framing == "length":
            data = bytes(self._buffer)
            self._buffer.clear()
            self._feed_length(data)
        elif self._framing == "eof":
            self._response._feed(self._buffer)
            self._buffer.clear()
        else:
            self._parse_chunks()

    def _feed_length(self, data: bytes) -> None:
        if len(data) > self._remaining:  # more than the response holds: do not trust this connection
            data = data[:self._remaining]
            self._keep_alive = False
        self._remaining -= len(data)
        if data:
            self._response._feed(data)
        if self._remaining == 0:
            self._body_done()

    def _parse_chunks(self) -> None:
        buffer = self._buffer
        while self._response is not None:
            if self._chunk_state == "size":
                end = buffer.find(b"\r\n")
                if end < 0:
                    if len(buffer) > 1024:
                        self._protocol_error("bad chunk size line")
                    return
                size_text = bytes(buffer[:end]).split(b";", 1)[0].strip()
                del buffer[:end + 2]
                try:
                    self._remaining = int(size_text, 16)
                except ValueError:
                    self._protocol_error(f"bad chunk size {size_text[:20]!r}")
                    return
                self._chunk_state = "data" if self._remaining else "trailer"
            elif self._chunk_state == "data":
                if not buffer:
                    return
                take = min(self._remaining, len(buffer))
                self._response._feed(buffer[:take])
                del buffer[:take]
                self._remaining -= take
                if self._remaining:
                    return
                self._chunk_state = "crlf"
            elif self._chunk_state == "crlf":
                if len(buffer) < 2:
                    return
                if buffer[:2] != b"\r\n":
                    self._protocol_error("a chunk does not end with CRLF")
                    return
                del buffer[:2]
                self._chunk_state = "size"
            else:  # trailer: header lines, then an empty line
                end = buffer.find(b"\r\n")
                if end < 0:
                    return
                del buffer[:end + 2]
                if end == 0:
                    self._body_done()

    def _body_done(self) -> None:
        response, self._response = self._response, None
        if self._buffer:  # bytes after the end of the response: not a connection to reuse
            self._keep_alive = False
        if self._keep_alive and not self.closed:
            self.resume()
            self.client._release(self)
        else:
            self.close()
        response._finish()


class Client:
    """Keep-alive connections to backends, pooled per (scheme, host, port).

    A connection goes back to its pool as soon as its response has fully arrived; one
    idle for `idle_seconds` is closed rather than reused (servers close theirs after a
    few seconds: uvicorn, which serves vLLM, after 5). A request sent on a reused
    connection that the server had closed meanwhile, so that not a byte came back, is
    sent once more on a new connection; that is the only retry made here.
    """

    def __init__(self, *, max_idle_per_host: int = 64, idle_seconds: float = 15.0,
                 ssl_context: ssl.SSLContext | None = None):
        self.max_idle_per_host = max_idle_per_host
        self.idle_seconds = idle_seconds
        self._idle: dict[tuple[str, str, int], list[Connection]] = {}
        self._open: set[Connection] = set()
        # The system's CA store by default; SSL_CERT_FILE / SSL_CERT_DIR point OpenSSL at a
        # private CA, as for any Python program.
        self._ssl = ssl_context

    async def __aenter__(self) -> "Client":
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    async def request(self, method: str, url: str, *, body: bytes = b"", headers: dict[str, str] | None = None,
                      connect_timeout: float | None = None) -> Response:
        """Send one request; returns when the response's head has arrived."""
        where = target(url)
        head = request_head(method, where, headers or {}, len(body))
        for attempt in range(2):
            connection = self._pooled(where.key)
            reused = connection is not None
            if connection is None:
                connection = await self._connect(where.key, connect_timeout)
            try:
                return await connection.send(head, body, method)
            except UpstreamError as err:
                connection.close()
                if reused and err.before_response and attempt == 0:
                    continue
                raise
            except BaseException:  # cancelled or timed out mid-request: the connection is spent
                connection.close()
                raise
        raise AssertionError("unreachable")

    def _pooled(self, key) -> Connection | None:
        idle = self._idle.get(key)
        now = time.monotonic()
        while idle:
            connection = idle.pop()
            if not connection.closed and now - connection.idle_since < self.idle_seconds:
                return connection
            connection.close()
        return None

    async def _connect(self, key, connect_timeout: float | None) -> Connection:
        scheme, host, port = key
        loop = asyncio.get_running_loop()
        tls = None
        if scheme == "https":
            if self._ssl is None:
                self._ssl = ssl.create_default_context()
            tls = self._ssl
        try:
            async with asyncio.timeout(connect_timeout):
                _, connection = await loop.create_connection(
                    lambda: Connection(self, key), host, port, ssl=tls, server_hostname=host if tls else None)
        except TimeoutError:
            raise TimeoutError(f"connecting to {host}:{port} took longer than {connect_timeout:g} s") from None
        except OSError as exc:  # refused, unreachable, DNS (gaierror), TLS (SSLError)
            raise UpstreamError(f"cannot connect to {host}:{port}: {exc.strerror or exc}") from None
        self._open.add(connection)
        return connection

    def _release(self, connection: Connection) -> None:
        idle = self._idle.setdefault(connection.key, [])
        if len(idle) >= self.max_idle_per_host:
            connection.close()
            return
        connection.idle_since = time.monotonic()
        idle.append(connection)

    def _forget(self, connection: Connection) -> None:
        self._open.discard(connection)

    @property
    def open_connections(self) -> int:
        return len(self._open)

    async def close(self) -> None:
        for connection in list(self._open):
            connection.close()
        self._idle.clear()
        await asyncio.sleep(0)  # let the transports run their close callbacks
