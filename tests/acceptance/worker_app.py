"""Tasks for the worker acceptance tests (loaded by ``pgqml worker --app worker_app:registry``).

Every task records what it did in the ``ledger`` table that the tests create
in their database::

    ledger(job_id bigint, attempt int, pid int, event text, at timestamptz)

written on a connection of the task's own (autocommit, one per process, DSN
from ``PGQML_DSN``), never through the worker's, so a row proves that a
handler ran in a given process, whatever then becomes of the job.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from typing import Any

import psycopg

import pgqml

registry = pgqml.WorkerRegistry()

_INSERT = "INSERT INTO ledger (job_id, attempt, pid, event) VALUES (%s, %s, %s, %s)"

_lock = threading.Lock()
_conn: psycopg.Connection[Any] | None = None
_aconns: dict[asyncio.AbstractEventLoop, psycopg.AsyncConnection[Any]] = {}


def _dsn() -> str:
    return os.environ["PGQML_DSN"]


def _sync_conn() -> psycopg.Connection[Any]:
    """The process's ledger connection (psycopg connections are thread-safe)."""
    global _conn
    with _lock:
        if _conn is None or _conn.closed:
            _conn = psycopg.connect(_dsn(), autocommit=True, application_name="worker_app")
        return _conn


def note(ctx: pgqml.WorkerContext, event: str = "start") -> None:
    """Append a ledger row for this attempt (sync)."""
    _sync_conn().execute(_INSERT, (ctx.job.id, ctx.attempt, os.getpid(), event))


async def anote(ctx: pgqml.WorkerContext, event: str = "start") -> None:
    """Append a ledger row for this attempt (async, on a per-loop connection)."""
    loop = asyncio.get_running_loop()
    conn = _aconns.get(loop)
    if conn is None or conn.closed:
        conn = await psycopg.AsyncConnection.connect(
            _dsn(), autocommit=True, application_name="worker_app"
        )
        _aconns[loop] = conn
    await conn.execute(_INSERT, (ctx.job.id, ctx.attempt, os.getpid(), event))


def _sleep(ctx: pgqml.WorkerContext, seconds: float) -> bool:
    """Sleep in small steps; stop early once the attempt is cancelled. True if cancelled."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if ctx.is_cancelled():
            return True
        time.sleep(min(0.05, max(0.0, deadline - time.monotonic())))
    return ctx.is_cancelled()


@registry.task("record")
def record(ctx: pgqml.WorkerContext, n: int = 0) -> int:
    """One ledger row, then return ``n``."""
    note(ctx)
    return n


@registry.task("record_async")
async def record_async(ctx: pgqml.WorkerContext, n: int = 0) -> int:
    """``record`` as an async handler."""
    await anote(ctx)
    return n


@registry.task("sleepy")
def sleepy(ctx: pgqml.WorkerContext, seconds: float = 1.0) -> dict[str, Any]:
    """A ledger row, ``seconds`` of sleep (cut short if cancelled), an 'end'/'cancelled' row."""
    note(ctx)
    cancelled = _sleep(ctx, seconds)
    note(ctx, "cancelled" if cancelled else "end")
    return {"slept": seconds, "pid": os.getpid()}


@registry.task("sleepy_once")
def sleepy_once(ctx: pgqml.WorkerContext, seconds: float = 30.0) -> dict[str, Any]:
    """Like ``sleepy`` on the first attempt; later attempts return at once."""
    note(ctx)
    cancelled = _sleep(ctx, seconds) if ctx.attempt == 1 else False
    note(ctx, "cancelled" if cancelled else "end")
    return {"attempt": ctx.attempt, "pid": os.getpid()}


@registry.task("stamp")
async def stamp(ctx: pgqml.WorkerContext) -> None:
    """Latency probe: the ledger row's ``at`` (clock_timestamp()) is the handler's start."""
    await anote(ctx)
