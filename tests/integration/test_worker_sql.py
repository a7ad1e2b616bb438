"""The worker's stored procedures, called directly: claim order and filters,
fencing of every write after a claim, rescue, release, bad input."""

from __future__ import annotations

import psycopg
import pytest

import pgqml
from pgqml import errors


def claim(conn, owner="w1", queues=None, methods=None, limit=10, lease=30.0):
    return conn.execute(
        "SELECT id, attempt, previous_state::text FROM pgqml.fetch_jobs_v1(%s, %s, %s, %s, %s)",
        (owner, queues, methods, limit, lease),
    ).fetchall()


def complete(conn, owner, ids, attempts, outcomes, *, errors_=None, delays=None, run_at=None):
    n = len(ids)
    return conn.execute(
        "SELECT id, state::text FROM pgqml.complete_jobs_v1(%s, %s::bigint[], %s::int[],"
        " %s::text[], %s::jsonb[], %s::text[], %s::text[], %s::timestamptz[], %s::float8[])",
        (
            owner,
            ids,
            attempts,
            outcomes,
            [None] * n,
            errors_ or [None] * n,
            [None] * n,
            run_at or [None] * n,
            delays or [None] * n,
        ),
    ).fetchall()


def state_of(conn, job_id):
    return conn.execute(
        "SELECT state::text, attempt, lease_owner FROM pgqml.all_jobs WHERE id = %s", (job_id,)
    ).fetchone()


def test_claim_order_priority_then_due_time_then_id(autoconn):
    a = pgqml.enqueue(autoconn, "m", priority=0)
    b = pgqml.enqueue(autoconn, "m", priority=5)
    c = pgqml.enqueue(autoconn, "m", priority=0)
    d = pgqml.enqueue(autoconn, "m", priority=5)
    got = [r[0] for r in claim(autoconn, limit=1)]
    got += [r[0] for r in claim(autoconn, limit=1)]
    got += [r[0] for r in claim(autoconn, limit=2)]
    assert got[:2] == [b, d]
    assert sorted(got[2:]) == [a, c]


def test_claim_stamps_owner_lease_attempt_from_database_clock(autoconn):
    job = pgqml.enqueue(autoconn, "m")
    [(job_id, attempt, previous)] = claim(autoconn, owner="srv-1", lease=12.5)
    assert (job_id, attempt, previous) == (job, 1, "enqueued")
    row = autoconn.execute(
        "SELECT state::text, lease_owner, lease_expires_at - now(),"
        " now() - started_at < interval '1 s'"
        " FROM pgqml.jobs WHERE id = %s",
        (job,),
    ).fetchone()
    assert row[0] == "processing" and row[1] == "srv-1"
    assert 12 <= row[2].total_seconds() <= 12.5
    assert row[3] is True


def test_claim_filters_queues_and_methods_and_never_claims_unknown(autoconn):
    pgqml.enqueue(autoconn, "known", queue="q1")
    pgqml.enqueue(autoconn, "unknown", queue="q1")
    pgqml.enqueue(autoconn, "known", queue="q2")
    rows = claim(autoconn, queues=["q1"], methods=["known"])
    assert len(rows) == 1
    assert claim(autoconn, queues=["q1"], methods=["known"]) == []
    # every queue (NULL), known methods only
    assert len(claim(autoconn, methods=["known"])) == 1
    left = autoconn.execute(
        "SELECT method, state::text, attempt FROM pgqml.jobs WHERE state <> 'processing'"
    ).fetchall()
    assert left == [("unknown", "enqueued", 0)]


def test_due_scheduled_and_retry_jobs_are_claimed_future_ones_not(autoconn):
    due = pgqml.enqueue(autoconn, "m", delay=3600)
    later = pgqml.enqueue(autoconn, "m", delay=3600)
    autoconn.execute("UPDATE pgqml.jobs SET run_at = now() - interval '1 s' WHERE id = %s", (due,))
    rows = claim(autoconn)
    assert [(r[0], r[2]) for r in rows] == [(due, "scheduled")]
    assert state_of(autoconn, later)[0] == "scheduled"


def test_limit_is_respected_and_concurrent_claimers_split_the_rows(dsn):
    with psycopg.connect(dsn, autocommit=True) as c:
        pgqml.enqueue_many(c, [pgqml.JobSpec("m", {"n": i}) for i in range(100)])
    with psycopg.connect(dsn) as c1, psycopg.connect(dsn) as c2:
        first = claim(c1, owner="a", limit=30)  # c1's transaction stays open: rows locked
        second = claim(c2, owner="b", limit=100)
        assert len(first) == 30 and len(second) == 70
        assert not {r[0] for r in first} & {r[0] for r in second}
        c1.commit()
        c2.commit()


def test_complete_is_fenced_on_attempt_and_owner(autoconn):
    job = pgqml.enqueue(autoconn, "m")
    [(_, attempt, _)] = claim(autoconn, owner="w1")
    assert complete(autoconn, "w2", [job], [attempt], ["succeeded"]) == []  # wrong owner
    assert complete(autoconn, "w1", [job], [attempt + 1], ["succeeded"]) == []  # wrong attempt
    assert state_of(autoconn, job) == ("processing", 1, "w1")
    assert complete(autoconn, "w1", [job], [attempt], ["succeeded"]) == [(job, "succeeded")]
    # a second (late, duplicate) write changes nothing
    assert complete(autoconn, "w1", [job], [attempt], ["failed"]) == []
    assert state_of(autoconn, job) == ("succeeded", 1, "w1")


def test_stale_worker_writes_nothing_after_rescue_and_reclaim(autoconn):
    job = pgqml.enqueue(autoconn, "m", max_attempts=3)
    claim(autoconn, owner="old", lease=0.05)
    autoconn.execute("SELECT pg_sleep(0.1)")
    rescued = autoconn.execute("SELECT id, state::text FROM pgqml.rescue_jobs_v1()").fetchall()
    assert rescued == [(job, "enqueued")]
    row = autoconn.execute(
        "SELECT attempt, lost_count, last_error FROM pgqml.jobs WHERE id = %s", (job,)
    ).fetchone()
    assert row[0] == 1 and row[1] == 1 and "worker lost" in row[2] and "old" in row[2]
    [(_, attempt2, previous)] = claim(autoconn, owner="new")
    assert attempt2 == 2 and previous == "enqueued"
    # the old owner wakes up and reports success, renews, releases: all fenced out
    assert complete(autoconn, "old", [job], [1], ["succeeded"]) == []
    hb = autoconn.execute(
        "SELECT server_known, renewed FROM pgqml.heartbeat_v1('old', %s, %s, 30)", ([job], [1])
    ).fetchone()
    assert hb == (False, [])
    assert autoconn.execute(
        "SELECT count(*) FROM pgqml.release_jobs_v1('old', %s, %s)", ([job], [1])
    ).fetchone() == (0,)
    assert state_of(autoconn, job) == ("processing", 2, "new")


def test_rescue_fails_a_job_without_attempts_left(autoconn):
    job = pgqml.enqueue(autoconn, "m", max_attempts=1)
    claim(autoconn, owner="w", lease=0.01)
    autoconn.execute("SELECT pg_sleep(0.05)")
    assert autoconn.execute("SELECT * FROM pgqml.rescue_jobs_v1()").fetchall() == [(job, "failed")]
    row = autoconn.execute(
        "SELECT state::text, lost_count, last_error, expires_at > now()"
        " FROM pgqml.job_history WHERE id = %s",
        (job,),
    ).fetchone()
    assert row[0] == "failed" and row[1] == 1 and "no attempts left" in row[2] and row[3]


def test_rescue_leaves_live_leases_alone(autoconn):
    job = pgqml.enqueue(autoconn, "m")
    claim(autoconn, owner="w", lease=30)
    assert autoconn.execute("SELECT * FROM pgqml.rescue_jobs_v1()").fetchall() == []
    assert state_of(autoconn, job)[0] == "processing"


def test_heartbeat_renews_only_own_current_attempts(autoconn):
    a = pgqml.enqueue(autoconn, "m")
    b = pgqml.enqueue(autoconn, "m")
    autoconn.execute(
        "SELECT pgqml.register_server_v1('w', 'n', 'h', 1, '{}', 4)",
    )
    claim(autoconn, owner="w", lease=1)
    known, renewed = autoconn.execute(
        "SELECT * FROM pgqml.heartbeat_v1('w', %s, %s, 60)", ([a, b], [1, 7])
    ).fetchone()
    assert known is True and renewed == [a]
    left = autoconn.execute(
        "SELECT id, lease_expires_at - now() > interval '50 s' FROM pgqml.jobs ORDER BY id"
    ).fetchall()
    assert left == [(a, True), (b, False)]


def test_retry_outcome_uses_database_clock_delay_or_explicit_time(autoconn):
    a = pgqml.enqueue(autoconn, "m")
    b = pgqml.enqueue(autoconn, "m")
    claim(autoconn, owner="w")
    at = autoconn.execute("SELECT now() + interval '1 hour'").fetchone()[0]
    out = complete(
        autoconn,
        "w",
        [a, b],
        [1, 1],
        ["retry", "retry"],
        errors_=["boom", "later"],
        delays=[5.0, None],
        run_at=[None, at],
    )
    assert sorted(out) == [(a, "awaiting_retry"), (b, "awaiting_retry")]
    rows = dict(
        autoconn.execute(
            "SELECT id, extract(epoch FROM run_at - now()) FROM pgqml.jobs ORDER BY id"
        ).fetchall()
    )
    assert 4.5 <= float(rows[a]) <= 5.0
    assert 3599 <= float(rows[b]) <= 3600
    # not due: not claimable before run_at
    assert claim(autoconn, owner="w") == []


def test_release_gives_jobs_back_uncharged_and_notifies(dsn, autoconn):
    job = pgqml.enqueue(autoconn, "m", queue="q")
    claim(autoconn, owner="w")
    with psycopg.connect(dsn, autocommit=True) as listener:
        listener.execute("LISTEN pgqml_jobs")
        released = autoconn.execute(
            "SELECT * FROM pgqml.release_jobs_v1('w', %s, %s)", ([job], [1])
        ).fetchall()
        assert released == [(job,)]
        notes = list(listener.notifies(timeout=2, stop_after=1))
        assert [n.payload for n in notes] == ["q"]
    assert state_of(autoconn, job) == ("enqueued", 0, None)


@pytest.mark.parametrize(
    ("sql", "params"),
    [
        ("SELECT * FROM pgqml.fetch_jobs_v1(NULL, NULL, NULL, 10, 30)", None),
        ("SELECT * FROM pgqml.fetch_jobs_v1('w', NULL, NULL, 0, 30)", None),
        ("SELECT * FROM pgqml.fetch_jobs_v1('w', NULL, NULL, 10, 0)", None),
        ("SELECT * FROM pgqml.heartbeat_v1('w', '{1,2}', '{1}', 30)", None),
        ("SELECT * FROM pgqml.release_jobs_v1('w', '{1}', '{}')", None),
        (
            "SELECT * FROM pgqml.complete_jobs_v1('w', '{1}', '{1}', '{bogus}', '{NULL}',"
            " '{NULL}', '{NULL}', '{NULL}', '{NULL}')",
            None,
        ),
    ],
)
def test_bad_worker_calls_raise_pq110(autoconn, sql, params):
    pgqml.enqueue(autoconn, "m")
    with pytest.raises(psycopg.Error) as info:
        autoconn.execute(sql, params)
    assert info.value.sqlstate == "PQ110"
    assert isinstance(errors.translate(info.value), errors.InvalidWorkerCall)
    assert autoconn.execute("SELECT state::text, attempt FROM pgqml.jobs").fetchall() == [
        ("enqueued", 0)
    ]


def test_claim_stays_index_driven_with_big_history_and_future_rows(autoconn):
    """The claim must not scan finished, future-scheduled or failed rows."""
    autoconn.execute(
        """
        INSERT INTO pgqml.job_history (id, method, queue, payload, state, priority, attempt,
            max_attempts, run_at, created_at, finished_at)
        SELECT nextval('pgqml.job_id_seq'), 'm', 'default', '{}',
               CASE WHEN g % 10 = 0 THEN 'failed' ELSE 'succeeded' END::pgqml.job_state,
               0, 1, 5, now(), now(), now()
        FROM generate_series(1, 20000) g;
        INSERT INTO pgqml.jobs (method, queue, state, run_at)
        SELECT 'm', 'default', 'scheduled', now() + interval '1 day'
        FROM generate_series(1, 20000);
        ANALYZE pgqml.jobs;
        ANALYZE pgqml.job_history;
        """
    )
    pgqml.enqueue_many(autoconn, [pgqml.JobSpec("m") for _ in range(5000)])
    autoconn.execute("ANALYZE pgqml.jobs")
    autoconn.execute("LOAD 'auto_explain'")
    autoconn.execute("SET auto_explain.log_min_duration = 0")
    autoconn.execute("SET auto_explain.log_nested_statements = on")
    autoconn.execute("SET client_min_messages = log")
    autoconn.execute("SET auto_explain.log_level = 'NOTICE'")
    plans: list[str] = []
    autoconn.add_notice_handler(lambda d: plans.append(d.message_primary or ""))
    for _ in range(7):  # past PL/pgSQL's five custom plans, where a generic one could start
        plans.clear()
        rows = claim(autoconn, queues=["default"], methods=["m"], limit=100)
        assert len(rows) == 100
    text = "\n".join(p for p in plans if "pgqml.jobs" in p or "jobs j" in p)
    assert "Seq Scan on jobs" not in text, text
    assert "Bitmap Heap Scan on jobs" not in text, text  # an ordered index walk, no sort
    assert "jobs_ready_idx" in text and "jobs_due_idx" in text, text
