"""enqueue_many: the COPY path, the JSON path, unique keys, all-or-nothing."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone

import psycopg
import pytest

import pgqml
from pgqml import JobSpec, JobState


def test_copy_path_many_jobs_in_order(conn):
    jobs = [JobSpec("send_email", {"i": i}, queue=f"q{i % 3}", priority=i % 7) for i in range(5000)]
    ids = pgqml.enqueue_many(conn, jobs)
    conn.commit()
    assert len(ids) == 5000 and len(set(ids)) == 5000
    rows = conn.execute(
        "SELECT id, payload->>'i', queue, priority, state::text FROM pgqml.jobs ORDER BY id"
    ).fetchall()
    by_id = {r[0]: r for r in rows}
    for i, job_id in enumerate(ids):
        assert by_id[job_id][1:] == (str(i), f"q{i % 3}", i % 7, "enqueued")


def test_copy_path_with_delay_run_at_tags_metadata(conn):
    when = datetime(2030, 1, 1, tzinfo=timezone.utc)
    jobs = [
        {"method": "m", "delay": timedelta(hours=1), "tags": ["x", "y z"], "metadata": {"k": 1}},
        {"method": "m", "run_at": when, "payload": {"s": "tab\there\\back"}},
        *({"method": "m"} for _ in range(100)),
    ]
    ids = pgqml.enqueue_many(conn, jobs)
    now = conn.execute("SELECT now()").fetchone()[0]
    a, b = pgqml.get_job(conn, ids[0]), pgqml.get_job(conn, ids[1])
    assert a.state is JobState.SCHEDULED and a.tags == ["x", "y z"] and a.metadata == {"k": 1}
    assert a.run_at == now + timedelta(hours=1)
    assert b.run_at == when and b.payload == {"s": "tab\there\\back"}
    assert pgqml.get_job(conn, ids[2]).state is JobState.ENQUEUED


def test_one_notify_per_queue_per_statement(dsn, autoconn):
    with psycopg.connect(dsn, autocommit=True) as listener:
        listener.execute("LISTEN pgqml_jobs")
        pgqml.enqueue_many(autoconn, [JobSpec("m", queue=f"q{i % 2}") for i in range(1000)])
        got = sorted(n.payload for n in listener.notifies(timeout=0.5))
    assert got == ["q0", "q1"]


def test_bulk_unique_keys_within_batch_and_against_live_jobs(conn):
    existing = pgqml.enqueue(conn, "m", unique_key="a")
    ids = pgqml.enqueue_many(
        conn,
        [
            {"method": "m", "unique_key": "a"},
            {"method": "m", "unique_key": "b"},
            {"method": "m", "unique_key": "b"},
            {"method": "m"},
        ],
    )
    assert ids[0] == existing
    assert ids[1] == ids[2] != ids[3]
    assert conn.execute("SELECT count(*) FROM pgqml.jobs").fetchone()[0] == 3


def test_invalid_job_in_batch_writes_nothing(conn):
    jobs = [{"method": "m"} for _ in range(500)] + [{"method": "m", "priority": 5000}]
    with pytest.raises(pgqml.errors.InvalidPriority, match="job 500"):
        pgqml.enqueue_many(conn, jobs)
    with pytest.raises(pgqml.errors.ValidationError, match="unknown keys"):
        pgqml.enqueue_many(conn, [{"method": "m", "prio": 1}])
    with pytest.raises(pgqml.errors.ValidationError):
        pgqml.enqueue_many(conn, ["m"])  # type: ignore[list-item]
    assert conn.execute("SELECT count(*) FROM pgqml.jobs").fetchone()[0] == 0


def test_empty_batch(conn):
    assert pgqml.enqueue_many(conn, []) == []


def test_rollback_of_bulk(conn):
    pgqml.enqueue_many(conn, [JobSpec("m") for _ in range(300)])
    conn.rollback()
    assert conn.execute("SELECT count(*) FROM pgqml.jobs").fetchone()[0] == 0


def _bad_late_batch() -> list[dict[str, object]]:
    # Past the first COPY chunk: rows before it have already been streamed.
    return [{"method": "m", "payload": {"i": i}} for i in range(2500)] + [
        {"method": "m", "priority": 5000}
    ]


def test_bad_job_in_a_late_copy_chunk_keeps_the_callers_transaction(conn):
    mine = pgqml.enqueue(conn, "mine")  # the caller's own work, same transaction
    with pytest.raises(pgqml.errors.InvalidPriority, match="job 2500"):
        pgqml.enqueue_many(conn, _bad_late_batch())
    # The transaction is still usable and still holds the caller's job.
    assert conn.execute("SELECT array_agg(id) FROM pgqml.jobs").fetchone()[0] == [mine]
    conn.commit()
    assert conn.execute("SELECT count(*) FROM pgqml.jobs").fetchone()[0] == 1


def test_bad_job_in_a_late_copy_chunk_writes_nothing_in_autocommit(autoconn):
    with pytest.raises(pgqml.errors.InvalidPriority, match="job 2500"):
        pgqml.enqueue_many(autoconn, _bad_late_batch())
    assert autoconn.execute("SELECT count(*) FROM pgqml.jobs").fetchone()[0] == 0
    ids = pgqml.enqueue_many(autoconn, [JobSpec("m", {"i": i}) for i in range(2500)])
    assert autoconn.execute("SELECT count(*) FROM pgqml.jobs").fetchone()[0] == len(ids) == 2500


def test_async_bad_job_in_a_late_copy_chunk(dsn):
    async def main() -> None:
        async with await psycopg.AsyncConnection.connect(dsn) as aconn:
            mine = await pgqml.enqueue_async(aconn, "mine")
            with pytest.raises(pgqml.errors.InvalidPriority, match="job 2500"):
                await pgqml.enqueue_many_async(aconn, _bad_late_batch())
            ids = await pgqml.enqueue_many_async(aconn, [JobSpec("m") for _ in range(2100)])
            await aconn.commit()
            cur = await aconn.execute("SELECT count(*), min(id) FROM pgqml.jobs")
            assert await cur.fetchone() == (2101, mine)
            assert len(set(ids)) == 2100

    asyncio.run(main())
