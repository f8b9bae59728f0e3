"""engine.upstream, the backend client, against real servers on loopback.

Well-behaved HTTP comes from aiohttp's server; the misbehaviour a real server can show
(a cut body, a bad status line, no framing, an interim 100) comes from raw asyncio
servers that write exactly the bytes each test gives them.
"""

from __future__ import annotations

import asyncio
import ssl
import subprocess

import pytest
from aiohttp import web

from engine.upstream import PAUSE_BYTES, Client, UpstreamError, request_head, target


async def start(app: web.Application) -> tuple[web.AppRunner, str]:
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    return runner, f"http://127.0.0.1:{port}"


async def serve_route(path: str, handler) -> tuple[web.AppRunner, str]:
    app = web.Application()
    app.router.add_post(path, handler)
    return await start(app)


async def raw_server(reply: bytes, *, close: bool = True, seen: list | None = None):
    """A server that reads one request head and answers `reply`, byte for byte."""
    async def handle(reader, writer):
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            if seen is not None:
                seen.append(head)
            length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                           if line.lower().startswith(b"content-length:")), 0)
            await reader.readexactly(length)
            writer.write(reply)
            await writer.drain()
            if close:
                writer.close()
                return

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"


def echo_app(peers: list) -> web.Application:
    async def echo(request: web.Request) -> web.Response:
        peers.append(request.transport.get_extra_info("peername"))
        body = await request.read()
        return web.json_response({"got": body.decode(), "auth": request.headers.get("Authorization")})

    app = web.Application()
    app.router.add_post("/v1/chat/completions", echo)
    return app


async def test_a_body_comes_back_whole_and_the_connection_is_reused():
    peers: list = []
    runner, base = await start(echo_app(peers))
    try:
        async with Client() as client:
            for text in ("one", "two", "three"):
                response = await client.request("POST", base + "/v1/chat/completions", body=text.encode(),
                                                headers={"Authorization": "Bearer k"})
                assert response.status == 200
                assert response.headers.get("Content-Type").startswith("application/json")
                assert await response.read() == b'{"got": "%s", "auth": "Bearer k"}' % text.encode()
            assert len(set(peers)) == 1, "each request opened a new connection"
            assert client.open_connections == 1
    finally:
        await runner.cleanup()


async def test_concurrent_requests_each_get_their_own_answer():
    # A connection goes back to the pool the moment its answer is in, while its caller has
    # not resumed yet; an early version lost the next caller's answer in that gap (16 of
    # 16,000 requests hung under load).
    peers: list = []
    runner, base = await start(echo_app(peers))
    try:
        async with Client() as client:
            async def worker(n: int) -> list[bool]:
                results = []
                for i in range(50):
                    text = f"{n}-{i}"
                    async with asyncio.timeout(5):
                        response = await client.request("POST", base + "/v1/chat/completions", body=text.encode())
                        results.append(text in (await response.read()).decode())
                return results

            results = await asyncio.gather(*(worker(n) for n in range(16)))
            assert all(all(r) for r in results)
            assert sum(len(r) for r in results) == 800
            assert client.open_connections <= 16
    finally:
        await runner.cleanup()


async def test_a_chunked_stream_is_read_line_by_line_as_it_arrives():
    release = asyncio.Event()

    async def stream(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)  # aiohttp frames it with chunked encoding
        await response.write(b"data: first\n\n")
        await release.wait()
        await response.write(b"data: second\n\ndata: [DONE]\n\n")
        await response.write_eof()
        return response

    runner, base = await serve_route("/s", stream)
    try:
        async with Client() as client:
            response = await client.request("POST", base + "/s", body=b"{}")
            assert response.headers.get("transfer-encoding") == "chunked"
            # The first line arrives while the server is still holding the rest back.
            async with asyncio.timeout(5):
                assert await response.readline() == b"data: first\n"
                assert await response.readline() == b"\n"
            release.set()
            lines = [await response.readline() for _ in range(4)]
            assert lines == [b"data: second\n", b"\n", b"data: [DONE]\n", b"\n"]
            assert await response.readline() == b""
            assert response.closed
            assert client.open_connections == 1  # kept for the next request
    finally:
        await runner.cleanup()


async def test_a_stream_cut_in_the_middle_is_an_error_not_an_end():
    body = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n10\r\ndata: partial..\n\r\n"
    server, base = await raw_server(body)  # closes without the terminating 0-chunk
    async with server:
        async with Client() as client:
            response = await client.request("POST", base + "/x", body=b"{}")
            assert await response.readline() == b"data: partial..\n"
            with pytest.raises(UpstreamError, match="closed the connection before the end"):
                await response.readline()


async def test_a_body_shorter_than_its_content_length_is_an_error():
    server, base = await raw_server(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{\"partial\":")
    async with server:
        async with Client() as client:
            response = await client.request("POST", base + "/x", body=b"{}")
            with pytest.raises(UpstreamError):
                await response.read()


async def test_a_body_without_framing_ends_with_the_connection():
    server, base = await raw_server(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n{\"whole\": true}")
    async with server:
        async with Client() as client:
            response = await client.request("POST", base + "/x", body=b"{}")
            assert await response.read() == b'{"whole": true}'
            await asyncio.sleep(0)
            assert client.open_connections == 0  # not reusable: it ended the body


async def test_an_interim_100_continue_is_skipped():
    server, base = await raw_server(b"HTTP/1.1 100 Continue\r\n\r\n"
                                    b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok", close=False)
    async with server:
        async with Client() as client:
            response = await client.request("POST", base + "/x", body=b"{}")
            assert (response.status, await response.read()) == (201, b"ok")


@pytest.mark.parametrize("reply", [b"SSH-2.0-OpenSSH_9.6\r\n\r\n", b"HTTP/1.1 2OO OK\r\n\r\n",
                                   b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n",
                                   b"HTTP/1.1 200 OK\r\nContent-Length: -5\r\n\r\n",
                                   b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"])
async def test_what_is_not_http_is_an_error_that_says_so(reply):
    server, base = await raw_server(reply)
    async with server:
        async with Client() as client:
            with pytest.raises(UpstreamError, match="not valid HTTP/1.1|closed the connection"):
                response = await client.request("POST", base + "/x", body=b"{}")
                await response.read()


async def test_a_keep_alive_connection_the_server_dropped_is_replaced_transparently():
    seen: list = []
    reply = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
    # Keeps the connection after answering, then drops it: what uvicorn does after its
    # keep-alive timeout. The client's next request must not fail because of it.
    server, base = await raw_server(reply, close=True, seen=seen)
    async with server:
        async with Client() as client:
            first = await client.request("POST", base + "/x", body=b"{}")
            assert await first.read() == b"ok"
            second = await client.request("POST", base + "/x", body=b"{}")
            assert await second.read() == b"ok"
            assert len(seen) == 2


async def test_a_stale_pooled_connection_is_retried_once_on_a_new_one():
    # The race the test above cannot show: the server closes the idle connection just as a
    # request goes out on it. Simulated by a pooled connection whose FIN the client has not
    # processed: the server answers the first request, then closes without reading more.
    connections = 0

    async def handle(reader, writer):
        nonlocal connections
        connections += 1
        head = await reader.readuntil(b"\r\n\r\n")
        assert b"Content-Length: 2" in head
        await reader.readexactly(2)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()
        writer.transport.abort()  # an RST, not a polite FIN

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    base = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    async with server:
        async with Client() as client:
            for _ in range(3):
                response = await client.request("POST", base + "/x", body=b"{}")
                assert await response.read() == b"ok"
            assert connections == 3


async def test_connection_refused_is_an_upstream_error_naming_the_address():
    listener = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    listener.close()
    await listener.wait_closed()
    async with Client() as client:
        with pytest.raises(UpstreamError, match=f"cannot connect to 127.0.0.1:{port}"):
            await client.request("POST", f"http://127.0.0.1:{port}/x", body=b"{}")


async def test_closing_a_response_early_drops_the_connection_so_the_server_sees_it():
    disconnected = asyncio.Event()

    async def endless(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        await response.prepare(request)
        try:
            while True:
                await response.write(b"data: more\n\n")
                await asyncio.sleep(0.01)
        except (ConnectionError, asyncio.CancelledError):
            disconnected.set()
            raise

    runner, base = await serve_route("/s", endless)
    try:
        async with Client() as client:
            response = await client.request("POST", base + "/s", body=b"{}")
            assert await response.readline() == b"data: more\n"
            response.close()
            async with asyncio.timeout(5):
                await disconnected.wait()
            assert client.open_connections == 0
    finally:
        await runner.cleanup()


async def test_a_fast_backend_is_paused_while_its_reader_is_slow():
    sent = 0
    done = asyncio.Event()

    async def flood(request: web.Request) -> web.StreamResponse:
        nonlocal sent
        response = web.StreamResponse()
        await response.prepare(request)
        line = b"x" * 1023 + b"\n"
        for _ in range(8 * 1024):  # 8 MiB
            await response.write(line)
            sent += len(line)
        await response.write_eof()
        done.set()
        return response

    runner, base = await serve_route("/s", flood)
    try:
        async with Client() as client:
            response = await client.request("POST", base + "/s", body=b"{}")
            await response.readline()
            await asyncio.sleep(0.3)  # the reader stalls; the server keeps trying to write
            buffered = len(response._body)
            assert buffered < PAUSE_BYTES + 512 * 1024, f"{buffered} bytes buffered while the reader slept"
            assert sent < 8 * 1024 * 1024 and not done.is_set()
            total = 1024
            while line := await response.readline():
                total += len(line)
            assert total == 8 * 1024 * 1024
    finally:
        await runner.cleanup()


def test_header_values_cannot_inject_headers_and_errors_do_not_show_them():
    with pytest.raises(UpstreamError, match="line break") as caught:
        request_head("POST", target("http://h/v1"), {"Authorization": "Bearer sk-secret\r\nX-Evil: 1"}, 0)
    with pytest.raises(UpstreamError, match="cannot carry") as caught_too:
        request_head("POST", target("http://h/v1"), {"Authorization": "Bearer sk-secret\u2028"}, 0)
    assert "sk-secret" not in str(caught.value) + str(caught_too.value)


def test_targets_keep_the_path_query_and_non_default_port():
    where = target("https://api.x.ai/v1/chat/completions?x=1")
    assert where.key == ("https", "api.x.ai", 443)
    assert (where.host_header, where.path) == (b"api.x.ai", b"/v1/chat/completions?x=1")
    assert target("http://[::1]:8080/v1").host_header == b"[::1]:8080"
    with pytest.raises(ValueError):
        target("ftp://example.com/")


async def test_https_backends_are_reached_over_tls(tmp_path):
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    made = subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                           "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost",
                           "-keyout", str(key), "-out", str(cert)], capture_output=True)
    if made.returncode != 0:
        pytest.skip("openssl cannot make a test certificate here")
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(cert, key)
    peers: list = []
    runner = web.AppRunner(echo_app(peers))
    await runner.setup()
    site = web.TCPSite(runner, "localhost", 0, ssl_context=server_tls)
    await site.start()
    port = runner.addresses[0][1]
    try:
        trusting = ssl.create_default_context(cafile=str(cert))
        async with Client(ssl_context=trusting) as client:
            response = await client.request("POST", f"https://localhost:{port}/v1/chat/completions", body=b"tls")
            assert (await response.read()).startswith(b'{"got": "tls"')
        async with Client() as client:  # the system's CAs do not know this certificate
            with pytest.raises(UpstreamError, match="cannot connect"):
                await client.request("POST", f"https://localhost:{port}/v1/chat/completions", body=b"tls")
    finally:
        await runner.cleanup()


async def test_a_backend_that_never_accepts_the_connection_hits_the_connect_timeout():
    # A listener that never accepts, its queue already full: Linux drops further SYNs, so a
    # connect neither succeeds nor fails, as with a host that has gone away.
    import socket

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    try:
        for _ in range(4):  # enough to fill a backlog of 0 (the kernel allows one or two)
            filler = socket.socket()
            filler.setblocking(False)
            filler.connect_ex(("127.0.0.1", port))
            fillers.append(filler)
        await asyncio.sleep(0.1)
        async with Client() as client:
            with pytest.raises(TimeoutError, match=f"connecting to 127.0.0.1:{port} took longer than 0.3 s"):
                async with asyncio.timeout(5):  # without a connect timeout: this one, another message
                    await client.request("POST", f"http://127.0.0.1:{port}/x", body=b"{}", connect_timeout=0.3)
    finally:
        for filler in fillers:
            filler.close()
        listener.close()


async def test_a_connection_idle_longer_than_idle_seconds_is_not_reused():
    peers: list = []
    runner, base = await start(echo_app(peers))
    try:
        async with Client(idle_seconds=0.2) as client:
            for pause in (0, 0.3):
                await asyncio.sleep(pause)
                response = await client.request("POST", base + "/v1/chat/completions", body=b"x")
                await response.read()
            assert len(set(peers)) == 2, "a connection idle past idle_seconds was used again"
            assert client.open_connections == 1  # the stale one was closed, not leaked
    finally:
        await runner.cleanup()
