"""The worker engine: tasks, the server that runs them, retries, middleware."""

from pgqml.worker.config import ServerConfig
from pgqml.worker.middleware import LoggingMiddleware, Middleware, Next, StateChangeHook
from pgqml.worker.retry import RetryPolicy
from pgqml.worker.server import BackgroundJobServer, JobTimeout
from pgqml.worker.task import (
    JobCancelled,
    PayloadMismatch,
    Task,
    Worker,
    WorkerContext,
    WorkerRegistry,
    WorkerResult,
)

__all__ = [
    "BackgroundJobServer",
    "JobCancelled",
    "JobTimeout",
    "LoggingMiddleware",
    "Middleware",
    "Next",
    "PayloadMismatch",
    "RetryPolicy",
    "ServerConfig",
    "StateChangeHook",
    "Task",
    "Worker",
    "WorkerContext",
    "WorkerRegistry",
    "WorkerResult",
]
