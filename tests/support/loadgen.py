"""A lean HTTP/1.1 client for the benchmarks' load generators: h11 over asyncio streams, one
kept-alive connection per worker, so the generator takes little of the cores it shares with the
server."""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import Callable

import h11


async def post(
    conn: h11.Connection,
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    headers: list[tuple[str, str]],
    body: bytes,
    target: str = "/v2/bulkevents",
) -> tuple[int, dict[bytes, bytes], bytes]:
    """One request on a kept-alive connection; return (status, headers, body)."""
    length = [("Content-Length", str(len(body)))]
    writer.write(conn.send(h11.Request(method="POST", target=target, headers=headers + length)))
    writer.write(conn.send(h11.Data(data=body)))
    writer.write(conn.send(h11.EndOfMessage()))
    await writer.drain()
    status, response_headers, chunks = 0, {}, []
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            data = await reader.read(65536)
            if not data:
                raise ConnectionError("the server closed the connection")
            conn.receive_data(data)
        elif isinstance(event, h11.Response):
            status, response_headers = event.status_code, dict(event.headers)
        elif isinstance(event, h11.Data):
            chunks.append(bytes(event.data))
        elif isinstance(event, h11.EndOfMessage):
            conn.start_next_cycle()
            return status, response_headers, b"".join(chunks)


def basic_headers(url: str, key: str, secret: str) -> tuple[str, int, list[tuple[str, str]]]:
    """(host, port, headers) of Events API requests to `url` (http://host:port) as this input."""
    host, port = url.removeprefix("http://").split(":")
    token = base64.b64encode(f"{key}:{secret}".encode()).decode()
    headers = [
        ("Host", f"{host}:{port}"),
        ("Authorization", f"Basic {token}"),
        ("Content-Type", "application/json"),
    ]
    return host, int(port), headers


async def send_at_rate(
    url: str,
    key: str,
    secret: str,
    n_requests: int,
    per_second: float,
    body: Callable[[int, float], bytes],
    done: Callable[[int, float, float, int], None],
    connections: int = 64,
    start: float | None = None,
) -> float:
    """Send request i (`body(i, sent)`) at start + i / per_second over `connections` kept-alive
    connections, retrying 429 and 503; `done(i, sent, acked, status)` after each (times in s since
    the epoch; `start` defaults to now). Returns the start. A request waits for a free connection
    when all are busy."""
    host, port, headers = basic_headers(url, key, secret)
    following = iter(range(n_requests))
    start = time.time() if start is None else start

    async def worker() -> None:
        reader, writer = await asyncio.open_connection(host, port)
        conn = h11.Connection(h11.CLIENT)
        try:
            for i in following:  # requests are taken in order; each waits for its moment
                delay = start + i / per_second - time.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                sent = time.time()
                data = body(i, sent)
                while True:
                    try:
                        status = (await post(conn, reader, writer, headers, data))[0]
                    except (ConnectionError, h11.ProtocolError):
                        writer.close()
                        reader, writer = await asyncio.open_connection(host, port)
                        conn, status = h11.Connection(h11.CLIENT), -1
                    if status in (429, 503, -1):
                        await asyncio.sleep(0.2)
                        continue
                    break
                done(i, sent, time.time(), status)
        finally:
            writer.close()

    await asyncio.gather(*(worker() for _ in range(connections)))
    return start
