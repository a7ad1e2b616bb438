"""Drain throughput of no-op jobs against raw SQL claim loops measured in the same run.

    python bench/drain_throughput.py --dsn postgresql://root@127.0.0.1/postgres [--scale]

In interleaved rounds, in a scratch database: enqueue --jobs no-op jobs
(``pgqml.enqueue_many``, one transaction; VACUUM ANALYZE) and time draining
them (median, min-max over rounds; read the ratios, the machine is noisy):

* ``raw procedure``: the baseline: --clients connections, each looping
  ``fetch_jobs_v1`` (claim up to --batch) then one ``complete_jobs_v1``, no
  Python work per job;
* ``raw plain SQL``: the same loop without pgqml's procedures (a SKIP LOCKED
  claim, then one DELETE ... INSERT INTO job_history);
* ``pgqml``: ``BackgroundJobServer`` (--processes processes, each with
  --concurrency and --batch), timed from ``start_async`` (connections already
  open, as the raw loops' are) until no job is left enqueued or processing.

Every drain is verified (N succeeded history rows, all attempt 1), else FAILURE
and exit status 1. --history-rows/--scheduled-rows/--failed-rows pre-fill the
tables (INSERT ... generate_series); --scale runs the rounds again with 1M
history + 500k scheduled + 100k failed rows and compares the claim cost.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import statistics
import sys
import time
from typing import Any

import psycopg
from _common import (
    PLAIN_CLAIM,
    PLAIN_COMPLETE,
    log,
    log_suppressed,
    quiet_logging,
    scratch_database,
)
from psycopg_pool import AsyncConnectionPool

import pgqml

PROC_CLAIM = "SELECT id, attempt FROM pgqml.fetch_jobs_v1(%s, NULL, NULL, %s, 30)"
PROC_COMPLETE = """SELECT count(*) FROM pgqml.complete_jobs_v1(%(owner)s, %(ids)s::bigint[],
    %(att)s::int[], array_fill('succeeded'::text, ARRAY[%(n)s]),
    array_fill(NULL::jsonb, ARRAY[%(n)s]), array_fill(NULL::text, ARRAY[%(n)s]),
    array_fill(NULL::text, ARRAY[%(n)s]), array_fill(NULL::timestamptz, ARRAY[%(n)s]),
    array_fill(NULL::float8, ARRAY[%(n)s]))"""
# Finished rows (history) and future rows (scheduled), generated in the server.
FILL_HISTORY = """INSERT INTO pgqml.job_history (id, method, queue, payload, state, priority,
    attempt, max_attempts, run_at, created_at, started_at, finished_at, lease_owner,
    last_error, expires_at)
SELECT nextval('pgqml.job_id_seq'), 'noop', 'default', jsonb_build_object('n', g), %s, 0, %s,
    5, t, t, t, t + interval '5 ms', 'prefill', %s, t + %s::interval
FROM (SELECT g, now() - g * interval '10 ms' AS t FROM generate_series(1, %s) g) s"""
FILL_SCHEDULED = """INSERT INTO pgqml.jobs (method, queue, payload, state, run_at)
SELECT 'noop', 'default', jsonb_build_object('n', g), 'scheduled',
    now() + interval '1 day' + g * interval '1 ms' FROM generate_series(1, %s) g"""
# Cheap completion probe (index probes; seqscan off so a big scheduled backlog is not read).
LIVE = """SELECT EXISTS (SELECT FROM pgqml.jobs WHERE state = 'enqueued')
    OR EXISTS (SELECT FROM pgqml.jobs WHERE state = 'processing')"""
PROGRESS = """SELECT (SELECT count(*) FROM pgqml.jobs WHERE id > %(m)s),
    EXISTS (SELECT FROM pgqml.jobs WHERE id > %(m)s AND (lost_count > 0 OR attempt > 1))
    OR EXISTS (SELECT FROM pgqml.job_history WHERE id > %(m)s AND attempt <> 1)"""
BIG = (1_000_000, 500_000, 100_000)


def make_server(dsn: Any, args: argparse.Namespace) -> pgqml.BackgroundJobServer:
    reg = pgqml.WorkerRegistry()

    @reg.task("noop")
    async def noop() -> None:
        return None

    cfg = pgqml.ServerConfig(
        concurrency=args.concurrency, fetch_batch_size=args.batch, queues=["default"]
    ).replace(metrics=False, summary_interval=0)
    return pgqml.BackgroundJobServer(cfg, dsn, reg, middleware=[])  # []: no per-job logging


def open_pool(dsn: str) -> AsyncConnectionPool[Any]:
    """Connections opened before the timer starts, as the raw loops' are."""
    return AsyncConnectionPool(dsn, min_size=3, max_size=4, kwargs={"autocommit": True}, open=False)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--dsn", default=os.environ.get("PGQML_DSN", "postgresql://127.0.0.1/postgres"))
    ap.add_argument("--jobs", type=int, default=20_000, help="jobs drained per scenario run")
    ap.add_argument("--batch", type=int, default=100, help="claim batch size (all scenarios)")
    ap.add_argument("--concurrency", type=int, default=200, help="pgqml concurrency per process")
    ap.add_argument("--processes", type=int, default=1, help="pgqml server processes")
    ap.add_argument("--clients", type=int, default=2, help="connections of the raw loops")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds (median reported)")
    ap.add_argument("--history-rows", type=int, default=0, help="pre-filled succeeded history")
    ap.add_argument("--scheduled-rows", type=int, default=0, help="pre-filled scheduled jobs")
    ap.add_argument("--failed-rows", type=int, default=0, help="pre-filled failed history")
    ap.add_argument("--timeout", type=float, default=300, help="seconds allowed per drain")
    ap.add_argument("--scale", action="store_true", help="also run with 1M/500k/100k rows")
    ap.add_argument("--quick", action="store_true", help="tiny sizes: a CI smoke run")
    args = ap.parse_args()
    big = BIG
    if args.quick:
        args.jobs, args.rounds, big = 500, 1, (10_000, 5_000, 1_000)
    states = [(args.history_rows, args.scheduled_rows, args.failed_rows)]
    if args.scale:
        states.append(tuple(max(a, b) for a, b in zip(states[0], big, strict=True)))

    with scratch_database(args.dsn) as (dsn, settings):
        seen = quiet_logging()
        results = asyncio.run(run(dsn, args, states))
        log_suppressed(seen)
        report(results, states, settings, args)
    ok = all(v[0] is not None for r in results.values() for v in r)
    return 0 if ok else 1


# results[(state index, scenario)] = [(jobs/s or None, claim ms or None), ...]
Results = dict[tuple[int, str], list[Any]]


async def run(dsn: str, args: argparse.Namespace, states: list[tuple[int, ...]]) -> Results:
    conn = psycopg.connect(dsn, autocommit=True)
    have = [0, 0, 0]
    results: Results = {}
    p = args.processes
    scenarios = [
        ("raw procedure", lambda m: raw_drain(dsn, args, plain=False)),
        ("raw plain SQL", lambda m: raw_drain(dsn, args, plain=True)),
        ("pgqml", lambda m: pgqml_drain(dsn, args, m) if p == 1 else pgqml_procs(dsn, args, m)),
    ]
    for si, state in enumerate(states):
        want = [w - h for w, h in zip(state, have, strict=True)]
        if any(want):
            log(f"pre-filling: +{want[0]:,} history, +{want[1]:,} scheduled, +{want[2]:,} failed")
            with conn.transaction():
                for n, st, att, err, ttl in (
                    (want[0], "succeeded", 1, None, "1 day"),
                    (want[2], "failed", 5, "boom", "7 days"),
                ):
                    conn.execute(FILL_HISTORY, (st, att, err, ttl, n))
                conn.execute(FILL_SCHEDULED, (want[1],))
            have = list(state)
        conn.execute("VACUUM ANALYZE pgqml.job_history")
        mark = conn.execute(
            "SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM pgqml.job_id_seq"
        ).fetchone()[0]
        for r in range(args.rounds):
            for name, fn in scenarios:
                with conn.transaction():
                    pgqml.enqueue_many(conn, [pgqml.JobSpec("noop", {}) for _ in range(args.jobs)])
                conn.execute("VACUUM ANALYZE pgqml.jobs")
                try:
                    elapsed, claim_ms = await asyncio.wait_for(fn(mark), args.timeout)
                    err = verify(conn, mark, args.jobs)
                except asyncio.TimeoutError:
                    elapsed, claim_ms, err = 0.0, None, f"not drained within {args.timeout:g} s"
                except RuntimeError as exc:
                    elapsed, claim_ms, err = 0.0, None, str(exc)
                rate = None if err else args.jobs / elapsed
                results.setdefault((si, name), []).append((rate, claim_ms))
                log(
                    f"state {si} round {r + 1}/{args.rounds} {name}: "
                    + (f"FAILURE ({err})" if err else f"{rate:,.0f} jobs/s")
                )
                conn.execute("DELETE FROM pgqml.jobs WHERE id > %s", (mark,))
                conn.execute("DELETE FROM pgqml.job_history WHERE id > %s", (mark,))
                conn.execute("VACUUM ANALYZE pgqml.jobs")
                conn.execute("VACUUM ANALYZE pgqml.job_history")
    conn.close()
    return results


def verify(conn: psycopg.Connection[Any], mark: int, n: int) -> str | None:
    live, done, ok = conn.execute(
        "SELECT (SELECT count(*) FROM pgqml.jobs WHERE id > %(m)s),"
        " count(*), count(*) FILTER (WHERE state = 'succeeded' AND attempt = 1)"
        " FROM pgqml.job_history WHERE id > %(m)s",
        {"m": mark},
    ).fetchone()
    if live or done != n or ok != n:
        return f"{live} live, {done} finished, {ok} succeeded with attempt 1, of {n}"
    return None


async def wait_empty(dsn: str, mark: int, n: int) -> None:
    """Until no job is enqueued or processing; fails fast once a job was rescued or re-run."""
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as poll:
        await poll.execute("SET enable_seqscan = off")
        t0 = last = time.perf_counter()
        while (await (await poll.execute(LIVE)).fetchone())[0]:
            await asyncio.sleep(0.02)
            if time.perf_counter() - last >= 5:
                last = time.perf_counter()
                left, rerun = await (await poll.execute(PROGRESS, {"m": mark})).fetchone()
                log(f"  {last - t0:.0f} s: {left:,} of {n:,} jobs not finished yet")
                if rerun:
                    raise RuntimeError("a job was rescued (lease expired) or ran twice")


async def raw_drain(dsn: str, args: argparse.Namespace, *, plain: bool) -> tuple[float, float]:
    conns = [
        await psycopg.AsyncConnection.connect(dsn, autocommit=True) for _ in range(args.clients)
    ]
    claims: list[float] = []

    async def client(k: int, conn: psycopg.AsyncConnection[Any]) -> None:
        owner = f"raw-{k}"
        while True:
            t = time.perf_counter()
            q, a = (PLAIN_CLAIM, (args.batch,)) if plain else (PROC_CLAIM, (owner, args.batch))
            rows = await (await conn.execute(q, a)).fetchall()
            if not rows:
                return
            claims.append(time.perf_counter() - t)
            ids = [r[0] for r in rows]
            if plain:
                await conn.execute(PLAIN_COMPLETE, (ids,))
            else:
                params = {"owner": owner, "ids": ids, "att": [r[1] for r in rows], "n": len(ids)}
                await conn.execute(PROC_COMPLETE, params)

    try:
        t0 = time.perf_counter()
        await asyncio.gather(*(client(k, c) for k, c in enumerate(conns)))
        elapsed = time.perf_counter() - t0
    finally:
        for c in conns:
            await c.close()
    return elapsed, 1000 * statistics.fmean(claims)


async def pgqml_drain(dsn: str, args: argparse.Namespace, mark: int) -> tuple[float, None]:
    async with open_pool(dsn) as pool:
        await pool.wait()
        server = make_server(pool, args)
        t0 = time.perf_counter()
        await server.start_async()
        try:
            await wait_empty(dsn, mark, args.jobs)
            elapsed = time.perf_counter() - t0
        finally:
            await server.stop_async(timeout=5.0)
    return elapsed, None


def _child(dsn: str, args: argparse.Namespace, ready: Any, go: Any, stop: Any) -> None:
    async def serve() -> None:
        loop = asyncio.get_running_loop()
        async with open_pool(dsn) as pool:
            await pool.wait()
            server = make_server(pool, args)
            ready.release()
            await loop.run_in_executor(None, go.wait)
            await server.start_async()
            try:
                await loop.run_in_executor(None, stop.wait)
            finally:
                await server.stop_async(timeout=5.0)

    quiet_logging()
    asyncio.run(serve())


async def pgqml_procs(dsn: str, args: argparse.Namespace, mark: int) -> tuple[float, None]:
    mp = multiprocessing.get_context("spawn")
    ready, go, stop = mp.Semaphore(0), mp.Event(), mp.Event()
    procs = [
        mp.Process(target=_child, args=(dsn, args, ready, go, stop), daemon=True)
        for _ in range(args.processes)
    ]
    for pr in procs:
        pr.start()
    try:
        for _ in procs:  # imported and connected, not yet claiming: then start all at once
            if not ready.acquire(timeout=60):
                raise RuntimeError("a server process did not start")
        t0 = time.perf_counter()
        go.set()
        await wait_empty(dsn, mark, args.jobs)
        elapsed = time.perf_counter() - t0
    finally:
        stop.set()
        for pr in procs:
            pr.join(30)
            if pr.is_alive():
                log(f"server process {pr.pid} did not stop within 30 s: killing it")
                pr.kill()
                pr.join()
    return elapsed, None


def report(
    results: Results, states: list[tuple[int, ...]], settings: Any, args: argparse.Namespace
) -> None:
    def med(si: int, name: str, i: int = 0) -> float | None:
        vals = [v[i] for v in results[(si, name)]]
        return None if None in vals else statistics.median(vals)

    p, c, b = args.processes, args.concurrency, args.batch
    labels = {
        "raw procedure": f"raw SQL, fetch_jobs_v1 + complete_jobs_v1, {args.clients} clients",
        "raw plain SQL": f"raw SQL, plain claim + DELETE/INSERT, {args.clients} clients",
        "pgqml": f"pgqml BackgroundJobServer, {p} process(es) × concurrency {c}",
    }
    print(f"\n{settings}; {args.rounds} rounds, {args.jobs:,} jobs, batch {b}\n")
    print(
        "| tables | scenario | jobs/s (median) | min–max | vs raw procedure | vs plain SQL "
        "| claim ms (mean) |\n|---|---|---:|---:|---:|---:|---:|"
    )
    for si, (h, s, f) in enumerate(states):
        tables = f"{h:,} history, {s:,} scheduled, {f:,} failed"
        base, plain = med(si, "raw procedure"), med(si, "raw plain SQL")
        for name, label in labels.items():
            m = med(si, name)
            vals = [v[0] for v in results[(si, name)]]
            if m is None:
                bad = sum(v is None for v in vals)
                print(f"| {tables} | {label} | FAILURE ({bad} of {len(vals)} rounds) | | | | |")
                continue
            cm = med(si, name, 1)
            print(
                f"| {tables} | {label} | {m:,.0f} | {min(vals):,.0f}–{max(vals):,.0f} | "
                + (f"{m / base:.2f}× | " if base else "– | ")
                + (f"{m / plain:.2f}× | " if plain else "– | ")
                + (f"{cm:.2f} |" if cm is not None else "– |")
            )
    if len(states) == 2:
        print(
            "\n| metric (median) | empty tables | big tables | big / empty |\n|---|---:|---:|---:|"
        )
        for name, i, what in (
            ("raw procedure", 1, "claim ms, fetch_jobs_v1"),
            ("raw plain SQL", 1, "claim ms, plain SQL"),
            *((n, 0, f"jobs/s, {n}") for n in labels),
        ):
            a, z = med(0, name, i), med(1, name, i)
            ratio = f"{z / a:.2f}×" if a and z else "FAILURE"
            fmt = ",.2f" if i else ",.0f"
            print(f"| {what} | {a or 0:{fmt}} | {z or 0:{fmt}} | {ratio} |")


if __name__ == "__main__":
    sys.exit(main())
