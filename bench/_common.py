"""Shared by drain_throughput.py and wakeup_latency.py: scratch database, raw SQL, logging."""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import sys
import time
from collections.abc import Iterator
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

import pgqml

# The raw baselines' claim and completion, without pgqml's procedures: claim up
# to %s ready jobs of the default queue (SKIP LOCKED), then move the ids in %s
# to history as succeeded in one statement.
PLAIN_CLAIM = """WITH c AS MATERIALIZED (
    SELECT id FROM pgqml.jobs WHERE queue = 'default' AND state = 'enqueued'
    ORDER BY priority DESC, run_at, id LIMIT %s FOR UPDATE SKIP LOCKED)
UPDATE pgqml.jobs j SET state = 'processing', attempt = attempt + 1, lease_owner = 'raw',
    lease_expires_at = now() + interval '30s', started_at = now()
FROM c WHERE j.id = c.id RETURNING j.id, j.attempt"""
PLAIN_COMPLETE = """WITH d AS (DELETE FROM pgqml.jobs WHERE id = ANY(%s) RETURNING *)
INSERT INTO pgqml.job_history (id, method, queue, payload, state, priority, attempt,
    max_attempts, run_at, created_at, started_at, finished_at, lease_owner, lease_expires_at,
    last_error, last_traceback, result, unique_key, metadata, tags, lost_count, expires_at)
SELECT id, method, queue, payload, 'succeeded', priority, attempt, max_attempts, run_at,
    created_at, started_at, now(), lease_owner, NULL, last_error, last_traceback, NULL,
    unique_key, metadata, tags, lost_count, now() + interval '1 day' FROM d"""


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def fresh_database(admin_dsn: str, name: str) -> Iterator[str]:
    """Create an empty database ``name`` (replacing a leftover one); yield its DSN.

    The database is dropped afterwards, whatever happened.
    """
    drop = sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
    with psycopg.connect(admin_dsn, autocommit=True) as admin:
        admin.execute(drop)
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield make_conninfo(admin_dsn, dbname=name)
    finally:
        with psycopg.connect(admin_dsn, autocommit=True) as admin:
            admin.execute(drop)


@contextlib.contextmanager
def scratch_database(admin_dsn: str) -> Iterator[tuple[str, Any]]:
    """Create and migrate ``pgqml_bench_<pid>``; yield its DSN and a settings line.

    The database is dropped afterwards, whatever happened.
    """
    with fresh_database(admin_dsn, f"pgqml_bench_{os.getpid()}") as dsn:
        with psycopg.connect(dsn) as c:
            pgqml.migrate(c)
            c.commit()
            row = c.execute(
                "SELECT current_setting('server_version'),"
                " current_setting('synchronous_commit'), current_setting('fsync'),"
                " current_setting('shared_buffers')"
            ).fetchone()
        assert row is not None
        yield (
            dsn,
            (
                f"PostgreSQL {row[0]}, synchronous_commit={row[1]}, fsync={row[2]}, "
                f"shared_buffers={row[3]}; pgqml impl={pgqml.__impl__}"
            ),
        )


def quiet_logging() -> collections.Counter[str]:
    """pgqml warns once per affected job: print only the first 3 lines of each kind.

    Returns the counts per message, for a "suppressed" summary.
    """
    seen: collections.Counter[str] = collections.Counter()

    def first_few(rec: logging.LogRecord) -> bool:
        seen[str(rec.msg)] += 1
        return seen[str(rec.msg)] <= 3

    logging.basicConfig(level=logging.WARNING, format="  %(name)s %(levelname)s: %(message)s")
    logging.getLogger().handlers[0].addFilter(first_few)
    return seen


def log_suppressed(seen: collections.Counter[str]) -> None:
    for msg, n in seen.items():
        if n > 3:
            log(f"({n - 3:,} more log lines like {msg[:70]!r} suppressed)")
