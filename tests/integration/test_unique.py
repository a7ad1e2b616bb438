"""Unique jobs: one live job per key, also under concurrent producers."""

from __future__ import annotations

import random
import threading

import psycopg

import pgqml

PRODUCERS = 16
KEYS = 40


def test_same_key_returns_existing_live_job(conn):
    first = pgqml.enqueue(conn, "charge", {"order": 42}, unique_key="order-42")
    again = pgqml.enqueue(conn, "charge", {"order": 42, "v": 2}, unique_key="order-42")
    assert again == first
    assert pgqml.get_job(conn, first).payload == {"order": 42}
    other = pgqml.enqueue(conn, "charge", unique_key="order-43")
    assert other != first


def test_finished_job_frees_its_key(conn):
    first = pgqml.enqueue(conn, "charge", unique_key="k")
    # finish it the way a worker would: move it to history
    conn.execute(
        """
        WITH done AS (DELETE FROM pgqml.jobs WHERE id = %s RETURNING *)
        INSERT INTO pgqml.job_history
        SELECT id, method, queue, payload, 'succeeded', priority, attempt, max_attempts,
               run_at, created_at, started_at, now(), NULL, NULL, last_error, last_traceback,
               result, unique_key, metadata, tags, lost_count, expires_at
        FROM done
        """,
        (first,),
    )
    second = pgqml.enqueue(conn, "charge", unique_key="k")
    assert second != first


def test_sql_unique_key(conn):
    a = conn.execute("SELECT pgqml.enqueue('m', unique_key => 'order-42')").fetchone()[0]
    b = conn.execute("SELECT pgqml.enqueue('m', unique_key => 'order-42')").fetchone()[0]
    assert a == b
    ids = [
        r[0]
        for r in conn.execute(
            """SELECT * FROM pgqml.enqueue_many('[{"method": "m", "unique_key": "order-42"},
                                                 {"method": "m", "unique_key": "n"}]')"""
        )
    ]
    assert ids[0] == a and ids[1] != a


def test_concurrent_producers_create_exactly_one_live_job_per_key(dsn):
    barrier = threading.Barrier(PRODUCERS)
    results: list[dict[str, int]] = [{} for _ in range(PRODUCERS)]
    failures: list[BaseException] = []

    def produce(n: int) -> None:
        rng = random.Random(n)
        keys = [f"key-{k}" for k in range(KEYS)]
        rng.shuffle(keys)
        try:
            with psycopg.connect(dsn, autocommit=True) as c:
                barrier.wait(timeout=30)
                for i, key in enumerate(keys):
                    if i % 5 == 0:  # some through the bulk path, some in a shared transaction
                        batch = keys[i : i + 2]
                        ids = pgqml.enqueue_many(
                            c, [{"method": "m", "unique_key": k} for k in batch]
                        )
                        results[n].update(zip(batch, ids, strict=True))
                    elif key not in results[n]:
                        with c.transaction():
                            results[n][key] = pgqml.enqueue(c, "m", {"p": n}, unique_key=key)
        except BaseException as exc:  # pragma: no cover - reported below
            failures.append(exc)

    threads = [threading.Thread(target=produce, args=(n,)) for n in range(PRODUCERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not failures, failures
    with psycopg.connect(dsn) as c:
        rows = c.execute(
            "SELECT unique_key, count(*), min(id) FROM pgqml.jobs GROUP BY unique_key"
        ).fetchall()
    assert len(rows) == KEYS
    assert all(cnt == 1 for _, cnt, _ in rows)
    live = {key: job_id for key, _, job_id in rows}
    for produced in results:
        assert produced == live  # every producer was handed the one live job's id
