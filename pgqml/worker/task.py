"""What a worker runs: tasks, ``Worker`` classes, their registry, results and context.

Two ways to write a handler, one registry::

    registry = pgqml.WorkerRegistry()

    @registry.task("send_email", queue="emails", max_attempts=5, timeout=30)
    def send_email(to: str, subject: str = "hi") -> dict: ...   # payload keys -> kwargs

    class ReportWorker(pgqml.Worker):                            # qml-rs style
        method_name = "generate_report"
        def execute(self, job, ctx) -> pgqml.WorkerResult: ...

    registry.register(ReportWorker())

Handlers may be sync (run in a worker thread) or async (run on the event
loop). A function task receives the payload as keyword arguments and, if it
declares a parameter named ``ctx`` (or annotated ``WorkerContext``), the
:class:`WorkerContext`.
"""

from __future__ import annotations

import inspect
import logging
import threading
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, ClassVar, Generic, Literal, TypeVar, overload

import psycopg

from pgqml import client, errors
from pgqml.worker.retry import RetryPolicy

if TYPE_CHECKING:
    from pgqml._purepy import Job

__all__ = [
    "JobCancelled",
    "PayloadMismatch",
    "Task",
    "Worker",
    "WorkerContext",
    "WorkerRegistry",
    "WorkerResult",
]

log = logging.getLogger("pgqml.worker")

F = TypeVar("F", bound=Callable[..., Any])
R = TypeVar("R")


class PayloadMismatch(errors.ValidationError):
    """The job's payload does not fit the handler's signature (never retried)."""


class JobCancelled(Exception):
    """Raised by :meth:`WorkerContext.raise_if_cancelled` once the job is cancelled.

    A job is cancelled when its server shuts down, when its lease is lost (the
    job was rescued, deleted or cancelled elsewhere) or when it times out.
    """


# -- results -----------------------------------------------------------------

Outcome = Literal["success", "retry", "failure"]


class WorkerResult:
    """The outcome of one attempt: :meth:`success`, :meth:`retry` or :meth:`failure`.

    A task function may simply return a value (stored as the job's JSON result)
    or raise; returning a ``WorkerResult`` says exactly what should happen.
    ``exception`` is set when the outcome was derived from a raised exception.
    """

    __slots__ = ("delay", "error", "exception", "kind", "result", "retry_at", "traceback")

    def __init__(
        self,
        kind: Outcome,
        *,
        result: Any = None,
        error: str | None = None,
        traceback: str | None = None,
        retry_at: datetime | None = None,
        delay: float | None = None,
        exception: BaseException | None = None,
    ) -> None:
        self.kind: Outcome = kind
        self.result = result
        self.error = error
        self.traceback = traceback
        self.retry_at = retry_at
        self.delay = delay
        self.exception = exception

    @classmethod
    def success(cls, result: Any = None) -> WorkerResult:
        """The attempt succeeded; ``result`` (JSON-serializable) is stored on the job."""
        return cls("success", result=result)

    @classmethod
    def retry(
        cls,
        error: str = "retry requested",
        *,
        at: datetime | None = None,
        delay: float | timedelta | None = None,
    ) -> WorkerResult:
        """Run again: at ``at`` (timezone-aware), after ``delay``, or per the retry policy.

        If the job has no attempts left it fails instead.
        """
        if at is not None and delay is not None:
            raise errors.InvalidSchedule("Pass either at or delay, not both")
        if at is not None and (at.tzinfo is None or at.utcoffset() is None):
            raise errors.InvalidSchedule(
                f"Invalid retry time {at!r}: pass a timezone-aware datetime"
            )
        seconds = delay.total_seconds() if isinstance(delay, timedelta) else delay
        if seconds is not None and not seconds >= 0:
            raise errors.InvalidSchedule(f"Invalid retry delay {delay!r}: it must not be negative")
        return cls("retry", error=error, retry_at=at, delay=seconds)

    @classmethod
    def failure(cls, error: str, traceback: str | None = None) -> WorkerResult:
        """The job failed for good, whatever attempts remain."""
        return cls("failure", error=error, traceback=traceback)

    @property
    def is_success(self) -> bool:
        return self.kind == "success"

    @property
    def should_retry(self) -> bool:
        return self.kind == "retry"

    @property
    def is_failure(self) -> bool:
        return self.kind == "failure"

    def __repr__(self) -> str:
        detail = f" result={self.result!r}" if self.kind == "success" else f" error={self.error!r}"
        return f"<WorkerResult {self.kind}{detail}>"


# -- context -----------------------------------------------------------------


class WorkerContext:
    """What a handler knows about the attempt it runs.

    ``job`` (the claimed :class:`pgqml.Job`), ``attempt`` (1 for the first run),
    ``max_attempts``, ``previous_error`` (the last attempt's error, if any),
    ``server_name`` / ``server_id``, ``timeout`` (seconds or ``None``), a
    ``logger`` that tags lines with the job, and cancellation:
    :meth:`is_cancelled` / :meth:`raise_if_cancelled` for sync code (async
    handlers are cancelled with ``asyncio.CancelledError``), and
    ``cancel_reason`` (``"shutdown"``, ``"lost"`` or ``"timeout"``).
    """

    __slots__ = (
        "_cancelled",
        "_logger",
        "cancel_reason",
        "job",
        "metadata",
        "server_id",
        "server_name",
        "started_at",
        "timeout",
    )

    def __init__(
        self,
        job: Job,
        *,
        server_name: str = "",
        server_id: str = "",
        timeout: float | None = None,
        started_at: float = 0.0,
    ) -> None:
        self.job = job
        self.server_name = server_name
        self.server_id = server_id
        self.timeout = timeout
        self.started_at = started_at
        self.cancel_reason: str | None = None
        self.metadata: dict[str, Any] = {}
        self._cancelled: threading.Event | None = None
        self._logger: logging.LoggerAdapter[logging.Logger] | None = None

    @property
    def attempt(self) -> int:
        return int(self.job.attempt)

    @property
    def max_attempts(self) -> int:
        return int(self.job.max_attempts)

    @property
    def is_retry(self) -> bool:
        return self.job.attempt > 1

    @property
    def previous_error(self) -> str | None:
        return self.job.last_error

    @property
    def logger(self) -> logging.LoggerAdapter[logging.Logger]:
        if self._logger is None:
            self._logger = logging.LoggerAdapter(
                logging.getLogger(f"pgqml.job.{self.job.method}"),
                {"job_id": self.job.id, "attempt": self.job.attempt},
            )
        return self._logger

    def _event(self) -> threading.Event:
        if self._cancelled is None:
            self._cancelled = threading.Event()
        return self._cancelled

    def cancel(self, reason: str) -> None:
        """Mark the attempt cancelled (called by the server)."""
        if self.cancel_reason is None:
            self.cancel_reason = reason
        self._event().set()

    def is_cancelled(self) -> bool:
        """True once the attempt is cancelled; sync handlers should check it and stop."""
        return self._cancelled is not None and self._cancelled.is_set()

    def wait_cancelled(self, timeout: float | None = None) -> bool:
        """Block (sync handlers) until cancelled or ``timeout``; True if cancelled."""
        return self._event().wait(timeout)

    def raise_if_cancelled(self) -> None:
        """Raise :class:`JobCancelled` if the attempt was cancelled."""
        if self.is_cancelled():
            raise JobCancelled(f"job {self.job.id} cancelled ({self.cancel_reason})")


# -- handlers ----------------------------------------------------------------


class Handler:
    """What the registry stores: one method name and how to run it."""

    name: str
    queue: str
    max_attempts: int
    timeout: float | None
    retry: RetryPolicy | None
    is_async: bool

    def invoke(self, job: Job, ctx: WorkerContext) -> Any:
        """Call the handler; returns its value, or a coroutine for async handlers."""
        raise NotImplementedError


def _check_options(
    name: object, queue: object, max_attempts: object, timeout: object, retry: object
) -> None:
    client._check_name(name, "method", errors.InvalidMethodName)
    client._check_name(queue, "queue", errors.InvalidQueueName)
    client._check_int(max_attempts, "max_attempts", errors.InvalidMaxAttempts, 1, 2**31 - 1)
    if timeout is not None and (
        isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0
    ):
        raise errors.ConfigurationError(
            f"Invalid timeout {timeout!r}: a positive number of seconds, or None"
        )
    if retry is not None and not isinstance(retry, RetryPolicy):
        raise errors.ConfigurationError(f"retry must be a pgqml.RetryPolicy, got {retry!r}")


def _is_context_param(param: inspect.Parameter) -> bool:
    ann = param.annotation
    if ann is WorkerContext:
        return True
    if isinstance(ann, str) and ann.rsplit(".", 1)[-1] == "WorkerContext":
        return True
    return param.name == "ctx" and ann is inspect.Parameter.empty


class Task(Handler, Generic[R]):
    """A function registered with :meth:`WorkerRegistry.task`.

    Calling the task calls the function. :meth:`enqueue` / :meth:`enqueue_async`
    enqueue a job for it with the payload given as keyword arguments;
    :meth:`options` sets enqueue options (``priority``, ``delay``, ...).
    """

    def __init__(
        self,
        fn: Callable[..., R],
        name: str,
        *,
        queue: str = client.DEFAULT_QUEUE,
        max_attempts: int = client.DEFAULT_MAX_ATTEMPTS,
        timeout: float | None = None,
        retry: RetryPolicy | None = None,
        priority: int = 0,
    ) -> None:
        _check_options(name, queue, max_attempts, timeout, retry)
        self.fn = fn
        self.name = name
        self.queue = queue
        self.max_attempts = max_attempts
        self.timeout = None if timeout is None else float(timeout)
        self.retry = retry
        self.priority = priority
        self.is_async = inspect.iscoroutinefunction(fn)
        self.__doc__ = fn.__doc__
        self.__wrapped__ = fn

        sig = inspect.signature(fn)
        self._ctx_param: str | None = None
        names: list[str] = []
        required: list[str] = []
        self._var_kw = False
        for p in sig.parameters.values():
            if self._ctx_param is None and _is_context_param(p):
                self._ctx_param = p.name
                continue
            if p.kind is p.VAR_KEYWORD:
                self._var_kw = True
            elif p.kind is p.VAR_POSITIONAL:
                continue
            elif p.kind is p.POSITIONAL_ONLY:
                if p.default is p.empty:
                    raise errors.ConfigurationError(
                        f"task {name!r}: parameter {p.name!r} is positional-only, but the "
                        "payload arrives as keyword arguments; make it a normal parameter"
                    )
            else:
                names.append(p.name)
                if p.default is p.empty:
                    required.append(p.name)
        self._names = frozenset(names)
        self._required = frozenset(required)
        self._signature = f"{fn.__name__}{sig}"

    def __call__(self, *args: Any, **kwargs: Any) -> R:
        return self.fn(*args, **kwargs)

    def __repr__(self) -> str:
        return f"<pgqml.Task {self.name!r} queue={self.queue!r}>"

    def check_payload(self, payload: Mapping[str, Any]) -> None:
        """Raise :class:`PayloadMismatch` unless ``payload`` fits the function's signature."""
        if not payload and not self._required:
            return
        keys = payload.keys()
        missing = self._required - keys
        unknown = () if self._var_kw else keys - self._names
        if self._ctx_param is not None and self._ctx_param in keys:
            unknown = {*unknown, self._ctx_param}
        if missing or unknown:
            parts = []
            if missing:
                parts.append("missing " + ", ".join(sorted(missing)))
            if unknown:
                parts.append("unexpected " + ", ".join(sorted(unknown)))
            raise PayloadMismatch(
                f"payload does not fit {self._signature}: {'; '.join(parts)}",
                missing=sorted(missing),
                unexpected=sorted(unknown),
            )

    def invoke(self, job: Job, ctx: WorkerContext) -> Any:
        payload = job.payload
        self.check_payload(payload)
        if self._ctx_param is None:
            return self.fn(**payload)
        return self.fn(**payload, **{self._ctx_param: ctx})

    # -- enqueue sugar --------------------------------------------------------

    def options(self, **options: Any) -> _TaskEnqueuer:
        """Enqueue options for one call: ``task.options(delay=60).enqueue(conn, x=1)``.

        Accepts the keyword options of :func:`pgqml.enqueue` (``queue``,
        ``priority``, ``run_at``, ``delay``, ``max_attempts``, ``unique_key``,
        ``metadata``, ``tags``).
        """
        allowed = {
            "queue",
            "priority",
            "run_at",
            "delay",
            "max_attempts",
            "unique_key",
            "metadata",
            "tags",
        }
        unknown = set(options) - allowed
        if unknown:
            raise errors.ValidationError(
                f"unknown enqueue options {sorted(unknown)}; allowed: {sorted(allowed)}"
            )
        return _TaskEnqueuer(self, options)

    def enqueue(self, conn: psycopg.Connection[Any], /, **payload: Any) -> int:
        """Enqueue a job for this task in ``conn``'s transaction; returns the job id."""
        return _TaskEnqueuer(self, {}).enqueue(conn, **payload)

    async def enqueue_async(self, conn: psycopg.AsyncConnection[Any], /, **payload: Any) -> int:
        """Async twin of :meth:`enqueue`."""
        return await _TaskEnqueuer(self, {}).enqueue_async(conn, **payload)


@dataclass(frozen=True)
class _TaskEnqueuer:
    task: Task[Any]
    opts: Mapping[str, Any]

    def _kwargs(self) -> dict[str, Any]:
        kw: dict[str, Any] = {
            "queue": self.task.queue,
            "priority": self.task.priority,
            "max_attempts": self.task.max_attempts,
        }
        kw.update(self.opts)
        return kw

    def enqueue(self, conn: psycopg.Connection[Any], /, **payload: Any) -> int:
        self.task.check_payload(payload)
        return client.enqueue(conn, self.task.name, payload, **self._kwargs())

    async def enqueue_async(self, conn: psycopg.AsyncConnection[Any], /, **payload: Any) -> int:
        self.task.check_payload(payload)
        return await client.enqueue_async(conn, self.task.name, payload, **self._kwargs())


class Worker(Handler):
    """Base class for qml-rs style workers.

    Set ``method_name`` and implement ``execute(job, ctx)`` (sync or
    ``async``), returning a :class:`WorkerResult` (any other value counts as
    a success with that result). Optional class attributes: ``queue``,
    ``max_attempts``, ``timeout``, ``retry``.
    """

    method_name: ClassVar[str]
    queue: str = client.DEFAULT_QUEUE
    max_attempts: int = client.DEFAULT_MAX_ATTEMPTS
    timeout: float | None = None
    retry: RetryPolicy | None = None

    def execute(self, job: Job, ctx: WorkerContext) -> WorkerResult | Awaitable[WorkerResult]:
        raise NotImplementedError(f"{type(self).__name__}.execute is not implemented")

    @property
    def name(self) -> str:  # type: ignore[override]
        return type(self).method_name

    @property
    def is_async(self) -> bool:  # type: ignore[override]
        return inspect.iscoroutinefunction(type(self).execute)

    def invoke(self, job: Job, ctx: WorkerContext) -> Any:
        return self.execute(job, ctx)


# -- registry ----------------------------------------------------------------


class WorkerRegistry:
    """Method name -> handler. A worker claims only jobs whose method is registered."""

    def __init__(self) -> None:
        self._handlers: dict[str, Handler] = {}

    @overload
    def task(self, name: F, /) -> Task[Any]: ...

    @overload
    def task(
        self,
        name: str | None = None,
        /,
        *,
        queue: str = ...,
        max_attempts: int = ...,
        timeout: float | None = ...,
        retry: RetryPolicy | None = ...,
        priority: int = ...,
    ) -> Callable[[Callable[..., R]], Task[R]]: ...

    def task(
        self,
        name: Any = None,
        /,
        *,
        queue: str = client.DEFAULT_QUEUE,
        max_attempts: int = client.DEFAULT_MAX_ATTEMPTS,
        timeout: float | None = None,
        retry: RetryPolicy | None = None,
        priority: int = 0,
    ) -> Any:
        """Register a function as the handler of method ``name`` (default: its ``__name__``).

        ``queue``, ``max_attempts`` and ``priority`` are enqueue defaults for
        :meth:`Task.enqueue`; ``timeout`` (seconds) and ``retry`` override the
        server's defaults when the job runs.
        """
        if callable(name):
            return self.task()(name)

        def decorate(fn: Callable[..., R]) -> Task[R]:
            task: Task[R] = Task(
                fn,
                name or fn.__name__,
                queue=queue,
                max_attempts=max_attempts,
                timeout=timeout,
                retry=retry,
                priority=priority,
            )
            self._add(task)
            return task

        return decorate

    def register(self, worker: Any) -> Any:
        """Register a :class:`Worker` instance (or class, instantiated without arguments).

        Usable as a class decorator; returns its argument.
        """
        instance = worker() if isinstance(worker, type) else worker
        if not isinstance(instance, Worker):
            raise errors.ConfigurationError(
                f"register() takes a pgqml.Worker subclass or instance, got {worker!r}; "
                "use @registry.task for functions"
            )
        if not isinstance(getattr(type(instance), "method_name", None), str):
            raise errors.ConfigurationError(
                f"{type(instance).__name__} must set the class attribute method_name"
            )
        _check_options(
            instance.name,
            instance.queue,
            instance.max_attempts,
            instance.timeout,
            instance.retry,
        )
        self._add(instance)
        return worker

    def _add(self, handler: Handler) -> None:
        existing = self._handlers.get(handler.name)
        if existing is not None and existing is not handler:
            raise errors.ConfigurationError(
                f"method {handler.name!r} is already registered ({existing!r}); "
                "each method name has one handler"
            )
        self._handlers[handler.name] = handler

    def get(self, name: str) -> Handler | None:
        return self._handlers.get(name)

    def names(self) -> list[str]:
        """Registered method names, sorted."""
        return sorted(self._handlers)

    def __contains__(self, name: object) -> bool:
        return name in self._handlers

    def __len__(self) -> int:
        return len(self._handlers)

    def __iter__(self) -> Iterator[Handler]:
        return iter(list(self._handlers.values()))

    def __repr__(self) -> str:
        return f"<pgqml.WorkerRegistry {self.names()}>"


def registry_from(handlers: WorkerRegistry | Sequence[Handler]) -> WorkerRegistry:
    if isinstance(handlers, WorkerRegistry):
        return handlers
    reg = WorkerRegistry()
    for h in handlers:
        reg._add(h)
    return reg
