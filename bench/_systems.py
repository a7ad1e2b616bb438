"""The systems bench/compare.py measures: pgqml and its Python peers, behind one interface.

Each adapter knows how to install its schema into an empty database, enqueue
one job per transaction and in bulk through the library's own API, run a
worker with a given configuration until told to stop, and answer a few
questions about its tables (is anything left, did anything fail, fill a big
backlog). Peers are imported only when their adapter is used, so pgqml's own
scenarios run with nothing but the ``dev`` extra installed.

Every job carries an integer key ``i``; handlers call ``on_job(i)``, which
records the key and its start time, so the caller can check that every job ran
exactly once and measure enqueue-to-start latency.
"""

from __future__ import annotations

import abc
import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import psycopg

OnJob = Callable[[int], Awaitable[None]]


@dataclass(frozen=True)
class WorkerConfig:
    """How one system's worker is run: ``processes`` copies of ``options``."""

    label: str
    processes: int
    options: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> str:
        opts = ", ".join(f"{k}={v}" for k, v in self.options.items()) or "library defaults"
        return f"{self.processes} process{'es' if self.processes > 1 else ''}: {opts}"


class Worker(abc.ABC):
    """A worker bound to a handler: ``open`` before the clock starts, ``run`` until ``stop``."""

    @abc.abstractmethod
    async def open(self) -> None:
        """Connect and register the handler; nothing is claimed yet."""

    @abc.abstractmethod
    async def run(self) -> None:
        """Work until :meth:`stop`, then return after a graceful shutdown."""

    @abc.abstractmethod
    def stop(self) -> None:
        """Ask :meth:`run` to finish (from the worker's event loop)."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Close what :meth:`open` opened."""


class Client(abc.ABC):
    """The enqueueing side, on connections opened by ``open``."""

    @abc.abstractmethod
    async def open(self) -> None:
        """Connect (before the clock starts)."""

    @abc.abstractmethod
    async def enqueue_one(self, i: int) -> None:
        """One job in its own committed transaction."""

    @abc.abstractmethod
    async def enqueue_bulk(self, keys: list[int]) -> None:
        """All ``keys`` through the library's bulk API, committed once."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Close the connections."""


class System(abc.ABC):
    """One queue library: how to install, enqueue, work, and read its tables."""

    name = ""
    #: the sequence the system's job ids come from
    id_sequence = ""
    #: what "default", "documented" and "tuned" mean for this system, and why
    configs: dict[str, WorkerConfig] = {}
    tuned_note = ""

    @abc.abstractmethod
    def install(self, dsn: str) -> None:
        """Create the system's schema with its own tool, in an empty database."""

    @abc.abstractmethod
    def client(self, dsn: str) -> Client:
        """An enqueueing client (not yet connected)."""

    @abc.abstractmethod
    def worker(self, dsn: str, options: dict[str, Any], on_job: OnJob) -> Worker:
        """A worker with ``options`` whose handler calls ``on_job(i)``."""

    def mark(self, conn: psycopg.Connection[Any]) -> int:
        """The newest job id so far: rows above it belong to the next scenario."""
        return int(
            _scalar(
                conn,
                f"SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM {self.id_sequence}",
            )
        )

    @abc.abstractmethod
    def unfinished(self, conn: psycopg.Connection[Any], mark: int) -> bool:
        """Is any job above ``mark`` still waiting or running (cheap: index probes)?"""

    @abc.abstractmethod
    def failures(self, conn: psycopg.Connection[Any], mark: int) -> int:
        """Jobs above ``mark`` that ended in failure (or were retried)."""

    @abc.abstractmethod
    def cleanup(self, conn: psycopg.Connection[Any], mark: int) -> None:
        """Delete every row a scenario added above ``mark`` (history included)."""

    @abc.abstractmethod
    def fill(self, conn: psycopg.Connection[Any], history: int, scheduled: int) -> None:
        """Add ``history`` finished jobs and ``scheduled`` jobs due tomorrow, in SQL."""

    def versions(self) -> dict[str, str]:
        return {}


def _version(dist: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return "not installed"


async def _asyncpg_connect(dsn: str) -> Any:
    """asyncpg takes URLs only: translate a libpq conninfo into its keywords."""
    import asyncpg
    from psycopg.conninfo import conninfo_to_dict

    d = conninfo_to_dict(dsn)
    kw = {
        "host": d.get("host"),
        "port": d.get("port"),
        "user": d.get("user"),
        "password": d.get("password"),
        "database": d.get("dbname"),
    }
    return await asyncpg.connect(**{k: v for k, v in kw.items() if v is not None})


def _scalar(conn: psycopg.Connection[Any], query: str, params: Any = None) -> Any:
    row = conn.execute(query, params).fetchone()
    assert row is not None
    return row[0]


# --------------------------------------------------------------------------- pgqml


class PgqmlSystem(System):
    id_sequence = "pgqml.job_id_seq"
    name = "pgqml"
    configs = {
        "default": WorkerConfig("default", 1, {}),
        "tuned": WorkerConfig(
            "tuned",
            2,
            {"concurrency": 1000, "fetch_batch_size": 500, "middleware": "none"},
        ),
    }
    tuned_note = (
        "default: `ServerConfig()` (10 jobs in flight, per-job logging middleware). Tuned, "
        "the README's advice for very short jobs: one process per core (`--processes 2`), "
        "claim batches of 500, 1000 jobs in flight, no per-job logging middleware"
    )

    def install(self, dsn: str) -> None:
        import pgqml

        with psycopg.connect(dsn) as conn:
            pgqml.migrate(conn)

    def client(self, dsn: str) -> Client:
        return _PgqmlClient(dsn)

    def worker(self, dsn: str, options: dict[str, Any], on_job: OnJob) -> Worker:
        return _PgqmlWorker(dsn, options, on_job)

    def unfinished(self, conn: psycopg.Connection[Any], mark: int) -> bool:
        return bool(
            _scalar(
                conn,
                "SELECT EXISTS (SELECT FROM pgqml.jobs WHERE state = 'enqueued' AND id > %(m)s)"
                " OR EXISTS (SELECT FROM pgqml.jobs WHERE state = 'processing' AND id > %(m)s)"
                " OR EXISTS (SELECT FROM pgqml.jobs WHERE state = 'awaiting_retry'"
                " AND id > %(m)s)",
                {"m": mark},
            )
        )

    def failures(self, conn: psycopg.Connection[Any], mark: int) -> int:
        return int(
            _scalar(
                conn,
                "SELECT count(*) FROM pgqml.job_history WHERE id > %s"
                " AND (state <> 'succeeded' OR attempt <> 1)",
                (mark,),
            )
        )

    def cleanup(self, conn: psycopg.Connection[Any], mark: int) -> None:
        conn.execute("DELETE FROM pgqml.jobs WHERE id > %s", (mark,))
        conn.execute("DELETE FROM pgqml.job_history WHERE id > %s", (mark,))

    def fill(self, conn: psycopg.Connection[Any], history: int, scheduled: int) -> None:
        conn.execute(
            """INSERT INTO pgqml.job_history (id, method, queue, payload, state, priority,
                attempt, max_attempts, run_at, created_at, started_at, finished_at,
                lease_owner, expires_at)
            SELECT nextval('pgqml.job_id_seq'), 'bench', 'default', jsonb_build_object('i', g),
                'succeeded', 0, 1, 5, t, t, t, t + interval '5 ms', 'prefill', t + interval '1 day'
            FROM (SELECT g, now() - g * interval '1 ms' AS t FROM generate_series(1, %s) g) s""",
            (history,),
        )
        conn.execute(
            """INSERT INTO pgqml.jobs (method, queue, payload, state, run_at)
            SELECT 'bench', 'default', jsonb_build_object('i', -g), 'scheduled',
                now() + interval '1 day' + g * interval '1 ms' FROM generate_series(1, %s) g""",
            (scheduled,),
        )

    def versions(self) -> dict[str, str]:
        import pgqml

        return {"pgqml": f"{_version('pgqml')} (compiled module: {pgqml.__impl__ == 'c'})"}


class _PgqmlClient(Client):
    def __init__(self, dsn: str) -> None:
        self.dsn = dsn

    async def open(self) -> None:
        # Autocommit, as the peers' clients are: one job alone is one statement, one
        # round trip. In an application the call joins the caller's own transaction.
        self.conn = await psycopg.AsyncConnection.connect(self.dsn, autocommit=True)

    async def enqueue_one(self, i: int) -> None:
        import pgqml

        await pgqml.enqueue_async(self.conn, "bench", {"i": i})

    async def enqueue_bulk(self, keys: list[int]) -> None:
        import pgqml

        async with self.conn.transaction():
            await pgqml.enqueue_many_async(
                self.conn, [pgqml.JobSpec("bench", {"i": i}) for i in keys]
            )

    async def close(self) -> None:
        await self.conn.close()


class _PgqmlWorker(Worker):
    def __init__(self, dsn: str, options: dict[str, Any], on_job: OnJob) -> None:
        self.dsn, self.options, self.on_job = dsn, dict(options), on_job
        self.stopping = asyncio.Event()

    async def open(self) -> None:
        from psycopg_pool import AsyncConnectionPool

        import pgqml

        reg = pgqml.WorkerRegistry()

        @reg.task("bench")
        async def bench(i: int) -> None:
            await self.on_job(i)

        opts = dict(self.options)
        middleware = [] if opts.pop("middleware", None) == "none" else None
        config = pgqml.ServerConfig(**opts).replace(metrics=False, summary_interval=0)
        # Connections opened before the clock starts, as every system's are.
        self.pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
            self.dsn, min_size=3, max_size=4, kwargs={"autocommit": True}, open=False
        )
        await self.pool.open()
        await self.pool.wait()
        self.server = pgqml.BackgroundJobServer(config, self.pool, reg, middleware=middleware)

    async def run(self) -> None:
        await self.server.start_async()
        await self.stopping.wait()
        await self.server.stop_async(timeout=30.0)

    def stop(self) -> None:
        self.stopping.set()

    async def close(self) -> None:
        await self.pool.close()


# ------------------------------------------------------------------------ pgqueuer


class PgqueuerSystem(System):
    id_sequence = "pgqueuer_id_seq"
    name = "pgqueuer"
    configs = {
        "default": WorkerConfig("default", 1, {"managers": 1, "batch_size": 10}),
        "documented": WorkerConfig("documented", 1, {"managers": 5, "batch_size": 10}),
        "tuned": WorkerConfig("tuned", 2, {"managers": 1, "batch_size": 200}),
    }
    tuned_note = (
        "default: one `QueueManager`, `run()` defaults (batch 10). Documented: pgqueuer's "
        "own benchmark (`tools/benchmark.py`): five queue managers on their own asyncpg "
        "connections, batch 10. Tuned: the fastest (within noise) of 14 configurations swept "
        "on this machine (1–2 processes × 1–5 managers × batch 10–500; see below)"
    )

    def install(self, dsn: str) -> None:
        asyncio.run(self._install(dsn))

    async def _install(self, dsn: str) -> None:
        from pgqueuer import AsyncpgDriver, Queries

        conn = await _asyncpg_connect(dsn)
        try:
            await Queries(AsyncpgDriver(conn)).install()
        finally:
            await conn.close()

    def client(self, dsn: str) -> Client:
        return _PgqueuerClient(dsn)

    def worker(self, dsn: str, options: dict[str, Any], on_job: OnJob) -> Worker:
        return _PgqueuerWorker(dsn, options, on_job)

    def unfinished(self, conn: psycopg.Connection[Any], mark: int) -> bool:
        # Finished jobs leave the queue table (their record goes to pgqueuer_log).
        return bool(_scalar(conn, "SELECT EXISTS (SELECT FROM pgqueuer WHERE id > %s)", (mark,)))

    def failures(self, conn: psycopg.Connection[Any], mark: int) -> int:
        return int(
            _scalar(
                conn,
                "SELECT count(*) FROM pgqueuer_log WHERE job_id > %s"
                " AND status NOT IN ('queued', 'picked', 'successful')",
                (mark,),
            )
        )

    def cleanup(self, conn: psycopg.Connection[Any], mark: int) -> None:
        conn.execute("DELETE FROM pgqueuer WHERE id > %s", (mark,))
        conn.execute("DELETE FROM pgqueuer_log WHERE job_id > %s", (mark,))
        conn.execute("TRUNCATE pgqueuer_statistics")

    def fill(self, conn: psycopg.Connection[Any], history: int, scheduled: int) -> None:
        # pgqueuer's history is its log table: one row per status change of a job.
        conn.execute(
            """INSERT INTO pgqueuer_log (created, job_id, status, priority, entrypoint, aggregated)
            SELECT now() - g * interval '1 ms', -g, 'successful', 0, 'bench', true
            FROM generate_series(1, %s) g""",
            (history,),
        )
        conn.execute(
            """INSERT INTO pgqueuer (priority, status, entrypoint, payload, execute_after)
            SELECT 0, 'queued', 'bench', convert_to((-g)::text, 'UTF8'),
                now() + interval '1 day' + g * interval '1 ms' FROM generate_series(1, %s) g""",
            (scheduled,),
        )

    def versions(self) -> dict[str, str]:
        return {"pgqueuer": _version("pgqueuer"), "asyncpg": _version("asyncpg")}


class _PgqueuerClient(Client):
    def __init__(self, dsn: str) -> None:
        self.dsn = dsn

    async def open(self) -> None:
        from pgqueuer import AsyncpgDriver, Queries

        self.conn = await _asyncpg_connect(self.dsn)
        self.queries = Queries(AsyncpgDriver(self.conn))

    async def enqueue_one(self, i: int) -> None:
        # asyncpg runs each statement in its own transaction: one commit per job.
        await self.queries.enqueue("bench", str(i).encode(), 0)

    async def enqueue_bulk(self, keys: list[int]) -> None:
        await self.queries.enqueue(
            ["bench"] * len(keys), [str(i).encode() for i in keys], [0] * len(keys)
        )

    async def close(self) -> None:
        await self.conn.close()


class _PgqueuerWorker(Worker):
    def __init__(self, dsn: str, options: dict[str, Any], on_job: OnJob) -> None:
        self.dsn, self.on_job = dsn, on_job
        self.managers_n = int(options.get("managers", 1))
        self.batch_size = int(options.get("batch_size", 10))

    async def open(self) -> None:
        from pgqueuer import AsyncpgDriver, Job, PgQueuer

        self.conns = [await _asyncpg_connect(self.dsn) for _ in range(self.managers_n)]
        self.pgqs = [PgQueuer(AsyncpgDriver(c)) for c in self.conns]
        for pgq in self.pgqs:

            @pgq.entrypoint("bench")
            async def bench(job: Job) -> None:
                assert job.payload is not None
                await self.on_job(int(job.payload))

    async def run(self) -> None:
        await asyncio.gather(*(pgq.run(batch_size=self.batch_size) for pgq in self.pgqs))

    def stop(self) -> None:
        for pgq in self.pgqs:
            pgq.shutdown.set()

    async def close(self) -> None:
        for c in self.conns:
            if not c.is_closed():
                await c.close()


# ------------------------------------------------------------------- procrastinate


class ProcrastinateSystem(System):
    id_sequence = "procrastinate_jobs_id_seq"
    name = "procrastinate"
    configs = {
        "default": WorkerConfig("default", 1, {"concurrency": 1}),
        "tuned": WorkerConfig("tuned", 2, {"concurrency": 20, "pool_max_size": 24}),
    }
    tuned_note = (
        "default: `Worker` defaults (one job at a time, LISTEN/NOTIFY on). procrastinate "
        "publishes no benchmark setup; its concurrency guide says to raise `concurrency` for "
        "async jobs. Tuned: the fastest of 5 configurations swept on this machine (1–2 "
        "processes × concurrency 5–100, pool sized to match; two processes, 5–50, all within 5%)"
    )

    def _app(self, dsn: str, max_size: int = 10) -> Any:
        import procrastinate

        return procrastinate.App(
            connector=procrastinate.PsycopgConnector(conninfo=dsn, min_size=1, max_size=max_size)
        )

    def install(self, dsn: str) -> None:
        asyncio.run(self._install(dsn))

    async def _install(self, dsn: str) -> None:
        app = self._app(dsn)
        async with app.open_async():
            await app.schema_manager.apply_schema_async()

    def client(self, dsn: str) -> Client:
        return _ProcrastinateClient(self, dsn)

    def worker(self, dsn: str, options: dict[str, Any], on_job: OnJob) -> Worker:
        return _ProcrastinateWorker(self, dsn, options, on_job)

    def unfinished(self, conn: psycopg.Connection[Any], mark: int) -> bool:
        return bool(
            _scalar(
                conn,
                "SELECT EXISTS (SELECT FROM procrastinate_jobs WHERE id > %s"
                " AND status IN ('todo', 'doing'))",
                (mark,),
            )
        )

    def failures(self, conn: psycopg.Connection[Any], mark: int) -> int:
        return int(
            _scalar(
                conn,
                "SELECT count(*) FROM procrastinate_jobs WHERE id > %s"
                " AND (status NOT IN ('todo', 'doing', 'succeeded') OR attempts > 1)",
                (mark,),
            )
        )

    def cleanup(self, conn: psycopg.Connection[Any], mark: int) -> None:
        conn.execute("DELETE FROM procrastinate_jobs WHERE id > %s", (mark,))

    def fill(self, conn: psycopg.Connection[Any], history: int, scheduled: int) -> None:
        # Inserted as procrastinate writes them (its triggers add the event rows).
        conn.execute(
            """INSERT INTO procrastinate_jobs (queue_name, task_name, args, status, attempts)
            SELECT 'default', 'bench', jsonb_build_object('i', -g), 'succeeded', 1
            FROM generate_series(1, %s) g""",
            (history,),
        )
        conn.execute(
            """INSERT INTO procrastinate_jobs (queue_name, task_name, args, status, scheduled_at)
            SELECT 'default', 'bench', jsonb_build_object('i', -g), 'todo',
                now() + interval '1 day' + g * interval '1 ms' FROM generate_series(1, %s) g""",
            (scheduled,),
        )

    def versions(self) -> dict[str, str]:
        return {"procrastinate": _version("procrastinate")}


class _ProcrastinateClient(Client):
    def __init__(self, system: ProcrastinateSystem, dsn: str) -> None:
        self.app = system._app(dsn, max_size=2)

        @self.app.task(name="bench")
        async def bench(i: int) -> None:  # never run here: the client only defers
            raise AssertionError("the client app does not run jobs")

        self.task = bench

    async def open(self) -> None:
        await self.app.open_async()

    async def enqueue_one(self, i: int) -> None:
        await self.task.defer_async(i=i)

    async def enqueue_bulk(self, keys: list[int]) -> None:
        await self.task.batch_defer_async(*({"i": i} for i in keys))

    async def close(self) -> None:
        await self.app.close_async()


class _ProcrastinateWorker(Worker):
    def __init__(
        self, system: ProcrastinateSystem, dsn: str, options: dict[str, Any], on_job: OnJob
    ) -> None:
        opts = dict(options)
        self.app = system._app(dsn, max_size=int(opts.pop("pool_max_size", 10)))
        self.options = opts

        @self.app.task(name="bench")
        async def bench(i: int) -> None:
            await on_job(i)

    async def open(self) -> None:
        from procrastinate import worker as pworker

        await self.app.open_async()
        self.worker = pworker.Worker(
            self.app, wait=True, install_signal_handlers=False, **self.options
        )

    async def run(self) -> None:
        await self.worker.run()

    def stop(self) -> None:
        self.worker.stop()

    async def close(self) -> None:
        await self.app.close_async()


SYSTEMS: dict[str, type[System]] = {
    "pgqml": PgqmlSystem,
    "pgqueuer": PgqueuerSystem,
    "procrastinate": ProcrastinateSystem,
}


def quiet_libraries() -> None:
    """Per-job INFO logs would measure the terminal, not the queue."""
    logging.basicConfig(level=logging.WARNING, format="  %(name)s %(levelname)s: %(message)s")
    for name in ("pgqml", "pgqueuer", "procrastinate"):
        logging.getLogger(name).setLevel(logging.WARNING)
