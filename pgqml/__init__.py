"""pgqml: a PostgreSQL-native background job queue.

Enqueue inside your own transaction, from Python or plain SQL::

    with psycopg.connect(dsn) as conn, conn.transaction():
        conn.execute("INSERT INTO orders ...")
        pgqml.enqueue(conn, "send_email", {"to": "a@b.c"}, queue="emails")

    SELECT pgqml.enqueue('send_email', '{"to": "a@b.c"}', queue => 'emails');
"""

from pgqml import errors, states
from pgqml._impl import IMPL as __impl__
from pgqml._impl import impl as _impl
from pgqml.client import (
    JobSpec,
    enqueue,
    enqueue_async,
    enqueue_many,
    enqueue_many_async,
    get_job,
    get_job_async,
)
from pgqml.errors import PgqmlError
from pgqml.migrations import MigrateResult, MigrationStatus, migrate, migration_status
from pgqml.states import JobState
from pgqml.worker import (
    BackgroundJobServer,
    JobCancelled,
    JobTimeout,
    LoggingMiddleware,
    PayloadMismatch,
    RetryPolicy,
    ServerConfig,
    Task,
    Worker,
    WorkerContext,
    WorkerRegistry,
    WorkerResult,
)

#: The job snapshot class of the selected implementation (compiled or pure).
Job = _impl.Job

__version__ = "0.1.0"

__all__ = [
    "BackgroundJobServer",
    "Job",
    "JobCancelled",
    "JobSpec",
    "JobState",
    "JobTimeout",
    "LoggingMiddleware",
    "MigrateResult",
    "MigrationStatus",
    "PayloadMismatch",
    "PgqmlError",
    "RetryPolicy",
    "ServerConfig",
    "Task",
    "Worker",
    "WorkerContext",
    "WorkerRegistry",
    "WorkerResult",
    "__impl__",
    "__version__",
    "enqueue",
    "enqueue_async",
    "enqueue_many",
    "enqueue_many_async",
    "errors",
    "get_job",
    "get_job_async",
    "migrate",
    "migration_status",
    "states",
]
