"""Transactional enqueue from Python (sync and async)."""

from __future__ import annotations

import asyncio
import select
from datetime import datetime, timedelta, timezone

import psycopg
import pytest

import pgqml
from pgqml import JobState


def count(conn: psycopg.Connection, table: str = "pgqml.all_jobs") -> int:
    return conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]


def test_commit_makes_job_visible_to_others(dsn, conn):
    with conn.transaction():
        conn.execute("CREATE TABLE orders (id int)")
        conn.execute("INSERT INTO orders VALUES (1)")
        job_id = pgqml.enqueue(
            conn, "send_email", {"to": "a@b.c"}, queue="emails", priority=3, max_attempts=2
        )
        with psycopg.connect(dsn) as other:
            assert pgqml.get_job(other, job_id) is None  # not committed yet
    with psycopg.connect(dsn) as other:
        job = pgqml.get_job(other, job_id)
    assert isinstance(job, pgqml.Job)
    assert (job.id, job.method, job.queue, job.payload) == (
        job_id,
        "send_email",
        "emails",
        {"to": "a@b.c"},
    )
    assert job.state is JobState.ENQUEUED
    assert (job.priority, job.attempt, job.max_attempts) == (3, 0, 2)
    assert job.run_at.tzinfo is not None
    assert job.result is None and job.unique_key is None
    assert job.metadata == {} and job.tags == []


def test_rollback_leaves_no_job(conn):
    with conn.transaction(force_rollback=True):
        pgqml.enqueue(conn, "send_email", {"to": "a@b.c"})
        assert count(conn) == 1
    assert count(conn) == 0


def test_get_job_missing_returns_none(conn):
    assert pgqml.get_job(conn, 123456) is None


def test_delay_schedules_on_the_database_clock(conn):
    job_id = pgqml.enqueue(conn, "report", delay=timedelta(minutes=5))
    db_now = conn.execute("SELECT now()").fetchone()[0]
    job = pgqml.get_job(conn, job_id)
    assert job.state is JobState.SCHEDULED
    assert job.run_at == db_now + timedelta(minutes=5)
    # seconds work too, and a zero delay is ready at once
    assert pgqml.get_job(conn, pgqml.enqueue(conn, "report", delay=0)).state is JobState.ENQUEUED
    assert pgqml.get_job(
        conn, pgqml.enqueue(conn, "report", delay=90)
    ).run_at == db_now + timedelta(seconds=90)


def test_run_at_past_is_ready_and_future_is_scheduled(conn):
    past = datetime(2020, 1, 1, tzinfo=timezone.utc)
    future = datetime.now(timezone(timedelta(hours=5))) + timedelta(days=1)
    assert pgqml.get_job(conn, pgqml.enqueue(conn, "m", run_at=past)).state is JobState.ENQUEUED
    job = pgqml.get_job(conn, pgqml.enqueue(conn, "m", run_at=future))
    assert job.state is JobState.SCHEDULED
    assert job.run_at == future


def test_metadata_tags_and_payload_round_trip(conn):
    payload = {"s": 'é ☃ \\ \t "q"', "n": [1, 2.5, None, True], "d": {"x": {}}}
    job_id = pgqml.enqueue(conn, "m", payload, metadata={"trace": "abc"}, tags=["a", "b c", 'd"e'])
    job = pgqml.get_job(conn, job_id)
    assert job.payload == payload
    assert job.metadata == {"trace": "abc"}
    assert job.tags == ["a", "b c", 'd"e']


def test_commit_notifies_once_with_queue_name(dsn, autoconn):
    with psycopg.connect(dsn, autocommit=True) as listener:
        listener.execute("LISTEN pgqml_jobs")
        with autoconn.transaction():
            pgqml.enqueue(autoconn, "m", queue="emails")
            pgqml.enqueue(autoconn, "m", queue="emails")
        notifies = list(listener.notifies(timeout=0.5))
    # one statement per enqueue: one notify each, de-duplicated by Postgres per transaction
    assert [(n.channel, n.payload) for n in notifies] == [("pgqml_jobs", "emails")]


def test_scheduled_job_does_not_notify(dsn, autoconn):
    with psycopg.connect(dsn, autocommit=True) as listener:
        listener.execute("LISTEN pgqml_jobs")
        pgqml.enqueue(autoconn, "m", delay=60)
        assert list(listener.notifies(timeout=0.3)) == []


def test_rollback_does_not_notify(dsn, conn):
    with psycopg.connect(dsn, autocommit=True) as listener:
        listener.execute("LISTEN pgqml_jobs")
        pgqml.enqueue(conn, "m")
        conn.rollback()
        assert list(listener.notifies(timeout=0.3)) == []


def test_async_twin(dsn):
    async def main() -> None:
        async with await psycopg.AsyncConnection.connect(dsn) as aconn:
            async with aconn.transaction():
                job_id = await pgqml.enqueue_async(aconn, "send_email", {"to": "x"}, queue="q")
            job = await pgqml.get_job_async(aconn, job_id)
            assert job.payload == {"to": "x"} and job.queue == "q"
            ids = await pgqml.enqueue_many_async(
                aconn, [{"method": "m", "payload": {"i": i}} for i in range(200)]
            )
            assert len(ids) == 200
            small = await pgqml.enqueue_many_async(aconn, [pgqml.JobSpec("m"), pgqml.JobSpec("n")])
            assert len(small) == 2
            with pytest.raises(pgqml.errors.InvalidQueueName):
                await pgqml.enqueue_async(aconn, "m", queue="")
            await aconn.commit()
            cur = await aconn.execute("SELECT count(*) FROM pgqml.jobs")
            assert (await cur.fetchone())[0] == 203
            async with aconn.transaction(force_rollback=True):
                await pgqml.enqueue_async(aconn, "m")
            cur = await aconn.execute("SELECT count(*) FROM pgqml.jobs")
            assert (await cur.fetchone())[0] == 203

    asyncio.run(main())


def test_listener_wakes_from_select(dsn, autoconn):
    """A worker blocked in select() on the socket wakes on commit."""
    with psycopg.connect(dsn, autocommit=True) as listener:
        listener.execute("LISTEN pgqml_jobs")
        pgqml.enqueue(autoconn, "m")
        ready, _, _ = select.select([listener.fileno()], [], [], 2)
        assert ready


def test_plain_and_function_paths_write_the_same_row(conn):
    """A job due now without unique key, metadata or tags takes the plain INSERT;
    a tag sends the same job through pgqml.enqueue_v1. Both rows must agree."""
    with conn.transaction():
        plain = pgqml.enqueue(conn, "m", {"a": 1}, queue="q", priority=-7, max_attempts=3)
        via_fn = pgqml.enqueue(conn, "m", {"a": 1}, queue="q", priority=-7, max_attempts=3,
                               tags=["t"])  # fmt: skip
        rows = conn.execute(
            "SELECT id, method, queue, payload, state, priority, attempt, max_attempts,"
            " run_at = now(), created_at = now(), metadata, tags, unique_key"
            " FROM pgqml.jobs WHERE id = ANY(%s) ORDER BY id",
            ([plain, via_fn],),
        ).fetchall()
    a, b = rows
    assert a[0] == plain and b[0] == via_fn
    assert a[1:11] == b[1:11] == (
        "m", "q", {"a": 1}, "enqueued", -7, 0, 3, True, True, {},
    )  # fmt: skip
    assert (a[11], b[11]) == ([], ["t"])
    assert a[12] is None and b[12] is None
