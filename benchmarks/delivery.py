"""Delivery: the initial sync of a newly activated audience and real-time delivery latency, measured
in one run while the Events API takes a steady load.

One run, on this machine (the load generator and the receiver share the server's cores):
  - a `milepost serve` process on a store bulk-loaded with N users (default 1,000,000), each with a
    `customer_id`, all matching the audience "everyone" (`plan = bench`);
  - a load generator process sending `/v2/bulkevents` at a target rate (default 20,000 events/s:
    100 batches of 2 events per request) from 64 kept-alive connections (h11 over asyncio, as in
    benchmarks/ingest.py); one batch of each request is a new "probe" user whose event makes them
    enter the activated audience "probed", connected to a local webhook;
  - a receiver process (a local HTTP server answering 200) recording when each change arrives
    (synchronisation batches are counted, not parsed);
  - a few seconds into the load, the "everyone" audience is activated (connected to the receiver
    through a webhook with batches of 10,000, the most a webhook takes; `--sync-batch`): its first
    full calculation, then its initial sync.

Then the same audience size is activated again with no load, for comparison.

Printed: the achieved ingest rate (what the load generator really got accepted) and how far the
202s fell behind the requests' schedule (a server that keeps pace stays within its latency; one
that does not falls further behind as the run goes on), with the CPU the
server, the load generator and the receiver took meanwhile, the initial sync
rate (changes/s from the first to the last change received, target >= 50,000) and the time from
activation to the first change, and the latency from each probe request's 202 to the receiver
getting the probe user's add (p50/p99, target p99 <= 2 s), split at the moment the add entered
the outbox (evaluation, then delivery).

Usage: python benchmarks/delivery.py [--users N] [--rate EVENTS_PER_S] [--seconds S] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import orjson

from milepost.engines.duckdb import DuckDBStore

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.support.loadgen import send_at_rate
from tests.support.server import Server, free_port, init_data_dir

DAY = 86_400_000
PROBE_BASE = 50_000_000_000
EVERYONE = {"type": "user_attribute", "attribute": "plan", "op": "equals", "value": "bench"}
PROBED = {"type": "event", "event": {"event_type": "custom_event", "name": "bench_probe"}}


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(p / 100 * (len(s) - 1))))]


def verdict(ok: bool) -> str:
    return "met" if ok else "NOT met"


# ---- workload ------------------------------------------------------------------------------------


def bulk_load(store_dir: Path, users: int, input_id: int, now: int) -> float:
    """Users 1..N seen recently through the input, each with a customer_id; seconds taken."""
    t0 = time.perf_counter()
    store = DuckDBStore(store_dir)
    con = store.connect()
    con.execute("BEGIN TRANSACTION")
    con.execute(
        f"""INSERT INTO users SELECT u, {now - 30 * DAY}, {now - 30 * DAY},
            {now} - (hash(u) % {2 * DAY})::BIGINT, [{input_id}], json_object('plan', 'bench'), {now}
            FROM range(1, {users + 1}) t(u)"""
    )
    con.execute(
        f"""INSERT INTO identities SELECT 'customer_id', 'cust-' || u, u, 'cust-' || u, false, {now - 30 * DAY}
            FROM range(1, {users + 1}) t(u)"""
    )
    con.execute("COMMIT")
    store.close()
    return time.perf_counter() - t0


# ---- the receiver (its own process) --------------------------------------------------------------


def receiver_main(port: int, probe_audience: int) -> None:
    lock = threading.Lock()
    # per synced audience: [changes, first arrival ms, last arrival ms]
    state: dict[str, Any] = {"sync": {}, "probes": {}, "requests": 0}

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _reply(self, body: bytes) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            now = time.time() * 1000
            if self.path.endswith("/sync"):
                # A batch of one connection's adds: counted, not parsed (the receiver shares the cores).
                at = body.index(b'"audience_id":') + 14
                audience = int(body[at : body.index(b",", at)])
                with lock:
                    state["requests"] += 1
                    got = state["sync"].setdefault(audience, [0, now, now])
                    got[0] += body.count(b'"action":"add"')
                    got[2] = now
                self._reply(b"{}")
                return
            changes = orjson.loads(body)["changes"]
            with lock:
                state["requests"] += 1
                probes = state["probes"]
                for c in changes:
                    if c["audience_id"] == probe_audience:
                        probes.setdefault(c["mpid"], now)
            self._reply(b"{}")

        def do_GET(self) -> None:
            with lock:
                state["cpu_s"] = time.process_time()
                self._reply(orjson.dumps(state, option=orjson.OPT_NON_STR_KEYS))

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    server.serve_forever()


# ---- the load generator (its own process) ---------------------------------------------------------


def load_main(spec_path: str) -> None:
    """Requests at a steady rate from kept-alive connections (h11 over asyncio streams, like
    benchmarks/ingest.py), so the generator takes little of the cores it shares with the server."""
    spec = json.loads(Path(spec_path).read_text())
    rate, seconds, users = spec["rate"], spec["seconds"], spec["users"]
    batches, per_batch = 100, 2
    req_per_s = rate / (batches * per_batch)
    n_requests = int(seconds * req_per_s)
    rng = random.Random(7)
    records: list[list[float]] = []  # [probe mpid, sent ms, acked ms, status]
    ev = orjson.dumps(
        {"event_type": "custom_event", "data": {"event_name": "watch_content", "custom_event_type": "media"}}
    )
    events = b"[" + b",".join([ev] * per_batch) + b"]"

    def body(i: int, now: int) -> bytes:
        probe = orjson.dumps(
            {
                "event_type": "custom_event",
                "data": {
                    "event_name": "bench_probe",
                    "custom_event_type": "other",
                    "timestamp_unixtime_ms": now,
                },
            }
        )
        out = [
            b'{"environment":"production","mpid":%d,"events":[%s]}'
            % (PROBE_BASE + i, b",".join([probe] * per_batch))
        ]
        out += [
            b'{"environment":"production","mpid":%d,"events":%s}' % (1 + rng.randrange(users), events)
            for _ in range(batches - 1)
        ]
        return b"[" + b",".join(out) + b"]"

    def done(i: int, sent: float, acked: float, status: int) -> None:
        records.append([PROBE_BASE + i, sent * 1000, acked * 1000, status])

    start = asyncio.run(
        send_at_rate(
            spec["url"],
            spec["key"],
            spec["secret"],
            n_requests,
            req_per_s,
            lambda i, sent: body(i, int(sent * 1000)),
            done,
        )
    )
    out = {
        "records": records,
        "events_per_request": batches * per_batch,
        "cpu_s": time.process_time(),
        # when request i was due: start + i / req_per_s
        "start_ms": start * 1000,
        "interval_ms": 1000 / req_per_s,
    }
    Path(spec["out"]).write_text(json.dumps(out))


# ---- the run -------------------------------------------------------------------------------------


def create_catalog(data_dir: Path, receiver: str, sync_batch: int) -> dict[str, int]:
    """The two journeys and outputs; the probe audience activated and calculated before serving."""
    from milepost.config import Config
    from milepost.runtime import Runtime

    rt = Runtime.open(Config.from_env(data_dir))
    try:
        cat = rt.catalog
        svc = rt.journeys
        every = cat.create_journey("Bench sync", None)
        svc._add_children(every.id, None, [{"name": "everyone", "criteria": EVERYONE}])
        idle = cat.create_journey("Bench sync without load", None)
        svc._add_children(idle.id, None, [{"name": "everyone", "criteria": EVERYONE}])
        probe = cat.create_journey("Bench probe", None)
        svc._add_children(probe.id, None, [{"name": "probed", "criteria": PROBED}])
        sync_out = cat.create_output(
            "webhook", "sync", {"url": receiver + "/sync", "secret": "bench", "batch_size": sync_batch}
        )
        probe_out = cat.create_output(
            "webhook", "probe", {"url": receiver, "secret": "bench", "batch_size": 100}
        )
        everyone = cat.milestones(every.id)[0].audience_id
        probed = cat.milestones(probe.id)[0].audience_id
        probe_conn = cat.create_connection(probed, probe_out.id)
        svc.refresh()
        return {
            "probe_connection": probe_conn.id,
            "everyone": everyone,
            "everyone_idle": cat.milestones(idle.id)[0].audience_id,
            "probed": probed,
            "sync_output": sync_out.id,
        }
    finally:
        rt.close()


def wait_synced(receiver_url: str, audience: int, users: int, timeout_s: float) -> None:
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        got = httpx.get(receiver_url, timeout=10).json()["sync"].get(str(audience))
        if got and got[0] >= users:
            return
        time.sleep(0.5)


def wait_delivered(admin: httpx.Client, connection_id: int, timeout_s: float) -> None:
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        if admin.get(f"/api/v1/connections/{connection_id}").json()["delivery"]["pending"] == 0:
            return
        time.sleep(0.5)


def proc_cpu(pid: int) -> float:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(stat[11]) + int(stat[12])) / os.sysconf("SC_CLK_TCK")
    except OSError:
        return 0.0


def run(args: argparse.Namespace, workdir: Path) -> None:
    data_dir = workdir / "data"
    creds = init_data_dir(data_dir)
    now = int(time.time() * 1000)
    load_s = bulk_load(data_dir / "store", args.users, int(creds["input"]["id"]), now)
    print(f"bulk load: {args.users:,} users with a customer_id in {load_s:.1f} s", flush=True)

    receiver_port = free_port()
    receiver_url = f"http://127.0.0.1:{receiver_port}"
    ids = create_catalog(data_dir, receiver_url + "/hook", args.sync_batch)
    receiver = subprocess.Popen(
        [sys.executable, __file__, "--receiver", str(receiver_port), str(ids["probed"])]
    )
    env = {"MILEPOST_ALLOW_PRIVATE_OUTPUTS": "1", "MILEPOST_INPUT_RATE_LIMIT": "1000000000"}
    server = Server(data_dir, free_port(), env)
    load = None
    try:
        for _ in range(100):
            try:
                httpx.get(receiver_url, timeout=1)
                break
            except httpx.HTTPError:
                time.sleep(0.05)
        server.start(timeout=600)
        assert server.proc is not None
        admin = httpx.Client(
            base_url=server.url, headers={"Authorization": f"Bearer {creds['admin_token']}"}, timeout=60
        )
        spec = {
            "url": server.url,
            "key": creds["input"]["key"],
            "secret": creds["input"]["secret"],
            "rate": args.rate,
            "seconds": args.seconds,
            "users": args.users,
            "out": str(workdir / "load.json"),
        }
        (workdir / "load-spec.json").write_text(json.dumps(spec))
        cpu0, receiver_cpu0 = proc_cpu(server.proc.pid), proc_cpu(receiver.pid)
        load = subprocess.Popen([sys.executable, __file__, "--load", str(workdir / "load-spec.json")])
        time.sleep(args.activate_after)
        activated = time.time() * 1000
        resp = admin.post(
            f"/api/v1/audiences/{ids['everyone']}/connections", json={"output_id": ids["sync_output"]}
        )
        assert resp.status_code == 201, resp.text
        conn_id = resp.json()["id"]
        wait_synced(receiver_url, ids["everyone"], args.users, args.sync_timeout)
        sync_done = time.time() * 1000
        load.wait()
        server_cpu, receiver_cpu = proc_cpu(server.proc.pid) - cpu0, proc_cpu(receiver.pid) - receiver_cpu0
        # The last probes: evaluated (the engine may lag behind a heavy load), then delivered.
        sent_probes = sum(
            1 for r in json.loads((workdir / "load.json").read_text())["records"] if r[3] == 202
        )
        deadline = time.time() + 180
        while (
            time.time() < deadline and len(httpx.get(receiver_url, timeout=10).json()["probes"]) < sent_probes
        ):
            time.sleep(0.5)
        wait_delivered(admin, ids["probe_connection"], args.sync_timeout)
        stats = httpx.get(receiver_url, timeout=10).json()
        delivery = admin.get(f"/api/v1/connections/{conn_id}").json()["delivery"]
        # The same synchronisation with no load, for comparison.
        idle_activated = time.time() * 1000
        idle_cpu0, idle_receiver0 = proc_cpu(server.proc.pid), proc_cpu(receiver.pid)
        resp = admin.post(
            f"/api/v1/audiences/{ids['everyone_idle']}/connections", json={"output_id": ids["sync_output"]}
        )
        assert resp.status_code == 201, resp.text
        wait_synced(receiver_url, ids["everyone_idle"], args.users, args.sync_timeout)
        idle = httpx.get(receiver_url, timeout=10).json()["sync"].get(str(ids["everyone_idle"]))
        idle_cpu, idle_receiver = (
            proc_cpu(server.proc.pid) - idle_cpu0,
            proc_cpu(receiver.pid) - idle_receiver0,
        )
        admin.close()
    finally:
        if load is not None and load.poll() is None:
            load.kill()
        server.stop()
        receiver.terminate()
        receiver.wait()

    (workdir / "receiver.json").write_text(json.dumps(stats))
    # When each probe's add entered the outbox: splits the latency into evaluation and delivery.
    store = DuckDBStore(data_dir / "store")
    recorded = {
        int(m): int(t)
        for m, t in store.connect()
        .execute(
            "SELECT mpid, min(recorded_at) FROM membership_changes WHERE audience_id = ? AND action = 'add' "
            "GROUP BY mpid",
            [ids["probed"]],
        )
        .fetchall()
    }
    store.close()
    out = json.loads((workdir / "load.json").read_text())
    records = out["records"]
    ok = [r for r in records if r[3] == 202]
    span = (max(r[2] for r in ok) - min(r[1] for r in ok)) / 1000 if ok else float("nan")
    achieved = len(ok) * out["events_per_request"] / span if ok else 0.0
    probes = stats["probes"]
    latencies = [(probes[str(r[0])] - r[2]) / 1000 for r in ok if str(r[0]) in probes]
    missing = sum(1 for r in ok if str(r[0]) not in probes)
    during = [
        (probes[str(r[0])] - r[2]) / 1000
        for r in ok
        if str(r[0]) in probes and activated <= r[2] <= sync_done
    ]
    synced, sync_first, sync_last = stats["sync"].get(str(ids["everyone"]), [0, None, None])
    sync_s = (sync_last - sync_first) / 1000 if sync_first else float("nan")
    sync_rate = synced / sync_s if synced and sync_s > 0 else 0.0
    to_first = (sync_first - activated) / 1000 if sync_first else float("nan")
    p99 = pct(latencies, 99)

    print()
    print(
        f"load: {len(records)} requests of {out['events_per_request']} events, {len(records) - len(ok)} not 202"
    )
    print(f"  target {args.rate:,.0f} events/s; achieved {achieved:,.0f} events/s accepted over {span:.1f} s")
    # A server that keeps pace acknowledges each request within its latency of the moment it was
    # due; one that falls behind acknowledges ever later (the lag grows with the run).
    late = {
        r[0] - PROBE_BASE: (r[2] - out["start_ms"] - (r[0] - PROBE_BASE) * out["interval_ms"]) / 1000
        for r in ok
    }
    behind = sorted(late.values())
    final = max(s for i, s in late.items() if i >= 0.99 * len(records))
    print(
        f"  202s behind the requests' schedule: p50 {pct(behind, 50):.2f} s, p99 {pct(behind, 99):.2f} s, "
        f"last 1% of requests up to {final:.2f} s (kept pace with the target rate, within 1 s: "
        f"{verdict(final <= 1.0 and len(ok) == len(records))})"
    )
    load_cpu = out.get("cpu_s", float("nan"))
    cores = max(span, 1e-9)
    print(
        f"  CPU while the load ran: server {server_cpu:.1f} s ({server_cpu / cores:.2f} cores), "
        f"load generator {load_cpu:.1f} s ({load_cpu / cores:.2f}), partner receiver {receiver_cpu:.1f} s "
        f"({receiver_cpu / cores:.2f}), on {os.cpu_count()} cores"
    )
    print(f"initial sync of {args.users:,} members (webhook, batches of {args.sync_batch:,}):")
    print(f"  activation -> first change received: {to_first:.1f} s (first full calculation, then the sync)")
    print(
        f"  received {synced:,} changes in {sync_s:.1f} s = {sync_rate:,.0f} changes/s "
        f"(target >= 50,000: {verdict(sync_rate >= 50_000 and synced >= args.users)})"
    )
    print(
        f"  connection: sent {delivery['sent']:,}, pending {delivery['pending']:,}, failed {delivery['failed']}"
    )
    load_end = max(r[2] for r in records) if records else activated
    if sync_last:
        print(
            f"  the load ran until {(load_end - activated) / 1000:.1f} s after the activation; "
            f"the sync ended {(sync_last - activated) / 1000:.1f} s after it"
        )
    if idle:
        idle_s = (idle[2] - idle[1]) / 1000
        print(
            f"  the same sync with no load: {idle[0]:,} changes in {idle_s:.1f} s = "
            f"{idle[0] / max(idle_s, 1e-9):,.0f} changes/s; activation -> first change "
            f"{(idle[1] - idle_activated) / 1000:.1f} s"
        )
        print(
            f"  server CPU for it (first full calculation included): {idle_cpu:.1f} s "
            f"= {idle_cpu * 1e6 / max(idle[0], 1):.0f} µs per change; the receiver's: {idle_receiver:.1f} s"
        )
    print(
        f"latency 202 -> partner received the add ({len(latencies)} probes, {missing} not received 3 min after the load):"
    )
    print(
        f"  p50 {pct(latencies, 50):.2f} s, p90 {pct(latencies, 90):.2f} s, p99 {p99:.2f} s, max {max(latencies, default=float('nan')):.2f} s "
        f"(target p99 <= 2 s: {verdict(p99 <= 2.0 and missing == 0)})"
    )
    to_outbox = [(recorded[r[0]] - r[2]) / 1000 for r in ok if r[0] in recorded]
    to_partner = [
        (probes[str(m)] - t) / 1000 for m, t in recorded.items() if str(m) in probes and m >= PROBE_BASE
    ]
    print(
        f"  of which 202 -> the add in the outbox (evaluation): p50 {pct(to_outbox, 50):.2f} s, "
        f"p99 {pct(to_outbox, 99):.2f} s; outbox -> partner (delivery): p50 {pct(to_partner, 50):.2f} s, "
        f"p99 {pct(to_partner, 99):.2f} s"
    )
    if during:
        print(
            f"  while the initial sync ran ({len(during)} probes): p50 {pct(during, 50):.2f} s, p99 {pct(during, 99):.2f} s"
        )
    print(f"load average: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} {os.getloadavg()[2]:.2f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--users", type=int, default=1_000_000, help="members of the audience synced")
    ap.add_argument("--rate", type=float, default=20_000, help="target events/s of the load")
    ap.add_argument("--seconds", type=float, default=90, help="seconds of load")
    ap.add_argument("--activate-after", type=float, default=5, help="seconds of load before the activation")
    ap.add_argument("--sync-timeout", type=float, default=600)
    ap.add_argument(
        "--sync-batch", type=int, default=10_000, help="batch size of the synced connections (at most 10,000)"
    )
    ap.add_argument("--quick", action="store_true", help="50,000 users, 5,000 events/s, 20 s")
    ap.add_argument("--keep", action="store_true", help="keep the working directory")
    ap.add_argument("--receiver", nargs=2, help=argparse.SUPPRESS)
    ap.add_argument("--load", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.receiver:
        receiver_main(int(args.receiver[0]), int(args.receiver[1]))
        return
    if args.load:
        load_main(args.load)
        return
    if args.quick:
        args.users, args.rate, args.seconds, args.activate_after = 50_000, 5_000, 20, 3
    workdir = Path(tempfile.mkdtemp(prefix="milepost-delivery-"))
    try:
        run(args, workdir)
    finally:
        if args.keep:
            print(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
