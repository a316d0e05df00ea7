"""A lean HTTP/1.1 client for the benchmarks' load generators: h11 over asyncio streams, one
kept-alive connection per worker, so the generator takes little of the cores it shares with the
server."""

from __future__ import annotations

import asyncio

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
