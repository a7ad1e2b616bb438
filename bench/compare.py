"""pgqml side by side with procrastinate and pgqueuer, in one run on one PostgreSQL.

    pip install -e ".[bench]"        # the peers, asyncpg, uvloop, matplotlib
    python bench/compare.py --dsn postgresql://root@127.0.0.1/postgres

Each system gets a fresh database of its own (created, installed with its own
schema tool, dropped at the end) on the server --dsn points at. For each
system, in interleaved rounds (--rounds, median and min-max reported):

1. enqueue: --enqueue-jobs jobs one per committed transaction, then the same
   number in one call of the library's bulk API;
2. drain: --jobs pre-enqueued jobs with a no-op body, then with a 1 ms
   ``asyncio.sleep`` body, each under the library's default worker settings
   and under its tuned ones (see the "configurations" table of the report);
3. idle latency: --latency-jobs sequential enqueues (one commit each, the next
   sent once the previous job started), enqueue call to handler start;
4. latency under load: jobs enqueued in 10 ms ticks at half of that system's
   best measured drain rate for --load-seconds, enqueue call to handler start;
5. scale: the tuned no-op drain again with --scale-history finished jobs and
   --scale-scheduled jobs due tomorrow in the tables.

Workers run in their own processes, connected before the clock starts. A
drain is timed from the go signal until every job ran and the library's
tables show nothing waiting or running. Every handler records its job's key:
a run where a job is missing, ran twice, or failed is reported as FAILURE
instead of a number (exit status 1).

The raw-PostgreSQL ceiling runs in the same rounds: pgbench (or, without
pgbench, a psycopg loop) doing single-row INSERT transactions, one bulk INSERT
of --enqueue-jobs rows, and a batched ``DELETE ... WHERE id IN (SELECT ... FOR
UPDATE SKIP LOCKED LIMIT 100)`` claim on two connections.

Writes --results (JSON: every sample and the machine), the "Peers" section of
--markdown between its markers, and --plot (PNG), unless --no-write. With
--report-only, rebuilds the markdown and plot from --results without running.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import multiprocessing
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import psycopg
from _common import fresh_database
from _systems import SYSTEMS, System, WorkerConfig, quiet_libraries
from psycopg.conninfo import conninfo_to_dict

HERE = Path(__file__).resolve().parent
BEGIN, END = "<!-- compare.py: begin -->", "<!-- compare.py: end -->"
BODIES = ("noop", "sleep1ms")


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ----------------------------------------------------------------- worker processes


def _serve(
    system_name: str,
    dsn: str,
    options: dict[str, Any],
    body: str,
    slot: int,
    counts: Any,
    ready: Any,
    go: Any,
    stop: Any,
    out: Any,
    started: Any,
    use_uvloop: bool,
) -> None:
    """One worker process: connect, wait for go, work until stop, report what ran."""
    quiet_libraries()
    keys: list[int] = []
    starts: list[float] = []
    perf = time.perf_counter  # CLOCK_MONOTONIC: comparable across processes on Linux

    async def on_job(i: int) -> None:
        starts.append(perf())
        keys.append(i)
        if started is not None:
            started.send_bytes(b"s")
        if body == "sleep1ms":
            await asyncio.sleep(0.001)
        counts[slot] += 1

    async def main() -> None:
        loop = asyncio.get_running_loop()
        worker = SYSTEMS[system_name]().worker(dsn, options, on_job)
        error = None
        try:
            await worker.open()
            ready.release()
            await loop.run_in_executor(None, go.wait)
            task = asyncio.create_task(worker.run())
            stopper = loop.run_in_executor(None, stop.wait)
            await asyncio.wait([task, stopper], return_when=asyncio.FIRST_COMPLETED)
            if task.done():
                task.result()
                error = "the worker stopped by itself"
            worker.stop()
            await asyncio.wait_for(task, 60)
        except BaseException as exc:  # reported to the parent, which prints it
            error = f"{type(exc).__name__}: {exc}"
        finally:
            with contextlib.suppress(Exception):
                await worker.close()
        out.put((slot, keys, starts, error))

    if use_uvloop:
        import uvloop

        uvloop.run(main())
    else:
        asyncio.run(main())


class WorkerGroup:
    """``config.processes`` worker processes of one system, started connected and idle."""

    def __init__(
        self,
        args: argparse.Namespace,
        system: System,
        dsn: str,
        config: WorkerConfig,
        body: str,
        *,
        signal_starts: bool = False,
    ) -> None:
        """``signal_starts``: each job start also writes a byte to ``self.reader``."""
        self.mp = multiprocessing.get_context("spawn")
        self.n = config.processes
        self.counts = self.mp.Array("q", self.n, lock=False)
        self.ready, self.go, self.stop_ev = self.mp.Semaphore(0), self.mp.Event(), self.mp.Event()
        self.out = self.mp.Queue()
        self.reader, writer = self.mp.Pipe(duplex=False)
        self.procs = [
            self.mp.Process(
                target=_serve,
                args=(
                    system.name,
                    dsn,
                    config.options,
                    body,
                    k,
                    self.counts,
                    self.ready,
                    self.go,
                    self.stop_ev,
                    self.out,
                    writer if signal_starts else None,
                    args.loop == "uvloop",
                ),
                daemon=True,
            )
            for k in range(self.n)
        ]
        for p in self.procs:
            p.start()
        writer.close()
        for _ in self.procs:
            if not self.ready.acquire(timeout=120):
                self.kill()
                raise RuntimeError(f"a {system.name} worker process did not start")

    def start(self) -> float:
        t0 = time.perf_counter()
        self.go.set()
        return t0

    def done(self) -> int:
        return sum(self.counts)

    def alive(self) -> bool:
        return all(p.is_alive() for p in self.procs)

    def collect(self) -> tuple[list[int], list[float], list[str]]:
        """Stop every process; their keys and start times, and any error they reported."""
        self.stop_ev.set()
        keys: list[int] = []
        starts: list[float] = []
        errors: list[str] = []
        for _ in self.procs:
            try:
                _, k, s, err = self.out.get(timeout=120)
            except Exception:
                errors.append("a worker process did not report back")
                continue
            keys += k
            starts += s
            if err:
                errors.append(err)
        self.kill()
        return keys, starts, errors

    def kill(self) -> None:
        for p in self.procs:
            p.join(timeout=10)
            if p.is_alive():
                p.kill()
                p.join()
        self.reader.close()


def check_keys(keys: list[int], expected: range) -> str | None:
    """None when every expected key ran exactly once (keys outside the range are ignored)."""
    ran = Counter(k for k in keys if k in expected)
    missing = len(expected) - len(ran)
    twice = sum(1 for c in ran.values() if c > 1)
    if missing or twice:
        return f"{missing:,} of {len(expected):,} jobs never ran, {twice:,} ran more than once"
    return None


# ----------------------------------------------------------------------- scenarios


class Bench:
    """One system's database, client and scenarios."""

    def __init__(self, args: argparse.Namespace, system: System, dsn: str) -> None:
        self.args, self.system, self.dsn = args, system, dsn
        self.conn = psycopg.connect(dsn, autocommit=True)
        self.conn.execute("SET enable_seqscan = off")  # progress probes never read backlogs

    def vacuum(self) -> None:
        with psycopg.connect(self.dsn, autocommit=True) as c:
            c.execute("VACUUM ANALYZE")

    async def enqueue(self, bulk: bool) -> tuple[float | None, str | None]:
        n = self.args.enqueue_jobs
        mark = self.system.mark(self.conn)
        client = self.system.client(self.dsn)
        await client.open()
        try:
            t0 = time.perf_counter()
            if bulk:
                await client.enqueue_bulk(list(range(n)))
            else:
                for i in range(n):
                    await client.enqueue_one(i)
            elapsed = time.perf_counter() - t0
        finally:
            await client.close()
        got = self.system.mark(self.conn) - mark
        self.system.cleanup(self.conn, mark)
        self.vacuum()
        if got != n:
            return None, f"{got:,} jobs written of {n:,}"
        return n / elapsed, None

    async def prefill(self, n: int) -> None:
        client = self.system.client(self.dsn)
        await client.open()
        try:
            for start in range(0, n, 10_000):
                await client.enqueue_bulk(list(range(start, min(n, start + 10_000))))
        finally:
            await client.close()
        self.vacuum()

    async def wait_drained(self, group: WorkerGroup, n: int, mark: int, t0: float) -> None:
        deadline = t0 + self.args.timeout
        last = time.perf_counter()
        while group.done() < n:
            await asyncio.sleep(0.005)
            now = time.perf_counter()
            if now > deadline:
                done = group.done()
                raise TimeoutError(
                    f"only {done:,} of {n:,} ran within {self.args.timeout:g} s "
                    f"({done / self.args.timeout:,.0f} jobs/s)"
                )
            if not group.alive():
                raise RuntimeError("a worker process died")
            if now - last > 15:
                last = now
                log(f"    {now - t0:.0f} s: {group.done():,} of {n:,} jobs ran")
        while self.system.unfinished(self.conn, mark):
            await asyncio.sleep(0.005)
            if time.perf_counter() > deadline:
                raise TimeoutError("jobs ran but were never marked finished")

    async def drain(self, config: WorkerConfig, body: str) -> tuple[float | None, str | None]:
        n = self.args.jobs
        mark = self.system.mark(self.conn)
        await self.prefill(n)
        group = WorkerGroup(self.args, self.system, self.dsn, config, body)
        err = None
        try:
            t0 = group.start()
            await self.wait_drained(group, n, mark, t0)
            elapsed = time.perf_counter() - t0
        except (TimeoutError, RuntimeError) as exc:
            err = str(exc)
        keys, _, errors = group.collect()
        err = err or check_keys(keys, range(n)) or "; ".join(errors) or None
        if not err and (f := self.system.failures(self.conn, mark)):
            err = f"{f:,} jobs failed or were retried"
        self.system.cleanup(self.conn, mark)
        self.vacuum()
        return (None, err) if err else (n / elapsed, None)

    async def latency(self, rate: float | None) -> tuple[dict[str, float] | None, str | None]:
        """Idle (rate None: one job at a time) or under load (``rate`` jobs/s in 10 ms ticks)."""
        args = self.args
        mark = self.system.mark(self.conn)
        tuned = self.system.configs["tuned"]
        group = WorkerGroup(args, self.system, self.dsn, tuned, "noop", signal_starts=rate is None)
        client = self.system.client(self.dsn)
        await client.open()
        sent_at: dict[int, float] = {}
        loop = asyncio.get_running_loop()
        err = None
        try:
            group.start()
            warm = 20
            for i in range(10**9, 10**9 + warm):  # warm-up jobs, not measured
                await client.enqueue_one(i)
                deadline = time.perf_counter() + 10
                while group.done() <= i - 10**9:
                    if time.perf_counter() > deadline:
                        raise TimeoutError("a warm-up job did not run within 10 s")
                    await asyncio.sleep(0.001)
            if rate is None:
                while group.reader.poll():  # the warm-up jobs' start signals
                    group.reader.recv_bytes()
            t_start = time.perf_counter()
            if rate is None:
                for i in range(args.latency_jobs):
                    sent_at[i] = time.perf_counter()
                    await client.enqueue_one(i)
                    if not await loop.run_in_executor(None, group.reader.poll, 10.0):
                        raise TimeoutError(f"job {i} did not start within 10 s")
                    group.reader.recv_bytes()
            else:
                tick, sent, ticks = 0.01, 0, 0
                while (now := time.perf_counter()) - t_start < args.load_seconds:
                    due = int(rate * (now - t_start + tick)) - sent
                    if due > 0:
                        keys = list(range(sent, sent + due))
                        t = time.perf_counter()
                        await client.enqueue_bulk(keys)
                        sent_at.update(dict.fromkeys(keys, t))
                        sent += due
                    ticks += 1
                    await asyncio.sleep(max(0.0, t_start + ticks * tick - time.perf_counter()))
            await self.wait_drained(group, warm + len(sent_at), mark, t_start)
            elapsed = time.perf_counter() - t_start
        except (TimeoutError, RuntimeError) as exc:
            err = str(exc)
        finally:
            await client.close()
        keys, starts, errors = group.collect()
        err = err or check_keys(keys, range(len(sent_at))) or "; ".join(errors) or None
        if not err and (f := self.system.failures(self.conn, mark)):
            err = f"{f:,} jobs failed or were retried"
        self.system.cleanup(self.conn, mark)
        self.vacuum()
        if err:
            return None, err
        lat = sorted(
            1000 * (s - sent_at[k]) for k, s in zip(keys, starts, strict=True) if k in sent_at
        )
        out = {
            "p50": pct(lat, 50),
            "p95": pct(lat, 95),
            "p99": pct(lat, 99),
            "max": lat[-1],
            "rate": len(sent_at) / (elapsed if rate is None else args.load_seconds),
        }
        return out, None

    def close(self) -> None:
        self.conn.close()


def pct(sorted_values: list[float], p: float) -> float:
    """Nearest-rank percentile."""
    k = max(0, min(len(sorted_values) - 1, math.ceil(p / 100 * len(sorted_values)) - 1))
    return sorted_values[k]


# ----------------------------------------------------------------- raw ceiling


class RawCeiling:
    """What this PostgreSQL does with no queue library: pgbench, else psycopg loops."""

    def __init__(self, args: argparse.Namespace, dsn: str) -> None:
        self.args, self.dsn = args, dsn
        self.pgbench = shutil.which("pgbench") or next(
            iter(sorted(Path("/usr/lib/postgresql").glob("*/bin/pgbench"), reverse=True)), None
        )
        with psycopg.connect(dsn, autocommit=True) as c:
            c.execute(
                "CREATE TABLE raw_jobs (id bigserial PRIMARY KEY, payload jsonb NOT NULL,"
                " run_at timestamptz NOT NULL DEFAULT now())"
            )
        self.tool = "pgbench" if self.pgbench else "psycopg loop (pgbench not found)"

    def _pgbench(self, script: str, clients: int, transactions: int) -> float:
        assert self.pgbench is not None
        with tempfile.NamedTemporaryFile("w", suffix=".sql", delete=False) as f:
            f.write(script)
        try:
            res = subprocess.run(
                [
                    str(self.pgbench),
                    "-n",
                    "-c",
                    str(clients),
                    "-j",
                    str(clients),
                    "-t",
                    str(transactions),
                    "-f",
                    f.name,
                    self.dsn,
                ],
                capture_output=True,
                text=True,
                check=True,
            )
        finally:
            os.unlink(f.name)
        m = re.search(r"tps = ([0-9.]+) \(without initial connection time\)", res.stdout)
        if not m:
            raise RuntimeError(f"pgbench printed no tps: {res.stdout[-500:]}")
        return float(m.group(1))

    def insert(self) -> float:
        n = self.args.enqueue_jobs
        q = "INSERT INTO raw_jobs (payload) VALUES ('{\"i\": 1}');"
        if self.pgbench:
            rate = self._pgbench(q + "\n", 1, n)
        else:
            with psycopg.connect(self.dsn, autocommit=True) as c:
                t0 = time.perf_counter()
                for _ in range(n):
                    c.execute(q)
                rate = n / (time.perf_counter() - t0)
        self._truncate()
        return rate

    def bulk(self) -> float:
        n = self.args.enqueue_jobs
        q = (
            "INSERT INTO raw_jobs (payload) SELECT jsonb_build_object('i', g)"
            f" FROM generate_series(1, {n}) g;"
        )
        if self.pgbench:
            rate = n * self._pgbench(q + "\n", 1, 3)
        else:
            with psycopg.connect(self.dsn, autocommit=True) as c:
                t0 = time.perf_counter()
                c.execute(q)
                rate = n / (time.perf_counter() - t0)
        self._truncate()
        return rate

    def claim(self) -> float:
        n, batch, clients = self.args.jobs, 100, 2
        with psycopg.connect(self.dsn, autocommit=True) as c:
            c.execute(
                "INSERT INTO raw_jobs (payload) SELECT jsonb_build_object('i', g)"
                " FROM generate_series(1, %s) g",
                (n,),
            )
            c.execute("VACUUM ANALYZE raw_jobs")
        q = (
            "DELETE FROM raw_jobs WHERE id IN (SELECT id FROM raw_jobs ORDER BY id"
            f" LIMIT {batch} FOR UPDATE SKIP LOCKED);"
        )
        if self.pgbench:
            rate = batch * self._pgbench(q + "\n", clients, n // batch // clients)
        else:
            with psycopg.connect(self.dsn, autocommit=True) as c:
                t0 = time.perf_counter()
                while c.execute(q).rowcount:
                    pass
                rate = n / (time.perf_counter() - t0)
        self._truncate()
        return rate

    def _truncate(self) -> None:
        with psycopg.connect(self.dsn, autocommit=True) as c:
            c.execute("TRUNCATE raw_jobs")
            c.execute("VACUUM ANALYZE raw_jobs")


# ------------------------------------------------------------------------ the run


Samples = dict[str, list[Any]]


def record(samples: Samples, key: str, value: Any, err: str | None, what: str) -> None:
    samples.setdefault(key, []).append({"value": value, "error": err})
    if err:
        log(f"  {what}: FAILURE ({err})")
    elif isinstance(value, dict):
        log(
            f"  {what}: p50 {value['p50']:.2f} ms, p95 {value['p95']:.2f}, "
            f"p99 {value['p99']:.2f}, max {value['max']:.2f} at {value['rate']:,.0f} jobs/s"
        )
    else:
        log(f"  {what}: {value:,.0f} jobs/s")


async def run(args: argparse.Namespace, dsns: dict[str, str]) -> Samples:
    samples: Samples = {}
    systems = [SYSTEMS[name]() for name in args.systems]
    benches = {s.name: Bench(args, s, dsns[s.name]) for s in systems}
    raw = RawCeiling(args, dsns["raw"]) if "raw" in dsns else None
    args.raw_tool = raw.tool if raw else None
    rounds = range(1, args.rounds + 1)
    try:
        if "enqueue" in args.scenarios:
            for r in rounds:
                log(f"enqueue, round {r}/{args.rounds}")
                if raw:
                    record(samples, "raw/insert", raw.insert(), None, "raw single-row INSERT")
                    record(samples, "raw/bulk", raw.bulk(), None, "raw bulk INSERT")
                for s in systems:
                    for bulk, key in ((False, "enqueue_single"), (True, "enqueue_bulk")):
                        v, e = await benches[s.name].enqueue(bulk)
                        record(samples, f"{s.name}/{key}", v, e, f"{s.name} {key}")
        if "drain" in args.scenarios:
            for r in rounds:
                log(f"drain {args.jobs:,} jobs, round {r}/{args.rounds}")
                if raw:
                    record(samples, "raw/claim", raw.claim(), None, "raw SKIP LOCKED claim+delete")
                for body in args.bodies:
                    for s in systems:
                        for label in [c for c in s.configs if c in args.configs]:
                            v, e = await benches[s.name].drain(s.configs[label], body)
                            record(
                                samples,
                                f"{s.name}/drain/{label}/{body}",
                                v,
                                e,
                                f"{s.name} drain {label} {body}",
                            )
        if "latency" in args.scenarios:
            for r in rounds:
                log(f"idle latency, {args.latency_jobs:,} sequential jobs, round {r}/{args.rounds}")
                for s in systems:
                    v, e = await benches[s.name].latency(None)
                    record(samples, f"{s.name}/latency/idle", v, e, f"{s.name} idle latency")
        if "load" in args.scenarios:
            for s in systems:
                best = median_ok(samples.get(f"{s.name}/drain/tuned/noop", []))
                if best is None:
                    log(f"  {s.name}: no drain figure, so no latency under load")
                    continue
                samples.setdefault(f"{s.name}/latency/load_target", []).append(
                    {"value": best / 2, "error": None}
                )
            for r in rounds:
                log(f"latency under load ({args.load_seconds:g} s each), round {r}/{args.rounds}")
                for s in systems:
                    target = samples.get(f"{s.name}/latency/load_target")
                    if target:
                        v, e = await benches[s.name].latency(target[0]["value"])
                        record(
                            samples,
                            f"{s.name}/latency/load",
                            v,
                            e,
                            f"{s.name} latency at {target[0]['value']:,.0f} jobs/s",
                        )
        if "scale" in args.scenarios:
            h, sch = args.scale_history, args.scale_scheduled
            for s in systems:
                log(f"{s.name}: filling {h:,} finished and {sch:,} scheduled rows")
                t0 = time.perf_counter()
                with benches[s.name].conn.transaction():
                    s.fill(benches[s.name].conn, h, sch)
                benches[s.name].vacuum()
                log(f"  filled in {time.perf_counter() - t0:.0f} s")
            for r in rounds:
                log(f"scale drain, round {r}/{args.rounds}")
                for s in systems:
                    v, e = await benches[s.name].drain(s.configs["tuned"], "noop")
                    record(samples, f"{s.name}/scale/tuned/noop", v, e, f"{s.name} scale drain")
    finally:
        for b in benches.values():
            b.close()
    return samples


def median_ok(runs: list[dict[str, Any]]) -> float | None:
    ok = [r["value"] for r in runs if not r["error"]]
    return statistics.median(ok) if ok and len(ok) == len(runs) else None


# ---------------------------------------------------------------------- machine


def machine(admin_dsn: str, args: argparse.Namespace) -> dict[str, Any]:
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = "unknown"
    with contextlib.suppress(OSError):
        kb = int(Path("/proc/meminfo").read_text().split()[1])
        mem = f"{kb / 1024**2:.0f} GiB"
    with psycopg.connect(admin_dsn) as c:
        server_version = c.execute("SHOW server_version").fetchone()[0]  # type: ignore[index]
        settings = c.execute(
            "SELECT name, setting, unit FROM pg_settings WHERE setting IS DISTINCT FROM boot_val"
            " AND source NOT IN ('default', 'override', 'client', 'session')"
            " AND name NOT LIKE 'lc\\_%%' AND name NOT IN ('application_name',"
            " 'config_file', 'data_directory', 'hba_file', 'ident_file', 'external_pid_file',"
            " 'cluster_name', 'unix_socket_directories', 'ssl_cert_file', 'ssl_key_file',"
            " 'log_line_prefix', 'log_timezone', 'TimeZone', 'DateStyle', 'listen_addresses',"
            " 'dynamic_shared_memory_type', 'port', 'ssl',"
            " 'default_text_search_config') ORDER BY name"
        ).fetchall()
        durable = c.execute(
            "SELECT current_setting('fsync'), current_setting('synchronous_commit'),"
            " current_setting('shared_buffers')"
        ).fetchone()
    versions: dict[str, str] = {}
    for name in args.systems:
        versions.update(SYSTEMS[name]().versions())
    from importlib.metadata import version

    for dist in ("psycopg", "psycopg-pool", "uvloop"):
        with contextlib.suppress(Exception):
            versions[dist] = version(dist)
    host = conninfo_to_dict(admin_dsn).get("host", "local socket")
    return {
        "date": time.strftime("%Y-%m-%d %H:%M %Z"),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "ram": mem,
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "postgres": server_version,
        "postgres_host": host,
        "durability": dict(
            zip(("fsync", "synchronous_commit", "shared_buffers"), durable or (), strict=False)
        ),
        "settings": [f"{n}={s}{u or ''}" for n, s, u in settings],
        "versions": versions,
        "loop": args.loop,
        "raw_tool": args.raw_tool,
    }


# ------------------------------------------------------------------------ report


def fmt_rate(runs: list[dict[str, Any]] | None) -> tuple[str, float | None]:
    if not runs:
        return "—", None
    errors = [r["error"] for r in runs if r["error"]]
    if errors:
        return f"FAILURE: {errors[0]}", None
    vals = [r["value"] for r in runs]
    med = statistics.median(vals)
    return f"{med:,.0f} ({min(vals):,.0f}–{max(vals):,.0f})", med


def fmt_lat(runs: list[dict[str, Any]] | None, field: str) -> tuple[str, float | None]:
    if not runs:
        return "—", None
    errors = [r["error"] for r in runs if r["error"]]
    if errors:
        return f"FAILURE: {errors[0]}", None
    vals = [r["value"][field] for r in runs]
    med = statistics.median(vals)
    return f"{med:.2f} ({min(vals):.2f}–{max(vals):.2f})", med


def ratio(a: float | None, b: float | None, lower_is_better: bool = False) -> str:
    if a is None or b is None or not a or not b:
        return "—"
    r = b / a if lower_is_better else a / b
    return f"{r:.2f}×"


THROUGHPUT_ROWS = [
    ("enqueue, one job per transaction", "enqueue_single", "raw/insert"),
    ("enqueue, bulk API, one call", "enqueue_bulk", "raw/bulk"),
    ("drain, default settings, no-op", "drain/default/noop", "raw/claim"),
    ("drain, documented setup, no-op", "drain/documented/noop", "raw/claim"),
    ("drain, tuned, no-op", "drain/tuned/noop", "raw/claim"),
    ("drain, default settings, 1 ms sleep", "drain/default/sleep1ms", None),
    ("drain, documented setup, 1 ms sleep", "drain/documented/sleep1ms", None),
    ("drain, tuned, 1 ms sleep", "drain/tuned/sleep1ms", None),
    ("drain, tuned, no-op, with the big backlog", "scale/tuned/noop", "raw/claim"),
]
PLOT_LABELS = {
    "enqueue_single": "enqueue\n1 per txn",
    "enqueue_bulk": "enqueue\nbulk",
    "drain/default/noop": "drain no-op\ndefault",
    "drain/documented/noop": "drain no-op\ndocumented",
    "drain/tuned/noop": "drain no-op\ntuned",
    "drain/default/sleep1ms": "drain 1 ms\ndefault",
    "drain/documented/sleep1ms": "drain 1 ms\ndocumented",
    "drain/tuned/sleep1ms": "drain 1 ms\ntuned",
    "scale/tuned/noop": "drain no-op\nbig backlog",
}


def runs_for(results: dict[str, Any], system: str, key: str) -> list[dict[str, Any]] | None:
    """A system's samples for a row; "documented" falls back to "tuned" when they are one."""
    s = results["samples"]
    runs = s.get(f"{system}/{key}")
    if not runs and "/documented/" in key and not results["configs"][system]["documented"]:
        runs = s.get(f"{system}/{key.replace('/documented/', '/tuned/')}")
    return runs


def report(results: dict[str, Any]) -> str:
    s, m, a = results["samples"], results["machine"], results["args"]
    systems = a["systems"]
    peers = [x for x in systems if x != "pgqml"]
    out: list[str] = []
    w = out.append
    w(BEGIN)
    w("## Side by side with procrastinate and pgqueuer (issue 4)")
    w("")
    w("Generated by `bench/compare.py`; do not edit by hand. Command:")
    w("")
    w(f"    {results['command']}")
    w("")
    w(
        f"Run {m['date']} on {m['cpu']} ({m['cores']} cores), {m['ram']} RAM, {m['os']}; "
        f"PostgreSQL {m['postgres']} on {m['postgres_host']} (same machine as the workers), "
        f"fsync={m['durability'].get('fsync')}, "
        f"synchronous_commit={m['durability'].get('synchronous_commit')}, "
        f"shared_buffers={m['durability'].get('shared_buffers')}; "
        f"non-default server settings: {', '.join(m['settings']) or 'none'}. "
        f"Python {m['python']}, event loop {m['loop']} for every system; "
        + ", ".join(f"{k} {v}" for k, v in m["versions"].items())
        + f". Raw ceiling: {m['raw_tool'] or 'not run'}."
    )
    w("")
    w(
        f"Each figure is the median of {a['rounds']} interleaved rounds with the min–max in "
        "brackets; each system has a fresh database of its own on the same server. Drains are "
        f"{a['jobs']:,} jobs, enqueues {a['enqueue_jobs']:,}; the scale drain runs with "
        f"{a['scale_history']:,} finished and {a['scale_scheduled']:,} future-scheduled jobs in "
        "the tables. Every job's execution is counted by key: a run where a job is missing, "
        "ran twice, or failed shows FAILURE instead of a number. The machine is shared and "
        "noisy: read the ratios, which come from the same run."
    )
    w("")
    w("### Throughput (jobs/s)")
    w("")
    head = "| scenario | " + " | ".join(systems + [f"pgqml / {p}" for p in peers])
    head += " | raw PostgreSQL | pgqml / raw |" if "pgqml" in systems else " | raw PostgreSQL |"
    w(head)
    w("|---" + "|---:" * (head.count("|") - 2) + "|")
    for title, key, raw_key in THROUGHPUT_ROWS:
        cells, meds = [], {}
        for x in systems:
            txt, meds[x] = fmt_rate(runs_for(results, x, key))
            cells.append(txt)
        ratios = [ratio(meds.get("pgqml"), meds.get(p)) for p in peers]
        raw_txt, raw_med = fmt_rate(s.get(raw_key)) if raw_key else ("—", None)
        row = f"| {title} | " + " | ".join(cells + ratios) + f" | {raw_txt} |"
        if "pgqml" in systems:
            row += f" {ratio(meds.get('pgqml'), raw_med)} |"
        w(row)
    w("")
    w(
        "Raw PostgreSQL: single-row INSERT transactions on one connection; one "
        f"`INSERT ... SELECT generate_series` of {a['enqueue_jobs']:,} rows; "
        "`DELETE ... WHERE id IN (SELECT ... ORDER BY id LIMIT 100 FOR UPDATE SKIP LOCKED)` "
        "on two connections (claim and finish in one statement, nothing kept)."
    )
    w("")
    w("### Latency, enqueue call to handler start (ms)")
    w("")
    head = "| scenario | system | jobs/s | p50 | p95 | p99 | max |"
    w(head)
    w("|---|---|---:|---:|---:|---:|---:|")
    for title, key in (("idle, one at a time", "idle"), ("under load, 50% of max", "load")):
        for x in systems:
            runs = s.get(f"{x}/latency/{key}")
            if not runs:
                continue
            rate_txt = "—"
            ok = [r["value"]["rate"] for r in runs if not r["error"]]
            if ok:
                rate_txt = f"{statistics.median(ok):,.0f}"
            cells = [fmt_lat(runs, f)[0] for f in ("p50", "p95", "p99", "max")]
            w(f"| {title} | {x} | {rate_txt} | " + " | ".join(cells) + " |")
    w("")
    w(
        f"Idle: {a['latency_jobs']:,} jobs, each enqueued in its own transaction once the "
        "previous one started (after 20 warm-up jobs), timed from just before the enqueue call "
        "to the first line of the handler, in the workers' tuned configuration. Under load: "
        f"for {a['load_seconds']:g} s, jobs enqueued through the bulk API every 10 ms at half of "
        "the system's median tuned no-op drain rate above."
    )
    w("")
    w("### Configurations")
    w("")
    w("| system | default | documented setup | tuned | where these come from |")
    w("|---|---|---|---|---|")
    for x in systems:
        c = results["configs"][x]
        doc = c["documented"] or "the tuned one"
        w(f"| {x} | {c['default']} | {doc} | {c['tuned']} | {c['note']} |")
    w("")
    w("### Targets")
    w("")
    for line in targets(s, systems):
        w(f"* {line}")
    w("")
    if results.get("plot"):
        w(f"![throughput and latency per system]({results['plot']})")
        w("")
    w(END)
    return "\n".join(out)


def best(s: Samples, system: str, keys: list[str]) -> float | None:
    vals = [median_ok(s.get(f"{system}/{k}", [])) for k in keys]
    ok = [v for v in vals if v is not None]
    return max(ok) if ok else None


def targets(s: Samples, systems: list[str]) -> list[str]:
    if "pgqml" not in systems:
        return ["pgqml not measured"]
    lines = []
    drains = ["drain/default/noop", "drain/documented/noop", "drain/tuned/noop"]
    mine = best(s, "pgqml", drains)

    def verdict(ok: bool) -> str:
        return "**met**" if ok else "**not met**"

    for peer, want in (("pgqueuer", 3.0), ("procrastinate", 20.0)):
        if peer in systems:
            theirs = best(s, peer, drains)
            if mine and theirs:
                r = mine / theirs
                lines.append(
                    f"best no-op drain ≥ {want:g}× {peer}'s best: {r:.2f}× "
                    f"({mine:,.0f} against {theirs:,.0f} jobs/s) — {verdict(r >= want)}"
                )
    if "pgqueuer" in systems:
        a_, b_ = (
            median_ok(s.get("pgqml/enqueue_bulk", [])),
            median_ok(s.get("pgqueuer/enqueue_bulk", [])),
        )
        if a_ and b_:
            lines.append(f"bulk enqueue ≥ 4× pgqueuer's: {a_ / b_:.2f}× — {verdict(a_ / b_ >= 4)}")
    for field in ("p50", "p99"):
        mine_l = lat_median(s, "pgqml", "idle", field)
        others = {p: lat_median(s, p, "idle", field) for p in systems if p != "pgqml"}
        if mine_l is not None and all(v is not None for v in others.values()) and others:
            ok = all(mine_l < v for v in others.values() if v is not None)
            lines.append(
                f"idle latency {field} below every peer: pgqml {mine_l:.2f} ms, "
                + ", ".join(f"{p} {v:.2f} ms" for p, v in others.items())
                + f" — {verdict(ok)}"
            )
    beaten = []
    for _title, key, _ in THROUGHPUT_ROWS:
        mine_v = median_ok(s.get(f"pgqml/{key}", []))
        for p in systems:
            theirs = median_ok(s.get(f"{p}/{key}", []))
            if p != "pgqml" and mine_v and theirs and theirs > mine_v:
                beaten.append(f"{p} on {key} ({theirs:,.0f} against {mine_v:,.0f} jobs/s)")
    for key in ("idle", "load"):
        for field in ("p50", "p99"):
            mine_l = lat_median(s, "pgqml", key, field)
            for p in systems:
                theirs_l = lat_median(s, p, key, field)
                if (
                    p != "pgqml"
                    and mine_l is not None
                    and theirs_l is not None
                    and theirs_l < mine_l
                ):
                    beaten.append(
                        f"{p} on {key} latency {field} ({theirs_l:.2f} against {mine_l:.2f} ms)"
                    )
    lines.append("scenarios where a peer beats pgqml: " + ("; ".join(beaten) if beaten else "none"))
    return lines


def lat_median(s: Samples, system: str, key: str, field: str) -> float | None:
    runs = s.get(f"{system}/latency/{key}", [])
    if not runs or any(r["error"] for r in runs):
        return None
    return statistics.median(r["value"][field] for r in runs)


def plot(results: dict[str, Any], path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log("matplotlib is not installed (pip install -e '.[bench]'): no plot")
        return False
    s, systems, m = results["samples"], results["args"]["systems"], results["machine"]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(15, 5.5), gridspec_kw={"width_ratios": [3, 2]})
    keys = [k for _, k, _ in THROUGHPUT_ROWS]
    width = 0.8 / len(systems)
    positive = [v for x in systems for k in keys if (v := median_ok(runs_for(results, x, k) or []))]
    bottom = min(positive, default=1.0) / 2
    for j, x in enumerate(systems):
        runs = [runs_for(results, x, k) or [] for k in keys]
        vals = [median_ok(r) or 0 for r in runs]
        xs = [i + j * width for i in range(len(keys))]
        bars = ax1.bar(xs, vals, width, label=x)
        ax1.bar_label(
            bars, labels=[f"{v:,.0f}" if v else "" for v in vals], fontsize=6, rotation=90
        )
        for xpos, v, rr in zip(xs, vals, runs, strict=True):
            if not v and any(r["error"] for r in rr):
                ax1.text(xpos, bottom * 1.1, "FAILED", rotation=90, fontsize=6, ha="center")
    ax1.set_ylim(bottom=bottom, top=max(positive, default=10.0) * 8)  # room for the legend
    ax1.set_xticks([i + width * (len(systems) - 1) / 2 for i in range(len(keys))])
    ax1.set_xticklabels([PLOT_LABELS[k] for k in keys], fontsize=7)
    ax1.set_yscale("log")
    ax1.set_ylabel("jobs/s (log scale, higher is better)")
    ax1.set_title("Throughput, median of rounds")
    ax1.legend(loc="upper right", ncols=len(systems))
    groups = [
        ("idle p50", "idle", "p50"),
        ("idle p99", "idle", "p99"),
        ("load p50", "load", "p50"),
        ("load p99", "load", "p99"),
    ]
    for j, x in enumerate(systems):
        vals = [lat_median(s, x, k, f) or 0 for _, k, f in groups]
        bars = ax2.bar([i + j * width for i in range(len(groups))], vals, width, label=x)
        ax2.bar_label(bars, labels=[f"{v:.1f}" if v else "" for v in vals], fontsize=7)
    ax2.set_xticks([i + width * (len(systems) - 1) / 2 for i in range(len(groups))])
    ax2.set_xticklabels([g[0] for g in groups])
    ax2.set_yscale("log")
    ax2.set_ylabel("ms, enqueue to start (log scale, lower is better)")
    ax2.set_title("Latency, median of rounds")
    ax2.legend(loc="upper left")
    fig.suptitle(
        f"pgqml and peers on {m['cpu']}, {m['cores']} cores, PostgreSQL {m['postgres']}",
        fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def write_markdown(path: Path, section: str) -> None:
    text = path.read_text() if path.exists() else "# Benchmark results\n"
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        text = head + section + rest.split(END, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    path.write_text(text)


# -------------------------------------------------------------------------- main


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument(
        "--dsn",
        default=os.environ.get("PGQML_DSN", "postgresql://127.0.0.1/postgres"),
        help="a server where this role may CREATE DATABASE (default $PGQML_DSN)",
    )
    ap.add_argument(
        "--systems",
        default="pgqml,pgqueuer,procrastinate",
        help="comma-separated, from: " + ", ".join(SYSTEMS),
    )
    ap.add_argument(
        "--scenarios",
        default="enqueue,drain,latency,load,scale",
        help="comma-separated subset of enqueue,drain,latency,load,scale",
    )
    ap.add_argument(
        "--configs",
        default="default,documented,tuned",
        help="worker configurations drained (comma-separated)",
    )
    ap.add_argument(
        "--bodies",
        default=",".join(BODIES),
        help="job bodies drained: noop, sleep1ms (comma-separated)",
    )
    ap.add_argument("--rounds", type=int, default=3, help="rounds per scenario (median shown)")
    ap.add_argument("--jobs", type=int, default=20_000, help="jobs per drain")
    ap.add_argument("--enqueue-jobs", type=int, default=10_000, help="jobs per enqueue run")
    ap.add_argument("--latency-jobs", type=int, default=1_000, help="sequential jobs, idle")
    ap.add_argument("--load-seconds", type=float, default=10.0, help="length of a load run")
    ap.add_argument("--scale-history", type=int, default=1_000_000, help="finished rows")
    ap.add_argument("--scale-scheduled", type=int, default=500_000, help="future rows")
    ap.add_argument(
        "--timeout",
        type=float,
        default=300,
        help="seconds allowed per run; past it the run is a FAILURE with its partial\n"
        "rate (procrastinate's scale drain needs ~12 min for 20k jobs)",
    )
    ap.add_argument(
        "--loop",
        choices=("uvloop", "asyncio"),
        default=None,
        help="event loop of every process (default uvloop when installed)",
    )
    ap.add_argument(
        "--tuned",
        action="append",
        default=[],
        metavar="SYSTEM:PROCESSES[:K=V,...]",
        help="replace a system's tuned configuration, e.g.\n"
        "pgqueuer:1:managers=5,batch_size=50 (repeatable; values are ints)",
    )
    ap.add_argument("--no-raw", action="store_true", help="skip the raw-PostgreSQL ceiling")
    ap.add_argument(
        "--results",
        type=Path,
        default=HERE / "compare-results.json",
        help="every sample and the machine, as JSON (default bench/compare-results.json)",
    )
    ap.add_argument(
        "--markdown",
        type=Path,
        default=HERE / "RESULTS.md",
        help="page whose generated section is replaced (default bench/RESULTS.md)",
    )
    ap.add_argument(
        "--plot",
        type=Path,
        default=HERE / "compare.png",
        help="PNG of throughput and latency (default bench/compare.png)",
    )
    ap.add_argument("--no-write", action="store_true", help="print the report only")
    ap.add_argument("--report-only", action="store_true", help="rebuild from --results")
    ap.add_argument("--quick", action="store_true", help="tiny sizes, one round: a smoke run")
    args = ap.parse_args()
    args.systems = [x.strip() for x in args.systems.split(",") if x.strip()]
    args.scenarios = [x.strip() for x in args.scenarios.split(",") if x.strip()]
    args.configs = [x.strip() for x in args.configs.split(",") if x.strip()]
    args.bodies = [x.strip() for x in args.bodies.split(",") if x.strip()]
    unknown = [x for x in args.systems if x not in SYSTEMS]
    if unknown:
        ap.error(f"unknown system(s) {unknown}; choose from {', '.join(SYSTEMS)}")
    for spec in args.tuned:
        name, _, rest = spec.partition(":")
        procs, _, opts = rest.partition(":")
        if name not in SYSTEMS or not procs.isdigit():
            ap.error(f"--tuned {spec!r}: expected SYSTEM:PROCESSES[:K=V,...]")
        options = {
            k: int(v) if v.lstrip("-").isdigit() else v
            for k, v in (kv.split("=", 1) for kv in opts.split(",") if kv)
        }
        SYSTEMS[name].configs = {
            **SYSTEMS[name].configs,
            "tuned": WorkerConfig("tuned", int(procs), options),
        }
    if args.quick:
        args.rounds, args.jobs, args.enqueue_jobs, args.latency_jobs = 1, 500, 200, 50
        args.load_seconds, args.scale_history, args.scale_scheduled = 1.0, 5_000, 2_000
    if args.loop is None:
        try:
            import uvloop

            args.loop = "uvloop"
        except ImportError:
            args.loop = "asyncio"
    if args.report_only:
        results = json.loads(args.results.read_text())
    else:
        missing = []
        for x in args.systems:
            mod = {"pgqueuer": ("pgqueuer", "asyncpg"), "procrastinate": ("procrastinate",)}
            for m in mod.get(x, ()):
                try:
                    __import__(m)
                except ImportError:
                    missing.append(m)
        if missing:
            log(f"not installed: {', '.join(missing)}. Run: pip install -e '.[bench]'")
            return 2
        quiet_libraries()
        with contextlib.ExitStack() as stack:
            dsns = {}
            for x in args.systems + ([] if args.no_raw else ["raw"]):
                name = f"pgqml_cmp_{x}_{os.getpid()}"
                dsns[x] = stack.enter_context(fresh_database(args.dsn, name))
                if x != "raw":
                    log(f"{x}: installing its schema in a fresh database")
                    SYSTEMS[x]().install(dsns[x])
            args.raw_tool = None
            if args.loop == "uvloop":
                import uvloop

                samples = uvloop.run(run(args, dsns))
            else:
                samples = asyncio.run(run(args, dsns))
        cmd = "python bench/compare.py " + " ".join(
            re.sub(r"(//[^:@/]*):[^@/]*@", r"\1@", a) for a in sys.argv[1:]
        )
        results = {
            "command": cmd.strip(),
            "machine": machine(args.dsn, args),
            "args": {
                k: getattr(args, k)
                for k in (
                    "systems",
                    "rounds",
                    "jobs",
                    "enqueue_jobs",
                    "latency_jobs",
                    "load_seconds",
                    "scale_history",
                    "scale_scheduled",
                )
            },
            "configs": {
                x: {
                    "default": SYSTEMS[x].configs["default"].describe(),
                    "tuned": SYSTEMS[x].configs["tuned"].describe(),
                    "documented": SYSTEMS[x].configs["documented"].describe()
                    if "documented" in SYSTEMS[x].configs
                    else None,
                    "note": SYSTEMS[x].tuned_note
                    if not any(t.startswith(f"{x}:") for t in args.tuned)
                    else "set with --tuned for this run",
                }
                for x in args.systems
            },
            "samples": samples,
        }
    if not args.no_write:
        if plot(results, args.plot):
            results["plot"] = os.path.relpath(args.plot, args.markdown.parent)
        args.results.write_text(json.dumps(results, indent=1) + "\n")
    section = report(results)
    print(section)
    if not args.no_write:
        write_markdown(args.markdown, section)
        log(f"wrote {args.results}, {args.plot} and the peers section of {args.markdown}")
    failed = [k for k, runs in results["samples"].items() if any(r["error"] for r in runs)]
    if failed:
        log(f"FAILURES in: {', '.join(failed)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
