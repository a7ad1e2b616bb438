"""Wakeup latency of an idle worker against a raw LISTEN + claim loop in the same run.

    python bench/wakeup_latency.py --dsn postgresql://root@127.0.0.1/postgres [--no-listen]

Creates a scratch database. One event loop runs a producer (an autocommit
``psycopg.AsyncConnection``) and the consumer under test; the producer commits
``SELECT pgqml.enqueue('probe', ...)`` one job at a time, waits until that job
has started, idles 5-10 ms and sends the next. Latency is ``perf_counter()``
when the consumer starts the job minus ``perf_counter()`` right after the
enqueue's ``execute`` returned (commit done). Consumers, interleaved in
--rounds blocks (each block warms up first, not counted):

* ``raw LISTEN + claim``: the baseline: a connection LISTENing on
  ``pgqml_jobs``; on each notification another connection runs a plain SKIP
  LOCKED claim of one row; the job "starts" when the row comes back;
* ``pgqml``: an idle ``BackgroundJobServer`` (concurrency 10, LISTEN on,
  polling_interval 1 s) on the same loop; the job starts when the async
  handler is entered;
* with --no-listen, also ``pgqml`` with ``listen=False, polling_interval=0.05``
  (its idle gap is 5-55 ms instead, so commits fall at random poll phases).

Prints p50/p95/p99/max in ms as a Markdown table; a job that does not start
within 5 s is a FAILURE (exit status 1).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
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

import pgqml

ENQUEUE = (
    "SELECT pgqml.enqueue('probe', jsonb_build_object('t', extract(epoch FROM clock_timestamp())))"
)
TIMEOUT = 5.0


class Starts:
    """Job id -> future of the perf_counter() at which the consumer started it."""

    def __init__(self) -> None:
        self.futs: dict[int, asyncio.Future[float]] = {}

    def fut(self, job_id: int) -> asyncio.Future[float]:
        if job_id not in self.futs:
            self.futs[job_id] = asyncio.get_running_loop().create_future()
        return self.futs[job_id]

    def started(self, job_id: int) -> None:
        t = time.perf_counter()
        f = self.fut(job_id)
        if not f.done():
            f.set_result(t)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--dsn", default=os.environ.get("PGQML_DSN", "postgresql://127.0.0.1/postgres"))
    ap.add_argument("--jobs", type=int, default=1000, help="measured jobs per consumer")
    ap.add_argument("--warmup", type=int, default=50, help="jobs not counted, per block")
    ap.add_argument("--rounds", type=int, default=2, help="interleaved blocks per consumer")
    ap.add_argument("--no-listen", action="store_true", help="also pgqml polling every 50 ms")
    ap.add_argument("--quick", action="store_true", help="tiny sizes: a CI smoke run")
    args = ap.parse_args()
    if args.quick:
        args.jobs, args.warmup, args.rounds = 50, 10, 1

    with scratch_database(args.dsn) as (dsn, settings):
        seen = quiet_logging()
        results = asyncio.run(run(dsn, args))
        log_suppressed(seen)
        report(results, settings, args)
    ok = all(v is not None for v in results.values())
    return 0 if ok else 1


async def probe_jobs(prod: Any, starts: Starts, n: int, gap: float) -> list[float]:
    """Enqueue n jobs one by one, 5 ms + up to ``gap`` s apart; the latencies in ms."""
    out = []
    for _ in range(n):
        cur = await prod.execute(ENQUEUE)
        committed = time.perf_counter()
        job_id = (await cur.fetchone())[0]
        try:
            started = await asyncio.wait_for(asyncio.shield(starts.fut(job_id)), TIMEOUT)
        except asyncio.TimeoutError:
            raise RuntimeError(f"job {job_id} did not start within {TIMEOUT:g} s") from None
        del starts.futs[job_id]
        out.append(1000 * (started - committed))
        await asyncio.sleep(0.005 + random.uniform(0, gap))
    return out


@contextlib.asynccontextmanager
async def raw_consumer(dsn: str, starts: Starts) -> Any:
    listen = await psycopg.AsyncConnection.connect(dsn, autocommit=True)
    claim = await psycopg.AsyncConnection.connect(dsn, autocommit=True)
    await listen.execute("LISTEN pgqml_jobs")

    async def loop() -> None:
        async for _ in listen.notifies():
            rows = await (await claim.execute(PLAIN_CLAIM, (1,))).fetchall()
            for row in rows:
                starts.started(row[0])
            if rows:
                await claim.execute(PLAIN_COMPLETE, ([r[0] for r in rows],))

    task = asyncio.get_running_loop().create_task(loop())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
        await listen.close()
        await claim.close()


@contextlib.asynccontextmanager
async def pgqml_consumer(dsn: str, starts: Starts, *, listen: bool) -> Any:
    reg = pgqml.WorkerRegistry()

    @reg.task("probe")
    async def probe(t: float, ctx: pgqml.WorkerContext) -> None:
        starts.started(ctx.job.id)

    extra = {} if listen else {"listen": False, "polling_interval": 0.05}
    cfg = pgqml.ServerConfig(concurrency=10, metrics=False, summary_interval=0, **extra)
    server = pgqml.BackgroundJobServer(cfg, dsn, reg, middleware=[])
    await server.start_async()
    try:
        await asyncio.sleep(0.2)  # let the first (empty) claim pass: the worker is idle
        yield
    finally:
        await server.stop_async(timeout=5.0)


async def run(dsn: str, args: argparse.Namespace) -> dict[str, list[float] | None]:
    starts = Starts()
    # (consumer, random extra idle gap): polling gets a gap as long as its poll period, so
    # that commits do not fall in step with the polls (a fixed gap after each start would
    # make every commit land at the same phase of the poll cycle).
    consumers: dict[str, Any] = {
        "raw LISTEN + claim": (lambda: raw_consumer(dsn, starts), 0.005),
        "pgqml (LISTEN)": (lambda: pgqml_consumer(dsn, starts, listen=True), 0.005),
    }
    if args.no_listen:
        consumers["pgqml (polling 50 ms)"] = (
            lambda: pgqml_consumer(dsn, starts, listen=False),
            0.05,
        )
    results: dict[str, list[float] | None] = {name: [] for name in consumers}
    per_round = [
        args.jobs // args.rounds + (i < args.jobs % args.rounds) for i in range(args.rounds)
    ]
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as prod:
        for r, n in enumerate(per_round):
            for name, (consumer, gap) in consumers.items():
                if results[name] is None:
                    continue
                try:
                    async with consumer():
                        await probe_jobs(prod, starts, args.warmup, gap)
                        lat = await probe_jobs(prod, starts, n, gap)
                except RuntimeError as exc:
                    log(f"round {r + 1}/{args.rounds} {name}: FAILURE ({exc})")
                    results[name] = None
                else:
                    results[name].extend(lat)  # type: ignore[union-attr]
                    log(f"round {r + 1}/{args.rounds} {name}: p50 {statistics.median(lat):.2f} ms")
                # whatever a failed consumer left behind must not reach the next one
                await prod.execute("DELETE FROM pgqml.jobs")
    return results


def pct(values: list[float]) -> tuple[float, float, float, float]:
    q = statistics.quantiles(values, n=100, method="inclusive")
    return q[49], q[94], q[98], max(values)


def report(results: dict[str, list[float] | None], settings: Any, args: argparse.Namespace) -> None:
    base_values = results["raw LISTEN + claim"]
    base = pct(base_values) if base_values else None
    print(
        f"\n{settings}; {args.jobs:,} jobs per consumer in {args.rounds} "
        f"block(s), {args.warmup} warm-up jobs per block, 5-10 ms idle between jobs "
        "(polling: 5-55 ms)\n"
    )
    print("| consumer | p50 ms | p95 ms | p99 ms | max ms | p50 vs raw | p95 vs raw | p99 vs raw |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, values in results.items():
        if not values:
            print(f"| {name} | FAILURE | | | | | | |")
            continue
        p = pct(values)
        ratios = " | ".join(
            f"{a / b:.2f}×" if base else "–" for a, b in zip(p[:3], (base or p)[:3], strict=True)
        )
        print(f"| {name} | {p[0]:.2f} | {p[1]:.2f} | {p[2]:.2f} | {p[3]:.2f} | {ratios} |")


if __name__ == "__main__":
    sys.exit(main())
