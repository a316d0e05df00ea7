"""Ingest throughput through /v2/bulkevents with durability on, next to the store's local limit.

One run measures, on this machine with the load generator sharing its cores:
  (a) the realistic mix: requests of 100 batches x 1-10 events, ~30% of batches carrying
      attributes or identities, ~5% new users;
  (b) batches of 100 events for one user;
and for each, the local limit: the same requests appended to a fresh store in request-sized
durable transactions (one commit per request) without HTTP.

Usage: python benchmarks/ingest.py [--requests N] [--concurrency C] [--mix a|b|both]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

import h11
import httpx
import orjson

from milepost.engines.duckdb import DuckDBStore
from milepost.ingest.normalize import normalize_request
from milepost.ingest.plan import DedupeWindows, build_plan
from milepost.model.batch import IngestRequest
from milepost.synthetic import realistic_bulk_requests, single_user_requests

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.support.loadgen import basic_headers, post
from tests.support.server import Server, free_port, init_data_dir

WINDOWS = DedupeWindows(request_ms=30 * 86_400_000, message_ms=7 * 86_400_000)


def count_events(body: bytes) -> int:
    return sum(len(b.get("events") or []) for b in orjson.loads(body))


async def send_all(
    url: str, auth: tuple[str, str], bodies: list[bytes], concurrency: int
) -> tuple[float, int]:
    """Send every body once (retrying 429/503); return (seconds, requests refused).

    A lean client (h11 over asyncio streams, one kept-alive connection per worker) so that the load
    generator takes as little as it can of the cores it shares with the server.
    """
    host, port, headers = basic_headers(url, *auth)
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    for b in bodies:
        queue.put_nowait(b)
    refused = 0

    async def worker() -> None:
        nonlocal refused
        reader, writer = await asyncio.open_connection(host, port)
        conn = h11.Connection(h11.CLIENT)
        try:
            while not queue.empty():
                body = queue.get_nowait()
                while True:
                    status, response_headers, text = await post(conn, reader, writer, headers, body)
                    if status == 202:
                        break
                    if status in (429, 503):
                        await asyncio.sleep(float(response_headers.get(b"retry-after", b"1")))
                        continue
                    refused += 1
                    print("refused:", status, text[:300], file=sys.stderr)
                    break
        finally:
            writer.close()

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.perf_counter() - start, refused


def through_http(
    bodies: list[bytes], concurrency: int, workdir: Path
) -> tuple[float, int, float, float, int, tuple[float, float, float]]:
    data_dir = workdir / "http"
    creds = init_data_dir(data_dir)
    server = Server(data_dir, free_port(), {"MILEPOST_INPUT_RATE_LIMIT": "1000000000"})
    server.start()
    auth = (creds["input"]["key"], creds["input"]["secret"])
    try:
        # Warm up the connection and the server's code paths outside the measurement.
        asyncio.run(send_all(server.url, auth, bodies[:3], 1))
        commits0 = _commits(server, creds["admin_token"])
        cpu0, client0, threads0 = _children_cpu(server), time.process_time(), _thread_cpu(server)
        seconds, refused = asyncio.run(send_all(server.url, auth, bodies[3:], concurrency))
        server_cpu, client_cpu = _children_cpu(server) - cpu0, time.process_time() - client0
        threads = _split_threads(server, threads0, _thread_cpu(server))
        commits = _commits(server, creds["admin_token"]) - commits0
    finally:
        server.stop()
        shutil.rmtree(data_dir, ignore_errors=True)
    return seconds, refused, server_cpu, client_cpu, commits, threads


def _commits(server: Server, token: str) -> int:
    """Group commits so far, from the server's metrics."""
    text = httpx.get(f"{server.url}/metrics", headers={"Authorization": f"Bearer {token}"}).text
    line = next(x for x in text.splitlines() if x.startswith("milepost_writer_commits_total "))
    return int(line.split()[1])


def _children_cpu(server: Server) -> float:
    assert server.proc is not None
    try:
        stat = Path(f"/proc/{server.proc.pid}/stat").read_text().split()
        return (int(stat[13]) + int(stat[14])) / os.sysconf("SC_CLK_TCK")
    except OSError:
        return 0.0


def _thread_cpu(server: Server) -> dict[int, float]:
    """CPU seconds so far of each of the server's threads, by thread id."""
    assert server.proc is not None
    out: dict[int, float] = {}
    for task in Path(f"/proc/{server.proc.pid}/task").glob("*"):
        try:
            stat = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # the thread ended
        out[int(task.name)] = (int(stat[11]) + int(stat[12])) / os.sysconf("SC_CLK_TCK")
    return out


def _split_threads(
    server: Server, before: dict[int, float], after: dict[int, float]
) -> tuple[float, float, float]:
    """CPU seconds between the two readings of (the event loop, the busiest other thread, all the others).

    The event loop is the main thread; the busiest other one is normally the writer. The others are
    DuckDB's workers and the upkeep threads (the estimator's sample refresh every few seconds,
    real-time evaluation, checkpoints): work that lands in a short run or not, so a run whose
    "others" are high measured more than ingest.
    """
    assert server.proc is not None
    used = {t: cpu - before.get(t, 0.0) for t, cpu in after.items()}
    loop = used.pop(server.proc.pid, 0.0)
    busiest = max(used.values(), default=0.0)
    return loop, busiest, sum(used.values()) - busiest


def local_limit(bodies: list[bytes], workdir: Path) -> float:
    """The same requests, pre-validated, committed to a fresh store one transaction per request."""
    store_dir = workdir / "local"
    store = DuckDBStore(store_dir)
    now = int(time.time() * 1000)
    requests = [
        IngestRequest(
            1,
            now + i,
            normalize_request(orjson.loads(b), bulk=True, historical=False, received_at=now + i)[0],
        )
        for i, b in enumerate(bodies)
    ]
    rng = random.Random(1)
    for req in requests[:3]:
        store.apply(build_plan([req], store, WINDOWS, rng))
    start = time.perf_counter()
    for req in requests[3:]:
        store.apply(build_plan([req], store, WINDOWS, rng))
    seconds = time.perf_counter() - start
    store.close()
    shutil.rmtree(store_dir, ignore_errors=True)
    return seconds


def run_mix(
    name: str, bodies: list[bytes], concurrency: int, workdir: Path, target: float
) -> dict[str, float]:
    events = sum(count_events(b) for b in bodies[3:])
    http_s, refused, server_cpu, client_cpu, commits, (loop, writer, others) = through_http(
        bodies, concurrency, workdir
    )
    local_s = local_limit(bodies, workdir)
    http_rate, local_rate = events / http_s, events / local_s
    ratio = local_rate / http_rate
    print(f"\n{name}: {len(bodies) - 3} requests, {events} events")
    print(
        f"  HTTP /v2/bulkevents (durable 202): {http_rate:12,.0f} events/s   ({http_s:.2f} s, {refused} refused)"
    )
    print(
        f"  server CPU: {server_cpu:.1f} s of {http_s:.1f} s wall ({server_cpu / http_s:.0%} of one core, "
        f"{server_cpu / events * 1e6:.0f} µs/event); load generator CPU: {client_cpu:.1f} s"
    )
    print(
        f"  server CPU by thread: event loop {loop:.2f} s, writer (busiest other) {writer:.2f} s, "
        f"all others {others:.2f} s (DuckDB workers, upkeep)"
    )
    print(
        f"  group commits: {commits} ({(len(bodies) - 3) / max(commits, 1):.1f} requests and "
        f"{server_cpu / max(commits, 1) * 1e3:.1f} ms of server CPU per commit)"
    )
    print(f"  load average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"  local limit (store, one commit/request): {local_rate:12,.0f} events/s   ({local_s:.2f} s)")
    print(
        f"  limit / HTTP = {ratio:.2f}x (target within 3x)   target >= {target:,.0f} events/s: {'met' if http_rate >= target and ratio <= 3 else 'NOT met'}"
    )
    return {"http": http_rate, "local": local_rate, "ratio": ratio}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=400, help="requests per mix")
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--mix", choices=("a", "b", "both"), default="both", help="which mix to run")
    args = ap.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="milepost-bench-"))
    try:
        print(f"machine: {os.cpu_count()} cores; client and server share them")
        mix_a = [
            orjson.dumps(r)
            for r in realistic_bulk_requests(seed=1, requests=args.requests, batches_per_request=100)
        ]
        mix_b = [
            orjson.dumps(r)
            for r in single_user_requests(seed=2, requests=args.requests * 5, events_per_batch=100)
        ]
        if args.mix != "b":
            run_mix("(a) realistic mix: 100 batches x 1-10 events", mix_a, args.concurrency, workdir, 20_000)
        if args.mix != "a":
            run_mix("(b) one user, 100 events per batch", mix_b, args.concurrency, workdir, 50_000)
        peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        print(f"\npeak RSS of the server process: {peak:.0f} MiB")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
