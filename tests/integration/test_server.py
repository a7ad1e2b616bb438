"""BackgroundJobServer in this process against a real database: execution,
results, retries, timeouts, middleware, hooks, leases, shutdown, wakeup, metrics."""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from typing import Any

import psycopg
import pytest
from psycopg_pool import AsyncConnectionPool

import pgqml
from pgqml import errors
from tests.support import waiting

FAST = {
    "heartbeat_interval": 0.2,
    "lease_duration": 1.0,
    "rescue_interval": 0.2,
    "polling_interval": 0.2,
    "summary_interval": 0,
    "shutdown_timeout": 5.0,
}


wait_until = waiting.wait_for


@contextmanager
def running(dsn: str, registry: pgqml.WorkerRegistry, **kw: Any) -> Iterator[Any]:
    middleware = kw.pop("middleware", None)
    hooks = kw.pop("hooks", ())
    server = pgqml.BackgroundJobServer(
        pgqml.ServerConfig(**{**FAST, **kw}), dsn, registry, middleware=middleware, hooks=hooks
    )
    server.start()
    try:
        yield server
    finally:
        server.stop()


def job_row(conn: psycopg.Connection[Any], job_id: int) -> dict[str, Any]:
    job = pgqml.get_job(conn, job_id)
    assert job is not None
    return job.to_dict()


def finished(conn: psycopg.Connection[Any], job_id: int) -> dict[str, Any] | None:
    d = job_row(conn, job_id)
    return d if d["state"] in ("succeeded", "failed", "deleted") else None


def test_runs_sync_async_and_class_handlers_and_stores_results(dsn, autoconn):
    reg = pgqml.WorkerRegistry()

    @reg.task("add")
    def add(a: int, b: int = 1) -> int:
        return a + b

    @reg.task("greet")
    async def greet(name: str, ctx: pgqml.WorkerContext) -> dict[str, Any]:
        return {"hello": name, "attempt": ctx.attempt, "server": ctx.server_name}

    @reg.register
    class Report(pgqml.Worker):
        method_name = "report"

        def execute(self, job, ctx):
            return pgqml.WorkerResult.success({"rows": job.payload["rows"]})

    ids = [
        add.enqueue(autoconn, a=2, b=3),
        greet.enqueue(autoconn, name="ada"),
        pgqml.enqueue(autoconn, "report", {"rows": 7}),
    ]
    with running(dsn, reg, server_name="srv"):
        done = [wait_until(lambda i=i: finished(autoconn, i)) for i in ids]
    assert [d["state"] for d in done] == ["succeeded"] * 3
    assert done[0]["result"] == 5
    assert done[1]["result"] == {"hello": "ada", "attempt": 1, "server": "srv"}
    assert done[2]["result"] == {"rows": 7}
    assert all(d["expires_at"] > d["finished_at"] for d in done)


def test_failures_store_error_and_traceback_and_bad_payloads_fail_at_once(dsn, autoconn):
    reg = pgqml.WorkerRegistry()

    @reg.task("boom", retry=pgqml.RetryPolicy.none())
    def boom() -> None:
        raise ValueError("kaput")

    @reg.task("typed")
    def typed(to: str) -> None:
        pass

    @reg.task("unserializable")
    def unserializable() -> object:
        return object()

    a = pgqml.enqueue(autoconn, "boom")
    b = pgqml.enqueue(autoconn, "typed", {"too": "x"}, max_attempts=5)
    c = pgqml.enqueue(autoconn, "unserializable", max_attempts=5)
    with running(dsn, reg):
        da, db, dc = (wait_until(lambda i=i: finished(autoconn, i)) for i in (a, b, c))
    assert da["state"] == "failed" and da["last_error"] == "ValueError: kaput"
    assert "Traceback" in da["last_traceback"] and "kaput" in da["last_traceback"]
    assert db["state"] == "failed" and db["attempt"] == 1
    assert "PayloadMismatch" in db["last_error"] and "missing to" in db["last_error"]
    assert "unexpected too" in db["last_error"]
    assert dc["state"] == "failed" and dc["attempt"] == 1
    assert "not JSON-serializable" in dc["last_error"]


def test_retries_honour_backoff_never_before_run_at(dsn, autoconn):
    reg = pgqml.WorkerRegistry()
    seen: list[tuple[int, datetime, datetime]] = []

    @reg.task("flaky", retry=pgqml.RetryPolicy.fixed(0.6))
    def flaky(ctx: pgqml.WorkerContext) -> str:
        seen.append((ctx.attempt, ctx.job.run_at, ctx.job.started_at))
        if ctx.attempt < 3:
            raise RuntimeError(f"attempt {ctx.attempt}")
        return "ok"

    job = pgqml.enqueue(autoconn, "flaky", max_attempts=3)
    with running(dsn, reg):
        done = wait_until(lambda: finished(autoconn, job))
    assert done["state"] == "succeeded" and done["attempt"] == 3
    assert done["last_error"] == "RuntimeError: attempt 2"
    assert [s[0] for s in seen] == [1, 2, 3]
    for (_, _, prev_start), (_, run_at, started) in itertools.pairwise(seen):
        assert started >= run_at  # claimed only once due (database clock)
        assert run_at - prev_start >= timedelta(seconds=0.6)


def test_attempts_exhausted_fail_and_never_retry_classes_fail_at_once(dsn, autoconn):
    reg = pgqml.WorkerRegistry()

    class Fatal(Exception):
        pass

    policy = pgqml.RetryPolicy.fixed(0, never_retry=(Fatal,))

    @reg.task("always", retry=policy)
    def always() -> None:
        raise RuntimeError("again")

    @reg.task("fatal", retry=policy)
    def fatal() -> None:
        raise Fatal("no point")

    a = pgqml.enqueue(autoconn, "always", max_attempts=3)
    b = pgqml.enqueue(autoconn, "fatal", max_attempts=3)
    with running(dsn, reg):
        da, db = (wait_until(lambda i=i: finished(autoconn, i)) for i in (a, b))
    assert (da["state"], da["attempt"]) == ("failed", 3)
    assert (db["state"], db["attempt"]) == ("failed", 1)


def test_worker_result_retry_at_is_respected(dsn, autoconn):
    reg = pgqml.WorkerRegistry()
    runs: list[datetime] = []

    @reg.task("later")
    def later(ctx: pgqml.WorkerContext) -> pgqml.WorkerResult:
        runs.append(ctx.job.started_at)
        if ctx.attempt == 1:
            return pgqml.WorkerResult.retry(
                "not yet", at=datetime.now(timezone.utc) + timedelta(seconds=0.5)
            )
        return pgqml.WorkerResult.success("done")

    job = pgqml.enqueue(autoconn, "later")
    with running(dsn, reg):
        done = wait_until(lambda: finished(autoconn, job))
    assert done["result"] == "done" and done["attempt"] == 2
    assert runs[1] - runs[0] >= timedelta(seconds=0.45)


def test_unknown_methods_stay_enqueued(dsn, autoconn):
    reg = pgqml.WorkerRegistry()
    reg.task("known")(lambda: None)
    unknown = pgqml.enqueue(autoconn, "unknown")
    known = pgqml.enqueue(autoconn, "known")
    with running(dsn, reg):
        wait_until(lambda: finished(autoconn, known))
        time.sleep(0.5)
    row = job_row(autoconn, unknown)
    assert (row["state"], row["attempt"], row["last_error"]) == ("enqueued", 0, None)


def test_async_timeout_cancels_the_handler_and_counts_an_attempt(dsn, autoconn):
    reg = pgqml.WorkerRegistry()
    cancelled: list[int] = []

    @reg.task("slow", timeout=0.2, retry=pgqml.RetryPolicy.fixed(0))
    async def slow(ctx: pgqml.WorkerContext) -> None:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.append(ctx.attempt)
            raise

    job = pgqml.enqueue(autoconn, "slow", max_attempts=2)
    t0 = time.monotonic()
    with running(dsn, reg):
        done = wait_until(lambda: finished(autoconn, job))
    assert time.monotonic() - t0 < 10
    assert done["state"] == "failed" and done["attempt"] == 2
    assert "JobTimeout: timed out after 0.2s" in done["last_error"]
    assert cancelled == [1, 2]


def test_sync_timeout_is_recorded_at_once_and_the_late_result_discarded(dsn, autoconn):
    reg = pgqml.WorkerRegistry()
    observed: list[bool] = []
    release = threading.Event()

    @reg.task("stuck", timeout=0.2)
    def stuck(ctx: pgqml.WorkerContext) -> str:
        release.wait(10)
        observed.append(ctx.is_cancelled())
        return "too late"

    job = pgqml.enqueue(autoconn, "stuck", max_attempts=1)
    with running(dsn, reg, concurrency=2) as server:
        done = wait_until(lambda: finished(autoconn, job))
        assert done["state"] == "failed" and "timed out" in done["last_error"]
        # the thread still holds its slot until it returns
        assert server._free() == 1
        release.set()
        wait_until(lambda: server._free() == 2, what="the slot to come back")
    assert observed == [True]
    assert job_row(autoconn, job)["result"] is None


def test_middleware_order_short_circuit_and_hooks(dsn, autoconn):
    reg = pgqml.WorkerRegistry()
    trail: list[str] = []

    @reg.task("work")
    async def work() -> str:
        trail.append("handler")
        return "handled"

    @reg.task("skip")
    async def skip() -> str:
        trail.append("skip handler")
        return "never"

    def recorder(name: str) -> Any:
        async def mw(job, ctx, call_next):
            trail.append(f"{name} before")
            result = await call_next(job, ctx)
            trail.append(f"{name} after {result.kind}")
            return result

        return mw

    async def short(job, ctx, call_next):
        if job.method == "skip":
            return pgqml.WorkerResult.success("short-circuited")
        return await call_next(job, ctx)

    transitions: list[tuple[str, str, str]] = []

    def hook(job, old, new):
        transitions.append((job.method, str(old), str(new)))

    a = pgqml.enqueue(autoconn, "work")
    with running(
        dsn, reg, middleware=[recorder("A"), recorder("B"), short], hooks=[hook]
    ) as server:
        wait_until(lambda: finished(autoconn, a))
        assert trail == ["A before", "B before", "handler", "B after success", "A after success"]
        trail.clear()
        b = pgqml.enqueue(autoconn, "skip")
        assert job_row(autoconn, b)
        done = wait_until(lambda: finished(autoconn, b))
        wait_until(lambda: len(transitions) == 4)
        assert server.is_running
    assert done["result"] == "short-circuited"
    assert "skip handler" not in trail
    assert transitions == [
        ("work", "enqueued", "processing"),
        ("work", "processing", "succeeded"),
        ("skip", "enqueued", "processing"),
        ("skip", "processing", "succeeded"),
    ]


def test_handler_exceptions_reach_middleware_as_results(dsn, autoconn):
    reg = pgqml.WorkerRegistry()
    seen: list[Any] = []

    @reg.task("bad", retry=pgqml.RetryPolicy.none())
    def bad() -> None:
        raise KeyError("k")

    async def watch(job, ctx, call_next):
        result = await call_next(job, ctx)
        seen.append((result.kind, type(result.exception).__name__))
        return result

    job = pgqml.enqueue(autoconn, "bad")
    with running(dsn, reg, middleware=[watch]):
        wait_until(lambda: finished(autoconn, job))
    assert seen == [("failure", "KeyError")]


def test_graceful_stop_waits_then_releases_unfinished_jobs(dsn, autoconn):
    reg = pgqml.WorkerRegistry()
    started = threading.Event()

    @reg.task("quick")
    async def quick() -> str:
        started.set()
        await asyncio.sleep(0.3)
        return "finished in grace"

    @reg.task("long")
    def long(ctx: pgqml.WorkerContext) -> None:
        ctx.wait_cancelled(30)

    q = pgqml.enqueue(autoconn, "quick")
    lg = pgqml.enqueue(autoconn, "long")
    server = pgqml.BackgroundJobServer(pgqml.ServerConfig(**FAST), dsn, reg)
    server.start()
    wait_until(lambda: job_row(autoconn, lg)["state"] == "processing")
    started.wait(5)
    assert autoconn.execute("SELECT count(*) FROM pgqml.servers").fetchone() == (1,)
    t0 = time.monotonic()
    server.stop(timeout=1.0)
    assert time.monotonic() - t0 < 5
    assert job_row(autoconn, q)["result"] == "finished in grace"
    row = job_row(autoconn, lg)
    assert (row["state"], row["attempt"], row["lease_owner"]) == ("enqueued", 0, None)
    assert autoconn.execute("SELECT count(*) FROM pgqml.servers").fetchone() == (0,)


def test_lost_lease_cancels_the_attempt_and_writes_nothing(dsn, autoconn):
    reg = pgqml.WorkerRegistry()
    interrupted: list[str | None] = []

    @reg.task("victim")
    async def victim(ctx: pgqml.WorkerContext) -> str:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            interrupted.append(ctx.cancel_reason)
            raise
        return "should not be written"

    job = pgqml.enqueue(autoconn, "victim", max_attempts=1)
    with running(dsn, reg):
        wait_until(lambda: job_row(autoconn, job)["state"] == "processing")
        # an operator removes the running job behind the worker's back
        autoconn.execute("DELETE FROM pgqml.jobs WHERE id = %s", (job,))
        wait_until(lambda: interrupted, what="the handler to be cancelled")
    assert interrupted == ["lost"]
    assert pgqml.get_job(autoconn, job) is None


def test_stale_attempt_of_a_rescued_job_is_fenced_out(dsn, autoconn):
    reg = pgqml.WorkerRegistry()
    gate = threading.Event()
    runs: list[int] = []

    @reg.task("twice")
    def twice(ctx: pgqml.WorkerContext) -> int:
        runs.append(ctx.attempt)
        if ctx.attempt == 1:
            gate.wait(10)  # keeps running after its lease is taken away
        return ctx.attempt

    job = pgqml.enqueue(autoconn, "twice")
    with running(dsn, reg, concurrency=2):
        wait_until(lambda: runs == [1])
        # simulate an expired lease rescued by another server
        autoconn.execute(
            "UPDATE pgqml.jobs SET lease_expires_at = now() - interval '1 s' WHERE id = %s",
            (job,),
        )
        autoconn.execute("SELECT * FROM pgqml.rescue_jobs_v1()")
        done = wait_until(lambda: finished(autoconn, job))
        gate.set()
        time.sleep(0.5)
    assert done["result"] == 2 and done["attempt"] == 2 and done["lost_count"] == 1
    after = job_row(autoconn, job)
    assert (after["result"], after["attempt"]) == (2, 2)


def test_listen_wakes_the_worker_without_polling(dsn, autoconn):
    reg = pgqml.WorkerRegistry()
    started: dict[int, float] = {}

    @reg.task("ping")
    async def ping(ctx: pgqml.WorkerContext) -> None:
        started[ctx.job.id] = time.monotonic()

    with running(dsn, reg, polling_interval=30.0):
        time.sleep(0.3)
        lat = []
        for _ in range(5):
            t0 = time.monotonic()
            job = pgqml.enqueue(autoconn, "ping")
            wait_until(lambda j=job: j in started, timeout=5)
            lat.append(started[job] - t0)
    assert max(lat) < 1.0, lat  # polling every 30 s could not explain this


def test_listener_reconnects_after_its_connection_is_killed(dsn, autoconn):
    reg = pgqml.WorkerRegistry()
    done: list[int] = []

    @reg.task("ping")
    async def ping(ctx: pgqml.WorkerContext) -> None:
        done.append(ctx.job.id)

    with running(dsn, reg, polling_interval=30.0) as server:
        wait_until(lambda: server.health()[1]["listening"])
        killed = autoconn.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE datname = current_database() AND application_name LIKE '%listener'"
        ).fetchone()
        assert killed == (1,)
        wait_until(lambda: not server.health()[1]["listening"], timeout=5)
        wait_until(lambda: server.health()[1]["listening"], timeout=10)
        job = pgqml.enqueue(autoconn, "ping")
        wait_until(lambda: job in done, timeout=5)


def test_polling_alone_finds_jobs_with_listen_off(dsn, autoconn):
    reg = pgqml.WorkerRegistry()
    reg.task("p")(lambda: "polled")
    with running(dsn, reg, listen=False, polling_interval=0.2) as server:
        assert server.health()[1]["listening"] is False
        job = pgqml.enqueue(autoconn, "p")
        assert wait_until(lambda: finished(autoconn, job), timeout=5)["result"] == "polled"


def test_server_registry_row_and_health(dsn, autoconn):
    reg = pgqml.WorkerRegistry()
    reg.task("p")(lambda: None)
    with running(dsn, reg, server_name="reg-test", queues=["a", "b"], concurrency=3) as server:
        row = autoconn.execute(
            "SELECT id, name, pid, queues, concurrency, last_heartbeat_at > now() - interval"
            " '2 s', metadata->'methods' FROM pgqml.servers"
        ).fetchone()
        assert row[0] == server.server_id and row[1] == "reg-test"
        assert row[3] == ["a", "b"] and row[4] == 3 and row[5] is True and row[6] == ["p"]
        healthy, details = server.health()
        assert healthy and details["server_id"] == server.server_id
    assert server.health()[0] is False
    assert autoconn.execute("SELECT count(*) FROM pgqml.servers").fetchone() == (0,)


def test_metrics_record_outcomes_durations_and_queue_depth(dsn, autoconn):
    from prometheus_client import REGISTRY

    def sample(name: str, **labels: str) -> float:
        return REGISTRY.get_sample_value(name, labels) or 0.0

    reg = pgqml.WorkerRegistry()
    reg.task("mok", queue="mq")(lambda: None)

    @reg.task("mbad", queue="mq", retry=pgqml.RetryPolicy.none())
    def mbad() -> None:
        raise RuntimeError("x")

    before = {
        "enq": sample("pgqml_jobs_enqueued_total", queue="mq"),
        "ok": sample("pgqml_jobs_processed_total", queue="mq", state="succeeded"),
        "bad": sample("pgqml_jobs_processed_total", queue="mq", state="failed"),
        "dur": sample("pgqml_job_duration_seconds_count", method="mok"),
    }
    for _ in range(3):
        pgqml.enqueue(autoconn, "mok", queue="mq")
    pgqml.enqueue(autoconn, "mbad", queue="mq")
    pgqml.enqueue_many(autoconn, [pgqml.JobSpec("nobody", queue="mq") for _ in range(2)])
    assert sample("pgqml_jobs_enqueued_total", queue="mq") - before["enq"] == 6
    # the COPY path (64+ jobs) counts per queue too
    other = sample("pgqml_jobs_enqueued_total", queue="mq-bulk")
    pgqml.enqueue_many(autoconn, [pgqml.JobSpec("nobody", queue="mq-bulk") for _ in range(1500)])
    assert sample("pgqml_jobs_enqueued_total", queue="mq-bulk") - other == 1500
    with running(dsn, reg, queues=["mq"], stats_interval=0.2):
        wait_until(
            lambda: (
                sample("pgqml_jobs_processed_total", queue="mq", state="succeeded") - before["ok"]
                == 3
            )
        )
        wait_until(
            lambda: (
                sample("pgqml_jobs_processed_total", queue="mq", state="failed") - before["bad"]
                == 1
            )
        )
        # the two jobs nobody handles are the queue's depth, and they are waiting
        wait_until(lambda: sample("pgqml_queue_depth", queue="mq") == 2)
        assert sample("pgqml_queue_oldest_ready_age_seconds", queue="mq") > 0
        assert sample("pgqml_workers_active", server="pgqml") == 0
    assert sample("pgqml_job_duration_seconds_count", method="mok") - before["dur"] == 3


def test_refuses_to_start_without_schema_or_tasks(empty_dsn):
    reg = pgqml.WorkerRegistry()
    reg.task("p")(lambda: None)
    server = pgqml.BackgroundJobServer(pgqml.ServerConfig(), empty_dsn, reg)
    with pytest.raises(errors.SchemaNotInstalled, match="pgqml migrate"):
        server.start()
    with pytest.raises(errors.ConfigurationError, match="no tasks"):
        pgqml.BackgroundJobServer(pgqml.ServerConfig(), empty_dsn, pgqml.WorkerRegistry())


def test_async_api_with_a_caller_owned_pool(dsn, autoconn):
    reg = pgqml.WorkerRegistry()

    @reg.task("double")
    async def double(n: int) -> int:
        return 2 * n

    async def main() -> Any:
        async with AsyncConnectionPool(dsn, min_size=3, max_size=4, open=False) as pool:
            server = pgqml.BackgroundJobServer(pgqml.ServerConfig(**FAST), pool, reg)
            await server.start_async()
            async with pool.connection() as conn:
                job = await double.enqueue_async(conn, n=21)
                await conn.commit()
            got = None
            for _ in range(250):
                async with pool.connection() as c2:
                    got = await pgqml.get_job_async(c2, job)
                    await c2.commit()
                if got is not None and got.state == pgqml.JobState.SUCCEEDED:
                    break
                await asyncio.sleep(0.02)
            await server.stop_async()
            assert not pool.closed  # the caller's pool is left open
            return got

    got = asyncio.run(main())
    assert got.result == 42


def test_worker_survives_all_its_connections_being_killed(dsn, autoconn):
    """A database restart or failover drops every connection: the pool reconnects,
    LISTEN is restored, and work continues without restarting the process."""
    reg = pgqml.WorkerRegistry()
    done: list[int] = []

    @reg.task("ping")
    async def ping(ctx: pgqml.WorkerContext) -> None:
        done.append(ctx.job.id)

    with running(dsn, reg, polling_interval=0.5) as server:
        first = pgqml.enqueue(autoconn, "ping")
        wait_until(lambda: first in done)
        killed = autoconn.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE datname = current_database() AND application_name LIKE 'pgqml%'"
        ).fetchone()[0]
        assert killed >= 2  # the pool's connections and the listener
        ids = [pgqml.enqueue(autoconn, "ping") for _ in range(5)]
        wait_until(lambda: set(ids) <= set(done), timeout=15, what="jobs after reconnect")
        wait_until(lambda: server.health()[0], timeout=15, what="health after reconnect")
        wait_until(
            lambda: all(finished(autoconn, i) for i in ids), timeout=15, what="outcomes written"
        )
    assert {job_row(autoconn, i)["state"] for i in ids} == {"succeeded"}


def test_run_async_stops_on_request_from_another_thread(dsn, autoconn):
    reg = pgqml.WorkerRegistry()
    reg.task("p")(lambda: "ran")
    server = pgqml.BackgroundJobServer(pgqml.ServerConfig(**FAST), dsn, reg)
    job = pgqml.enqueue(autoconn, "p")
    errors_: list[BaseException] = []

    def main() -> None:
        try:
            asyncio.run(server.run_async())
        except BaseException as exc:  # surfaced below
            errors_.append(exc)

    thread = threading.Thread(target=main)
    thread.start()
    try:
        assert wait_until(lambda: finished(autoconn, job))["result"] == "ran"
        assert server.is_running
    finally:
        server.request_stop()
        thread.join(10)
    assert not thread.is_alive() and errors_ == []
    assert not server.is_running
    assert autoconn.execute("SELECT count(*) FROM pgqml.servers").fetchone() == (0,)


def test_a_handler_raising_system_exit_fails_its_job_not_the_worker(dsn, autoconn):
    reg = pgqml.WorkerRegistry()

    @reg.task("quit", retry=pgqml.RetryPolicy.none())
    async def quit_() -> None:
        raise SystemExit(3)

    @reg.task("quit_sync", retry=pgqml.RetryPolicy.none())
    def quit_sync() -> None:
        raise KeyboardInterrupt

    reg.task("after")(lambda: "still running")
    a = pgqml.enqueue(autoconn, "quit")
    b = pgqml.enqueue(autoconn, "quit_sync")
    with running(dsn, reg) as server:
        da, db = (wait_until(lambda i=i: finished(autoconn, i)) for i in (a, b))
        c = pgqml.enqueue(autoconn, "after")
        assert wait_until(lambda: finished(autoconn, c))["result"] == "still running"
        assert server.running_jobs == 0 and server.is_running
    assert (da["state"], da["last_error"]) == ("failed", "SystemExit: 3")
    assert db["state"] == "failed" and db["last_error"].startswith("KeyboardInterrupt")


def test_all_queues_server_finds_queues_it_was_never_told_about(dsn, autoconn):
    """An all-queues server claims from a cached list of active queues. A queue
    announced by a notification joins it at once; a queue whose only job
    becomes due later (scheduled jobs send no notification) joins at the next
    refresh, within a polling interval."""
    reg = pgqml.WorkerRegistry()
    ran: dict[int, float] = {}

    @reg.task("seen")
    async def seen(ctx: pgqml.WorkerContext) -> None:
        ran[ctx.job.id] = time.monotonic()

    with running(dsn, reg, polling_interval=1.0):
        time.sleep(0.3)  # started, its list holds no queue yet
        t0 = time.monotonic()
        fresh = pgqml.enqueue(autoconn, "seen", queue="brand-new")
        wait_until(lambda: fresh in ran, timeout=5)
        assert ran[fresh] - t0 < 0.5  # the notification, not the next poll
        later = pgqml.enqueue(autoconn, "seen", queue="due-later", delay=0.5)
        wait_until(lambda: later in ran, timeout=5)
        due = job_row(autoconn, later)["run_at"].timestamp()
        assert time.time() - due < 3.0
    assert job_row(autoconn, fresh)["state"] == job_row(autoconn, later)["state"] == "succeeded"
