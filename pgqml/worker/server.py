"""``BackgroundJobServer``: claims jobs, runs them, records outcomes, keeps leases.

One asyncio event loop per process runs these tasks:

* **fetch**: claims up to the free concurrency in one statement
  (``pgqml.fetch_jobs_v1``), then waits for a wakeup (LISTEN), a freed slot
  (when the last claim was full, so more work is likely) or the polling
  interval, whichever comes first;
* **listen**: a dedicated connection LISTENing on ``pgqml_jobs``; reconnects
  with backoff and then wakes the fetch loop, since notifications sent while
  it was away are gone;
* **flush**: writes finished attempts' outcomes in batches
  (``pgqml.complete_jobs_v1``), fenced on (job id, attempt, owner);
* **heartbeat**: renews the leases of running attempts and the server's
  registry row; an attempt whose lease did not renew is cancelled and
  nothing is written for it. If the database is unreachable for longer than
  ``lease_duration - heartbeat_interval`` the server stops trusting its
  claims and cancels them itself (the database will hand them to others);
* **maintenance**: rescues attempts whose lease expired (any server's),
  prunes dead registry rows, refreshes queue gauges, logs a throughput summary.

Async handlers run on the loop; sync handlers run in daemon threads (see
:mod:`pgqml.worker._threads`). Timeouts cancel async handlers. A sync
handler cannot be interrupted in Python: on timeout its attempt is recorded
at once as timed out (retried or failed by the policy), its context is
marked cancelled (``ctx.is_cancelled()``), its eventual return value is
discarded, and its thread keeps a concurrency slot until it returns. The
outcome is fenced either way.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import math
import os
import random
import secrets
import signal
import socket
import threading
import time
import traceback
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

import orjson
import psycopg
from psycopg_pool import AsyncConnectionPool

from pgqml import _queries, client, errors
from pgqml import metrics as _metrics
from pgqml import migrations as _migrations
from pgqml._impl import impl
from pgqml.states import JobState
from pgqml.worker._threads import ThreadPool
from pgqml.worker.config import ServerConfig
from pgqml.worker.middleware import (
    LoggingMiddleware,
    Middleware,
    StateChangeHook,
    build_chain,
)
from pgqml.worker.task import (
    Handler,
    PayloadMismatch,
    WorkerContext,
    WorkerRegistry,
    WorkerResult,
    registry_from,
)

if TYPE_CHECKING:
    from pgqml._purepy import Job

__all__ = ["BackgroundJobServer", "JobTimeout"]

log = logging.getLogger("pgqml.worker")

_CHANNEL = "pgqml_jobs"
_RESCUE_BATCH = 1000
_STATS_CAP = 10_000


class JobTimeout(TimeoutError):
    """The attempt ran longer than its timeout."""


class _Attempt:
    """One claimed attempt, from claim until its outcome is written."""

    __slots__ = (
        "attempt",
        "ctx",
        "handler",
        "id",
        "job",
        "previous_state",
        "renewed_at",
        "task",
        "thread_future",
        "timeouts",
    )

    def __init__(
        self, job: Job, handler: Handler, ctx: WorkerContext, renewed_at: float, previous: str
    ) -> None:
        self.job = job
        self.id: int = job.id
        self.attempt: int = job.attempt
        self.handler = handler
        self.ctx = ctx
        self.renewed_at = renewed_at
        self.previous_state = previous
        self.task: asyncio.Task[None] | None = None
        self.thread_future: asyncio.Future[Any] | None = None
        self.timeouts: _TimeoutGroup | None = None


class _TimeoutGroup:
    """One timer for the async attempts of a claimed batch that share a timeout.

    A timer per attempt costs a heap push and a cancel per job; attempts
    claimed together start together, so one timer per (batch, timeout) does.
    It is cancelled when the last of its attempts ends.
    """

    __slots__ = ("attempts", "handle", "remaining")

    def __init__(self) -> None:
        self.attempts: list[_Attempt] = []
        self.remaining = 0
        self.handle: asyncio.TimerHandle | None = None

    def done_one(self) -> None:
        self.remaining -= 1
        if self.remaining <= 0 and self.handle is not None:
            self.handle.cancel()
            self.handle = None
            self.attempts = []


class _Outcome:
    __slots__ = ("attempt", "delay", "error", "kind", "result", "run_at", "traceback")

    def __init__(
        self,
        attempt: _Attempt,
        kind: str,
        result: str | None = None,
        error: str | None = None,
        traceback: str | None = None,
        run_at: Any = None,
        delay: float | None = None,
    ) -> None:
        self.attempt = attempt
        self.kind = kind  # succeeded | failed | retry
        self.result = result
        self.error = error
        self.traceback = traceback
        self.run_at = run_at
        self.delay = delay


def _server_id(name: str) -> str:
    return f"{name}:{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"


class BackgroundJobServer:
    """Runs the jobs of a :class:`WorkerRegistry` from a pgqml database.

    ``dsn_or_pool`` is a connection string or a
    ``psycopg_pool.AsyncConnectionPool`` (at least 3 connections; a LISTEN
    connection is opened separately from its conninfo).

    Run it with :meth:`run` (blocking, handles SIGTERM/SIGINT) or
    :meth:`run_async`; or :meth:`start` / :meth:`stop` (a background thread)
    and :meth:`start_async` / :meth:`stop_async` (the current event loop).

    ``middleware`` replaces the default chain ``[LoggingMiddleware()]``
    (first = outermost); ``hooks`` are called after each written transition.
    """

    def __init__(
        self,
        config: ServerConfig | None,
        dsn_or_pool: str | AsyncConnectionPool[Any],
        registry: WorkerRegistry | Sequence[Handler],
        *,
        middleware: Sequence[Middleware] | None = None,
        hooks: Sequence[StateChangeHook] = (),
    ) -> None:
        self.config = config or ServerConfig()
        self.registry = registry_from(registry)
        if not len(self.registry):
            raise errors.ConfigurationError(
                "The registry has no tasks: register handlers with @registry.task or "
                "registry.register(...) before starting a server"
            )
        if isinstance(dsn_or_pool, str):
            self._dsn: str = dsn_or_pool
            self._pool: AsyncConnectionPool[Any] | None = None
            self._own_pool = True
        elif isinstance(dsn_or_pool, AsyncConnectionPool):
            if not isinstance(dsn_or_pool.conninfo, str):
                raise errors.ConfigurationError(
                    "the pool's conninfo must be a string: the server opens its LISTEN "
                    "connection with it"
                )
            self._dsn = dsn_or_pool.conninfo
            self._pool = dsn_or_pool
            self._own_pool = False
        else:
            raise errors.ConfigurationError(
                f"dsn_or_pool must be a connection string or a psycopg_pool.AsyncConnectionPool, "
                f"got {type(dsn_or_pool).__name__}"
            )
        self._middleware: list[Middleware] = (
            [LoggingMiddleware()] if middleware is None else list(middleware)
        )
        self._hooks: list[StateChangeHook] = list(hooks)
        self.server_id = _server_id(self.config.server_name)
        self._methods = self.registry.names()
        self._queues = None if self.config.queues is None else list(self.config.queues)
        self._state = "new"
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._thread_loop: asyncio.AbstractEventLoop | None = None
        self._stop_timeout: float | None = None
        self._reset()

    def _reset(self) -> None:
        self._attempts: dict[int, _Attempt] = {}
        self._unflushed: dict[int, _Attempt] = {}
        self._pending: list[_Outcome] = []
        self._zombies: set[asyncio.Future[Any]] = set()
        self._tasks: list[asyncio.Task[None]] = []
        self._last_heartbeat_ok = 0.0
        self._listening = False
        self._counts = {"succeeded": 0, "failed": 0, "retry": 0, "lost": 0}
        self._fetch_task: asyncio.Task[None] | None = None
        self._fetch_conn: psycopg.AsyncConnection[Any] | None = None
        self._done: asyncio.Event | None = None
        # An all-queues server claims from the queues known to hold waiting
        # jobs: listing them in SQL (a loose index scan) on every claim cost
        # ~0.3 ms of a ~0.65 ms claim. The list is refreshed at least once per
        # polling interval, and a notification adds its queue at once.
        self._active: set[str] = set()
        self._notified: set[str] = set()
        self._active_at = -math.inf

    # -- public lifecycle ----------------------------------------------------

    @property
    def is_running(self) -> bool:
        return self._state == "running"

    @property
    def running_jobs(self) -> int:
        """Attempts running now."""
        return len(self._attempts)

    def add_middleware(self, middleware: Middleware) -> None:
        """Append a middleware (innermost so far); only before start."""
        self._require_state("new", "add middleware")
        self._middleware.append(middleware)

    def add_hook(self, hook: StateChangeHook) -> None:
        """Call ``hook(job, old_state, new_state)`` after each written transition."""
        self._hooks.append(hook)

    async def start_async(self) -> None:
        """Check the schema, register the server and start its tasks on this loop."""
        self._require_state("new", "start")
        self._state = "starting"
        try:
            await self._startup()
        except BaseException:
            self._state = "new"
            await self._close_pool()
            raise
        self._state = "running"

    async def stop_async(self, timeout: float | None = None, *, graceful: bool = True) -> None:
        """Stop: no new claims; wait up to ``timeout`` (default ``shutdown_timeout``) for
        running attempts, release the rest to the queue, flush writes, deregister."""
        if self._state in ("new", "stopped"):
            return
        if self._state == "running":
            self._state = "stopping"
            await self._shutdown(
                self.config.shutdown_timeout if timeout is None else timeout, graceful=graceful
            )
        elif self._done is not None:
            if not graceful:
                self._force.set()
            await self._done.wait()

    async def run_async(self, *, install_signal_handlers: bool = False) -> None:
        """Start, run until :meth:`request_stop` (or a signal), then stop gracefully.

        With ``install_signal_handlers`` (main thread only) the first SIGTERM or
        SIGINT stops gracefully and a second one stops at once.
        """
        await self.start_async()
        loop = asyncio.get_running_loop()
        installed: list[signal.Signals] = []
        if install_signal_handlers:
            for sig in (signal.SIGTERM, signal.SIGINT):
                with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                    loop.add_signal_handler(sig, self._on_signal, sig)
                    installed.append(sig)
        try:
            await self._stop_requested.wait()
            await self.stop_async(graceful=not self._force.is_set())
        finally:
            for sig in installed:
                loop.remove_signal_handler(sig)

    def request_stop(self, *, graceful: bool = True) -> None:
        """Ask :meth:`run_async` to stop (thread-safe); a second call or
        ``graceful=False`` stops without waiting for running jobs."""
        loop = self._loop
        if loop is None:
            return
        if _running_loop() is loop:
            self._request_stop(graceful)
        else:
            loop.call_soon_threadsafe(self._request_stop, graceful)

    def run(self) -> None:
        """Blocking: run until SIGTERM/SIGINT (first: graceful; second: immediate)."""
        asyncio.run(self.run_async(install_signal_handlers=True))

    def start(self) -> None:
        """Run in a background thread with its own event loop; returns once started."""
        self._require_state("new", "start")
        started = threading.Event()
        failure: list[BaseException] = []

        def main() -> None:
            loop = asyncio.new_event_loop()
            self._thread_loop = loop

            async def body() -> None:
                try:
                    await self.start_async()
                except BaseException as exc:
                    failure.append(exc)
                    started.set()
                    return
                started.set()
                await self._stop_requested.wait()
                await self.stop_async(graceful=not self._force.is_set())

            try:
                loop.run_until_complete(body())
            finally:
                loop.run_until_complete(loop.shutdown_asyncgens())
                loop.close()

        self._thread = threading.Thread(target=main, name=f"pgqml-{self.server_id}", daemon=True)
        self._thread.start()
        started.wait()
        if failure:
            self._thread.join()
            raise failure[0]

    def stop(self, timeout: float | None = None, *, graceful: bool = True) -> None:
        """Stop a server started with :meth:`start` and wait for its thread."""
        if self._thread is None:
            raise errors.ConfigurationError("stop() is for servers started with start()")
        loop = self._thread_loop
        if loop is not None and not loop.is_closed() and self._state in ("running", "stopping"):
            if timeout is not None:
                self._stop_timeout = timeout
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self._request_stop, graceful)
        self._thread.join()

    def health(self) -> tuple[bool, dict[str, Any]]:
        """``(healthy, details)``: healthy while running and heartbeating."""
        age = time.monotonic() - self._last_heartbeat_ok if self._last_heartbeat_ok else None
        limit = self.config.heartbeat_interval * 3
        ok = self._state == "running" and age is not None and age < limit
        return ok, {
            "server_id": self.server_id,
            "state": self._state,
            "running_jobs": len(self._attempts),
            "concurrency": self.config.concurrency,
            "last_heartbeat_seconds_ago": None if age is None else round(age, 3),
            "listening": self._listening,
        }

    # -- startup / shutdown ----------------------------------------------------

    def _require_state(self, state: str, action: str) -> None:
        if self._state != state:
            raise errors.ConfigurationError(f"cannot {action}: the server is {self._state}")

    async def _startup(self) -> None:
        cfg = self.config
        self._loop = asyncio.get_running_loop()
        self._reset()
        self._wake = asyncio.Event()
        self._slot_freed = asyncio.Event()
        self._pending_event = asyncio.Event()
        self._stop_requested = asyncio.Event()
        self._force = asyncio.Event()
        self._closing = asyncio.Event()
        self._done = asyncio.Event()
        self._write_lock = asyncio.Lock()
        self._threads = ThreadPool(cfg.concurrency, name=f"pgqml-sync-{cfg.server_name}")
        self._chain = build_chain(self._middleware, self._terminal)
        # results obey the payload size limit; read once, not per job
        self._max_result_bytes = client._max_payload_bytes()
        self._metrics = _metrics.get() if cfg.metrics else None
        self._active_gauge = (
            self._metrics.active.labels(cfg.server_name) if self._metrics is not None else None
        )

        if self._pool is None:
            self._pool = AsyncConnectionPool(
                self._dsn,
                min_size=3,
                max_size=4,
                kwargs={"autocommit": True, "application_name": f"pgqml {cfg.server_name}"},
                open=False,
                name=f"pgqml-{cfg.server_name}",
                timeout=30.0,
            )
        if self._own_pool:
            try:
                await self._pool.open(wait=True, timeout=30.0)
            except Exception as exc:
                raise errors.ConfigurationError(
                    f"Cannot connect to the database: {exc}. Check the DSN, that the server "
                    "is running, and that the role may log in."
                ) from exc

        async with self._pool.connection() as conn:
            await _check_schema(conn)
            await self._register(conn)
        self._last_heartbeat_ok = time.monotonic()

        spawn = asyncio.get_running_loop().create_task
        if cfg.listen:
            listening = asyncio.Event()
            self._tasks.append(spawn(self._listen_loop(listening), name="pgqml-listen"))
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(listening.wait(), timeout=10.0)
        self._fetch_task = spawn(self._fetch_loop(), name="pgqml-fetch")
        self._tasks.append(spawn(self._flush_loop(), name="pgqml-flush"))
        self._tasks.append(spawn(self._heartbeat_loop(), name="pgqml-heartbeat"))
        self._tasks.append(spawn(self._maintenance_loop(), name="pgqml-maintenance"))
        log.info(
            "pgqml server %s started: queues=%s concurrency=%d methods=%s listen=%s",
            self.server_id,
            ",".join(self._queues) if self._queues else "*",
            cfg.concurrency,
            ",".join(self._methods),
            "on" if cfg.listen else f"off (polling every {cfg.polling_interval}s)",
        )

    def _on_signal(self, sig: int) -> None:
        graceful = not self._stop_requested.is_set()
        if graceful:
            log.info(
                "received %s: stopping; running jobs have %.0fs to finish (send it again to "
                "stop at once)",
                signal.Signals(sig).name,
                self.config.shutdown_timeout,
            )
        else:
            log.warning("received %s again: stopping at once", signal.Signals(sig).name)
        self._request_stop(graceful)

    def _request_stop(self, graceful: bool = True) -> None:
        if self._stop_requested.is_set() or not graceful:
            self._force.set()
        self._stop_requested.set()
        self._closing.set()
        self._wake.set()
        self._slot_freed.set()

    async def _shutdown(self, timeout: float, *, graceful: bool) -> None:
        cfg = self.config
        if self._stop_timeout is not None:
            timeout = self._stop_timeout
        self._closing.set()
        self._stop_requested.set()
        if not graceful:
            self._force.set()
        self._wake.set()
        if self._fetch_task is not None:
            await _cancel_and_wait(self._fetch_task)
        await self._put_fetch_conn()

        running = [a.task for a in self._attempts.values() if a.task is not None]
        if running and not self._force.is_set():
            log.info("waiting up to %.0fs for %d running job(s)", timeout, len(running))
            force_wait = asyncio.get_running_loop().create_task(self._force.wait())
            await asyncio.wait(
                [*running, force_wait], timeout=timeout, return_when=asyncio.FIRST_COMPLETED
            )
            deadline = time.monotonic() + timeout
            while not force_wait.done():
                left = [t for t in running if not t.done()]
                remaining = deadline - time.monotonic()
                if not left or remaining <= 0:
                    break
                await asyncio.wait(
                    [*left, force_wait], timeout=remaining, return_when=asyncio.FIRST_COMPLETED
                )
            force_wait.cancel()

        # Whatever still runs is interrupted and released (attempt not charged).
        leftover = list(self._attempts.values())
        for att in leftover:
            att.ctx.cancel("shutdown")
            if att.task is not None:
                att.task.cancel()
        if leftover:
            await asyncio.wait([a.task for a in leftover if a.task is not None])
            await self._release(leftover)

        # Outcomes still buffered are written before anything else closes.
        await self._drain_pending(deadline=time.monotonic() + max(cfg.shutdown_timeout, 5.0))

        for task in self._tasks:
            await _cancel_and_wait(task)
        try:
            await asyncio.wait_for(self._deregister(), 5.0)
        except Exception as exc:
            log.warning(
                "could not remove server %s from the registry (%s); it will be pruned after %ss",
                self.server_id,
                _describe(exc),
                cfg.dead_server_timeout,
            )
        self._threads.shutdown()
        await self._close_pool()
        self._state = "stopped"
        log.info(
            "pgqml server %s stopped (succeeded %d, retried %d, failed %d, lost %d)",
            self.server_id,
            self._counts["succeeded"],
            self._counts["retry"],
            self._counts["failed"],
            self._counts["lost"],
        )
        if self._done is not None:
            self._done.set()

    async def _deregister(self) -> None:
        assert self._pool is not None
        async with self._pool.connection() as conn:
            await _execute(conn, "deregister_server", {"id": self.server_id})

    async def _close_pool(self) -> None:
        if self._own_pool and self._pool is not None:
            with contextlib.suppress(Exception):
                await self._pool.close(timeout=5.0)
            self._pool = None

    async def _register(self, conn: psycopg.AsyncConnection[Any]) -> None:
        cfg = self.config
        await _execute(
            conn,
            "register_server",
            {
                "id": self.server_id,
                "name": cfg.server_name,
                "host": socket.gethostname(),
                "pid": os.getpid(),
                "queues": self._queues or [],
                "concurrency": cfg.concurrency,
                "metadata": client._JsonText(
                    orjson.dumps({"methods": self._methods, **cfg.metadata})
                ),
            },
        )

    # -- fetch -------------------------------------------------------------------

    def _free(self) -> int:
        # A finished job's slot is free for the next claim while its outcome is
        # being written (claims and writes overlap), but only up to
        # `concurrency` such outcomes: past that, unwritten outcomes hold slots,
        # so fast handlers cannot run ahead of the database and the server
        # never holds more than 2 x `concurrency` leases.
        n = self.config.concurrency
        return n - len(self._attempts) - len(self._zombies) - max(0, len(self._unflushed) - n)

    async def _fetch_loop(self) -> None:
        cfg = self.config
        poll = cfg.polling_interval
        more = True  # the last claim was full: claim again as soon as there is room
        backoff = 0.0
        low_water = max(1, min(cfg.fetch_batch_size, cfg.concurrency) // 4)
        loop = asyncio.get_running_loop()
        while not self._closing.is_set():
            # With a backlog, gather a few free slots so one statement claims
            # several jobs instead of one per finished job.
            await self._wait_for_room(low_water if more and self._attempts else 1)
            if self._closing.is_set():
                break
            if not more:
                if not self._wake.is_set():
                    # The poll timer just sets the same event a notification
                    # sets (cheaper than wait_for, which starts a task per wait).
                    timer = loop.call_later(poll * random.uniform(0.9, 1.1), self._wake.set)
                    try:
                        await self._wake.wait()
                    finally:
                        timer.cancel()
                if self._closing.is_set():
                    break
            # Cleared before the claim: a notification arriving during it sets
            # the event again, and the next round claims at once.
            self._wake.clear()
            limit = min(self._free(), cfg.fetch_batch_size)
            if limit <= 0:
                continue
            sent = time.monotonic()
            try:
                rows = await self._claim(limit)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                backoff = min(max(backoff * 2, 0.1), 5.0)
                log.warning("claiming jobs failed (%s); retrying in %.1fs", _describe(exc), backoff)
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._closing.wait(), backoff)
                more = True
                continue
            backoff = 0.0
            more = len(rows) == limit
            if rows:
                self._start_attempts(rows, sent)

    async def _wait_for_room(self, want: int) -> None:
        """Until ``want`` slots are free, or some are free and 2 ms have passed."""
        deadline: float | None = None
        while not self._closing.is_set():
            free = self._free()
            if free >= want:
                return
            timeout: float | None = None
            if free > 0:
                if deadline is None:
                    deadline = time.monotonic() + 0.002
                timeout = deadline - time.monotonic()
                if timeout <= 0:
                    return
            self._slot_freed.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._slot_freed.wait(), timeout)

    async def _claim(self, limit: int) -> list[Any]:
        # The fetch loop keeps one connection for itself (a pool checkout per
        # claim costs a little latency on every wakeup); it is given back on
        # any error, so a broken connection is replaced by the pool.
        assert self._pool is not None
        if self._fetch_conn is None:
            self._fetch_conn = await self._pool.getconn()
        try:
            queues = self._queues
            if queues is None:
                queues = await self._active_queues(self._fetch_conn)
                if not queues:
                    return []
            return await _fetchall(
                self._fetch_conn,
                "fetch_jobs",
                {
                    "owner": self.server_id,
                    "queues": queues,
                    "methods": self._methods,
                    "limit": limit,
                    "lease": self.config.lease_duration,
                },
                # binary rows parse faster (timestamps, arrays): ~1.5 us a job
                binary=True,
            )
        except BaseException:
            await self._put_fetch_conn()
            raise

    async def _active_queues(self, conn: psycopg.AsyncConnection[Any]) -> list[str]:
        """The queues an all-queues server claims from (see ``_reset``)."""
        now = time.monotonic()
        if now - self._active_at >= self.config.polling_interval:
            self._notified = set()
            rows = await _fetchall(conn, "known_queues", {})
            # A queue notified while the list was being read stays in it.
            self._active = set(rows[0][0] or []) | self._notified
            self._active_at = now
        return sorted(self._active)

    async def _put_fetch_conn(self) -> None:
        conn, self._fetch_conn = self._fetch_conn, None
        if conn is not None and self._pool is not None:
            with contextlib.suppress(Exception):
                await self._pool.putconn(conn)

    def _start_attempts(self, rows: list[Any], sent: float) -> None:
        loop = asyncio.get_running_loop()
        jobs = impl.rows_to_jobs([r[:-1] for r in rows])
        cfg = self.config
        now = time.time()
        groups: dict[float, _TimeoutGroup] = {}
        for job, row in zip(jobs, rows, strict=True):
            handler = self.registry.get(job.method)
            if handler is None:  # cannot happen: the claim filters on registered methods
                log.error("job %s: no handler for method %r", job.id, job.method)
                continue
            timeout = handler.timeout if handler.timeout is not None else cfg.job_timeout
            ctx = WorkerContext(
                job,
                server_name=cfg.server_name,
                server_id=self.server_id,
                timeout=timeout,
                started_at=now,
            )
            att = _Attempt(job, handler, ctx, sent, row[-1])
            if timeout is not None and handler.is_async:
                group = groups.get(timeout)
                if group is None:
                    group = groups[timeout] = _TimeoutGroup()
                group.attempts.append(att)
                group.remaining += 1
                att.timeouts = group
            self._attempts[job.id] = att
            att.task = loop.create_task(self._run(att))
            if self._hooks:
                self._fire_hooks(job, JobState(row[-1]), JobState.PROCESSING)
        for timeout, group in groups.items():
            group.handle = loop.call_later(timeout, self._on_timeouts, group)
        if self._active_gauge is not None:
            self._active_gauge.set(len(self._attempts))

    def _on_timeouts(self, group: _TimeoutGroup) -> None:
        for att in group.attempts:
            if self._attempts.get(att.id) is att:
                self._on_timeout(att)

    # -- execution ---------------------------------------------------------------

    async def _run(self, att: _Attempt) -> None:
        t0 = time.perf_counter()
        result: WorkerResult | None
        try:
            result = await self._chain(att.job, att.ctx)
            if not isinstance(result, WorkerResult):
                result = WorkerResult.failure(
                    f"middleware returned {result!r} instead of a pgqml.WorkerResult"
                )
        except asyncio.CancelledError:
            self._end_attempt(att)
            reason = att.ctx.cancel_reason or "shutdown"
            if reason == "lost":
                self._count_lost(att)
            # "shutdown": released by _shutdown; nothing to write here.
            return
        except BaseException as exc:
            # A middleware raised (handler errors arrive as results). Not only
            # Exception: a handler's SystemExit or KeyboardInterrupt must not
            # leave its attempt behind, leased and renewed forever.
            result = self._result_from_exception(att, exc, traceback.format_exc())
        duration = time.perf_counter() - t0
        self._end_attempt(att)
        m = self._metrics
        if m is not None:
            m.duration.labels(att.job.method).observe(duration)
        if att.ctx.cancel_reason == "lost":
            self._count_lost(att)
            return
        self._record(att, result)

    async def _terminal(self, job: Job, ctx: WorkerContext) -> WorkerResult:
        att = self._attempts[job.id]
        handler = att.handler
        timeout = ctx.timeout
        try:
            if handler.is_async:
                try:
                    value = await handler.invoke(job, ctx)
                except asyncio.CancelledError:
                    if ctx.cancel_reason != "timeout":
                        raise
                    task = asyncio.current_task()
                    if task is not None and hasattr(task, "uncancel"):
                        task.uncancel()
                    raise JobTimeout(f"timed out after {timeout:g}s") from None
                finally:
                    if att.timeouts is not None:
                        att.timeouts.done_one()
            else:
                value = await self._run_in_thread(att, handler, job, ctx, timeout)
                if inspect.isawaitable(value):
                    value = await value
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # SystemExit from a handler fails its job, not the worker
            return self._result_from_exception(att, exc, traceback.format_exc())
        if isinstance(value, WorkerResult):
            return value
        return WorkerResult.success(value)

    async def _run_in_thread(
        self, att: _Attempt, handler: Handler, job: Job, ctx: WorkerContext, timeout: float | None
    ) -> Any:
        fut = self._threads.submit(asyncio.get_running_loop(), handler.invoke, job, ctx)
        att.thread_future = fut
        try:
            done, _ = await asyncio.wait({fut}, timeout=timeout)
        finally:
            if not fut.done():
                # The thread cannot be stopped: it keeps a slot until it returns.
                ctx.cancel(ctx.cancel_reason or "timeout")
                self._zombies.add(fut)
                fut.add_done_callback(self._zombie_done)
        if not done:
            raise JobTimeout(
                f"timed out after {timeout:g}s (sync handler: the thread was left to finish; "
                "its result is discarded)"
            )
        return fut.result()

    def _zombie_done(self, fut: asyncio.Future[Any]) -> None:
        self._zombies.discard(fut)
        if not fut.cancelled():
            fut.exception()  # mark it retrieved: its attempt was already recorded
        self._slot_freed.set()

    def _on_timeout(self, att: _Attempt) -> None:
        if att.task is not None and not att.task.done():
            att.ctx.cancel("timeout")
            att.task.cancel()

    def _result_from_exception(self, att: _Attempt, exc: BaseException, tb: str) -> WorkerResult:
        job = att.job
        error = f"{type(exc).__name__}: {exc}"
        if isinstance(exc, PayloadMismatch):
            return WorkerResult("failure", error=error, traceback=None, exception=exc)
        policy = att.handler.retry or self.config.retry
        if job.attempt < job.max_attempts and policy.retries(exc):
            delay = policy.delay(job.attempt)
            if delay is not None:
                return WorkerResult("retry", error=error, traceback=tb, delay=delay, exception=exc)
        return WorkerResult("failure", error=error, traceback=tb, exception=exc)

    def _end_attempt(self, att: _Attempt) -> None:
        if self._attempts.pop(att.id, None) is not None:
            self._slot_freed.set()
            if self._active_gauge is not None:
                self._active_gauge.set(len(self._attempts))

    def _record(self, att: _Attempt, result: WorkerResult) -> None:
        job = att.job
        kind = result.kind
        if kind == "success" and result.result is None:
            outcome = _Outcome(att, "succeeded")
        elif kind == "success":
            try:
                encoded = orjson.dumps(result.result).decode()
            except TypeError as exc:
                outcome = _Outcome(
                    att, "failed", error=f"the result is not JSON-serializable: {exc}"
                )
            else:
                limit = self._max_result_bytes
                if len(encoded) > limit:
                    outcome = _Outcome(
                        att,
                        "failed",
                        error=f"the result is {len(encoded)} bytes, over the limit of {limit}; "
                        "store large results elsewhere and return a reference",
                    )
                else:
                    outcome = _Outcome(att, "succeeded", result=encoded)
        elif kind == "retry" and job.attempt < job.max_attempts:
            delay = result.delay
            if result.retry_at is None and delay is None:
                delay = (att.handler.retry or self.config.retry).base_delay(job.attempt) or 0.0
            outcome = _Outcome(
                att,
                "retry",
                error=result.error,
                traceback=result.traceback,
                run_at=result.retry_at,
                delay=delay,
            )
        else:
            error = result.error or "failed"
            if kind == "retry":
                error = f"{error} (no attempts left: {job.attempt} of {job.max_attempts})"
            outcome = _Outcome(att, "failed", error=error, traceback=result.traceback)
        self._unflushed[att.id] = att
        self._pending.append(outcome)
        self._pending_event.set()

    def _count_lost(self, att: _Attempt) -> None:
        self._counts["lost"] += 1
        if self._metrics is not None:
            self._metrics.processed.labels(att.job.queue, "lost").inc()

    # -- writes --------------------------------------------------------------------

    async def _flush_loop(self) -> None:
        cfg = self.config
        backoff = 0.0
        while True:
            await self._pending_event.wait()
            if cfg.completion_flush_interval:
                await self._gather_outcomes(cfg.completion_flush_interval)
            try:
                await self._flush_once()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                backoff = min(max(backoff * 2, 0.1), 5.0)
                log.warning(
                    "writing %d job outcome(s) failed (%s); retrying in %.1fs",
                    len(self._pending),
                    _describe(exc),
                    backoff,
                )
                self._self_fence()
                await asyncio.sleep(backoff)
            else:
                backoff = 0.0

    async def _gather_outcomes(self, interval: float) -> None:
        """Let running jobs join the next write, for at most ``interval`` seconds.

        Waiting only pays while some job is still running: once every claimed
        job has an outcome (a small batch of fast jobs, or a single job), the
        write goes out at once and their leases end without a pointless wait.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + interval
        full = self.config.completion_batch_size
        while self._attempts and len(self._pending) < full:
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            # _record sets the event for each new outcome; the timer ends the wait.
            self._pending_event.clear()
            timer = loop.call_later(remaining, self._pending_event.set)
            try:
                await self._pending_event.wait()
            finally:
                timer.cancel()
        self._pending_event.set()  # _flush_once clears it once nothing is pending

    async def _flush_once(self) -> None:
        cfg = self.config
        assert self._pool is not None
        # The batch is taken under the write lock, so two flushers (the flush
        # loop and shutdown) never write the same outcomes.
        async with self._write_lock:
            batch = self._pending[: cfg.completion_batch_size]
            if not batch:
                self._pending_event.clear()
                return
            params = {
                "owner": self.server_id,
                # Safe literals built directly: no per-element adaptation.
                "ids": "{" + ",".join([str(o.attempt.id) for o in batch]) + "}",
                "attempts": "{" + ",".join([str(o.attempt.attempt) for o in batch]) + "}",
                "outcomes": "{" + ",".join([o.kind for o in batch]) + "}",
                # Columns that are NULL for every row (most batches are all
                # successes without results) are sent as one NULL array.
                "results": _column([o.result for o in batch]),
                "errors": _column([o.error for o in batch]),
                "tracebacks": _column([o.traceback for o in batch]),
                "run_at": _column([o.run_at for o in batch]),
                "delays": _column([o.delay for o in batch]),
                "succeeded_ttl": cfg.succeeded_ttl,
                "failed_ttl": cfg.failed_ttl,
            }
            async with self._pool.connection() as conn:
                rows = await _fetchall(conn, "complete_jobs", params)
            # Written: take the batch off the queue (a lost attempt may have
            # been dropped from it meanwhile, so remove by identity).
            written = set(batch)
            self._pending = [o for o in self._pending if o not in written]
            if not self._pending:
                self._pending_event.clear()
        applied = dict(rows)
        m = self._metrics
        fenced: list[_Outcome] = []
        for o in batch:
            att = o.attempt
            if self._unflushed.get(att.id) is att:
                del self._unflushed[att.id]
            new_state = applied.get(att.id)
            if new_state is None:
                fenced.append(o)
                self._count_lost(att)
                continue
            self._counts[o.kind] += 1
            if o.kind == "retry":
                self._wake_for_retry(o)
            if m is not None:
                m.processed.labels(att.job.queue, o.kind).inc()
            if self._hooks:
                self._fire_hooks(att.job, JobState.PROCESSING, JobState(new_state))
        self._slot_freed.set()
        if fenced:
            log.warning(
                "%d outcome(s) not written: the attempts are no longer this server's (their "
                "leases were lost; the jobs were rescued, cancelled or deleted): %s",
                len(fenced),
                _ids_text([(o.attempt.id, o.attempt.attempt) for o in fenced]),
            )

    def _wake_for_retry(self, o: _Outcome) -> None:
        """A retry due before the next poll wakes the fetch loop when it is due."""
        if o.run_at is not None:
            delay = (o.run_at - datetime.now(timezone.utc)).total_seconds()
        else:
            delay = o.delay or 0.0
        if delay < self.config.polling_interval and not self._closing.is_set():
            # a little late rather than early: the database clock decides due-ness
            asyncio.get_running_loop().call_later(max(delay, 0.0) + 0.01, self._wake.set)

    async def _drain_pending(self, deadline: float) -> None:
        while self._pending and time.monotonic() < deadline:
            try:
                await self._flush_once()
            except Exception as exc:
                log.warning("writing job outcomes on shutdown failed (%s)", _describe(exc))
                await asyncio.sleep(0.5)
        if self._pending:
            log.error(
                "gave up writing %d job outcome(s) on shutdown; those jobs will be rescued "
                "and run again when their leases expire",
                len(self._pending),
            )

    async def _release(self, attempts: list[_Attempt]) -> None:
        if not attempts:
            return
        assert self._pool is not None
        params = {
            "owner": self.server_id,
            "ids": [a.id for a in attempts],
            "attempts": [a.attempt for a in attempts],
        }
        for delay in (0.1, 0.5, 1.0, 2.0, None):
            try:
                async with self._write_lock, self._pool.connection() as conn:
                    rows = await _fetchall(conn, "release_jobs", params)
                break
            except Exception as exc:
                if delay is None:
                    log.error(
                        "could not release %d job(s) (%s); they will be rescued when their "
                        "leases expire",
                        len(attempts),
                        _describe(exc),
                    )
                    return
                await asyncio.sleep(delay)
        released = {r[0] for r in rows}
        log.info("released %d unfinished job(s) back to their queues", len(released))
        for att in attempts:
            self._unflushed.pop(att.id, None)
            if att.id in released and self._hooks:
                self._fire_hooks(att.job, JobState.PROCESSING, JobState.ENQUEUED)

    # -- leases ----------------------------------------------------------------

    async def _heartbeat_loop(self) -> None:
        cfg = self.config
        while True:
            await asyncio.sleep(cfg.heartbeat_interval * random.uniform(0.9, 1.0))
            # Checked every tick, not only when a heartbeat fails: a heartbeat
            # that hangs on a dead connection must not keep us trusting leases.
            self._self_fence()
            await self._heartbeat()

    async def _heartbeat(self) -> None:
        cfg = self.config
        atts = [*self._attempts.values(), *self._unflushed.values()]
        sent = time.monotonic()
        assert self._pool is not None
        try:
            # Bounded: a hung call must not stall lease bookkeeping past the lease.
            _known, renewed = await asyncio.wait_for(
                self._heartbeat_io(atts), timeout=cfg.lease_duration / 2
            )
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("heartbeat failed (%s)", _describe(exc) or type(exc).__name__)
            self._self_fence()
            return
        self._last_heartbeat_ok = sent
        renewed_ids = set(renewed)
        lost = []
        for att in atts:
            if att.id in renewed_ids:
                att.renewed_at = max(att.renewed_at, sent)
            elif att.renewed_at < sent and (
                self._attempts.get(att.id) is att or self._unflushed.get(att.id) is att
            ):
                lost.append(att)
        self._lose_all(
            lost,
            "their leases were not renewed (rescued, cancelled or deleted by someone else)",
        )

    async def _heartbeat_io(self, atts: list[_Attempt]) -> tuple[bool, list[int]]:
        cfg = self.config
        assert self._pool is not None
        async with self._write_lock, self._pool.connection() as conn:
            rows = await _fetchall(
                conn,
                "heartbeat",
                {
                    "server_id": self.server_id,
                    "ids": [a.id for a in atts],
                    "attempts": [a.attempt for a in atts],
                    "lease": cfg.lease_duration,
                },
            )
            known, renewed = rows[0]
            if not known:
                log.warning(
                    "server %s was missing from the registry (pruned after a long "
                    "pause?); registering again",
                    self.server_id,
                )
                await self._register(conn)
        return bool(known), list(renewed)

    def _self_fence(self) -> None:
        """Stop acting on attempts whose lease may have expired in the database."""
        cfg = self.config
        limit = cfg.lease_duration - cfg.heartbeat_interval
        now = time.monotonic()
        stale = [
            att
            for att in [*self._attempts.values(), *self._unflushed.values()]
            if now - att.renewed_at > limit
        ]
        self._lose_all(
            stale,
            f"their leases could not be renewed for over {limit:g}s; the database will "
            "hand them to other workers",
        )

    def _lose_all(self, atts: list[_Attempt], why: str) -> None:
        """Stop acting on these attempts (one log line for all of them)."""
        if not atts:
            return
        log.warning(
            "stopping work on %d job(s): %s: %s",
            len(atts),
            why,
            _ids_text([(a.id, a.attempt) for a in atts]),
        )
        for att in atts:
            self._lose(att)

    def _lose(self, att: _Attempt) -> None:
        if self._attempts.get(att.id) is att:
            att.ctx.cancel("lost")
            if att.task is not None:
                att.task.cancel()
        elif self._unflushed.pop(att.id, None) is not None:
            self._pending = [o for o in self._pending if o.attempt is not att]
            self._count_lost(att)
            self._slot_freed.set()

    # -- listen -------------------------------------------------------------------

    async def _listen_loop(self, listening: asyncio.Event) -> None:
        backoff = 0.0
        queues = None if self._queues is None else set(self._queues)
        while True:
            conn: psycopg.AsyncConnection[Any] | None = None
            try:
                conn = await psycopg.AsyncConnection.connect(
                    self._dsn,
                    autocommit=True,
                    application_name=f"pgqml {self.config.server_name} listener",
                )
                await conn.execute(f"LISTEN {_CHANNEL}")
                if backoff:
                    log.info("LISTEN connection restored")
                self._listening = True
                listening.set()
                backoff = 0.0
                # Notifications sent while we were away are gone: look now.
                self._wake.set()
                async for notify in conn.notifies():
                    if queues is None:
                        if notify.payload:
                            self._active.add(notify.payload)
                            self._notified.add(notify.payload)
                        self._wake.set()
                    elif notify.payload in queues:
                        self._wake.set()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._listening = False
                backoff = min(max(backoff * 2, 0.2), 10.0)
                log.warning(
                    "LISTEN connection lost (%s); reconnecting in %.1fs (polling every "
                    "%ss meanwhile)",
                    _describe(exc),
                    backoff,
                    self.config.polling_interval,
                )
                await asyncio.sleep(backoff * random.uniform(0.8, 1.2))
            finally:
                self._listening = False
                if conn is not None:
                    with contextlib.suppress(Exception):
                        await conn.close()

    # -- maintenance ---------------------------------------------------------------

    async def _maintenance_loop(self) -> None:
        cfg = self.config
        now = time.monotonic()
        next_rescue = now + cfg.rescue_interval * random.uniform(0.1, 1.0)
        next_prune = now + cfg.dead_server_timeout / 2
        next_stats = now if self._metrics is not None else float("inf")
        next_summary = now + cfg.summary_interval if cfg.summary_interval else float("inf")
        last_counts = dict(self._counts)
        last_summary = now
        while True:
            wake_at = min(next_rescue, next_prune, next_stats, next_summary)
            await asyncio.sleep(max(0.0, wake_at - time.monotonic()))
            now = time.monotonic()
            try:
                if now >= next_rescue:
                    next_rescue = now + cfg.rescue_interval * random.uniform(0.9, 1.1)
                    await self._rescue()
                if now >= next_prune:
                    next_prune = now + cfg.dead_server_timeout / 2
                    await self._prune()
                if now >= next_stats:
                    next_stats = now + cfg.stats_interval
                    await self._refresh_stats()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("maintenance failed (%s); trying again later", _describe(exc))
            if now >= next_summary:
                next_summary = now + cfg.summary_interval
                counts = dict(self._counts)
                delta = {k: counts[k] - last_counts[k] for k in counts}
                total = sum(delta.values())
                span = now - last_summary
                log.info(
                    "last %.0fs: %d attempts (%.1f/s): %d succeeded, %d retried, %d failed, "
                    "%d lost; running %d/%d",
                    span,
                    total,
                    total / span if span else 0.0,
                    delta["succeeded"],
                    delta["retry"],
                    delta["failed"],
                    delta["lost"],
                    len(self._attempts),
                    cfg.concurrency,
                )
                last_counts, last_summary = counts, now

    async def _rescue(self) -> None:
        assert self._pool is not None
        async with self._pool.connection() as conn:
            rows = await _fetchall(
                conn, "rescue_jobs", {"limit": _RESCUE_BATCH, "failed_ttl": self.config.failed_ttl}
            )
        if rows:
            requeued = sum(1 for r in rows if r[1] == "enqueued")
            log.warning(
                "rescued %d job(s) whose worker stopped renewing its lease: %d enqueued "
                "again, %d failed (no attempts left); ids %s",
                len(rows),
                requeued,
                len(rows) - requeued,
                ", ".join(str(r[0]) for r in rows[:20]) + (" ..." if len(rows) > 20 else ""),
            )

    async def _prune(self) -> None:
        assert self._pool is not None
        async with self._pool.connection() as conn:
            rows = await _fetchall(
                conn, "prune_servers", {"timeout": self.config.dead_server_timeout}
            )
        if rows and rows[0][0]:
            log.info("pruned %d server(s) that stopped heartbeating", rows[0][0])

    async def _refresh_stats(self) -> None:
        m = self._metrics
        if m is None:
            return
        assert self._pool is not None
        async with self._pool.connection() as conn:
            queues = self._queues
            if queues is None:
                rows = await _fetchall(conn, "known_queues", {})
                queues = rows[0][0] or []
            if not queues:
                return
            stats = await _fetchall(conn, "queue_stats", {"queues": queues, "cap": _STATS_CAP})
        for queue, ready, _exact, age in stats:
            m.depth.labels(queue).set(ready)
            m.oldest_age.labels(queue).set(float(age) if age is not None else 0.0)

    # -- hooks ---------------------------------------------------------------------

    def _fire_hooks(self, job: Job, old: JobState, new: JobState) -> None:
        for hook in self._hooks:
            try:
                hook(job, old, new)
            except Exception:
                log.exception("state-change hook %r failed for job %s", hook, job.id)


# -- helpers ---------------------------------------------------------------------


async def _fetchall(
    conn: psycopg.AsyncConnection[Any], name: str, params: Any, *, binary: bool = False
) -> list[Any]:
    cur = await conn.execute(_queries.get(name), params, binary=binary)
    rows = await cur.fetchall()
    if not conn.autocommit:
        await conn.commit()
    return rows


async def _execute(conn: psycopg.AsyncConnection[Any], name: str, params: Any) -> None:
    await conn.execute(_queries.get(name), params)
    if not conn.autocommit:
        await conn.commit()


async def _check_schema(conn: psycopg.AsyncConnection[Any]) -> None:
    try:
        await _migrations.require_current_async(conn)
    finally:
        if not conn.autocommit:
            await conn.rollback()


async def _cancel_and_wait(task: asyncio.Task[Any]) -> None:
    if not task.done():
        task.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await task


def _column(values: list[Any]) -> list[Any] | None:
    """``None`` (SQL NULL: an all-NULL column) when every value is None."""
    for v in values:
        if v is not None:
            return values
    return None


def _ids_text(pairs: list[tuple[int, int]], limit: int = 20) -> str:
    text = ", ".join(f"{job_id} (attempt {attempt})" for job_id, attempt in pairs[:limit])
    return text + (f" and {len(pairs) - limit} more" if len(pairs) > limit else "")


def _describe(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None
