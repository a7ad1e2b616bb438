"""Middleware around job execution, and state-change hooks.

A middleware is an async callable ``(job, ctx, call_next) -> WorkerResult``
(or an object with such a ``call`` method). ``call_next(job, ctx)`` runs the
rest of the chain and, at its end, the handler. The first middleware
registered is the outermost: its "before" code runs first and its "after"
code last. A middleware that does not call ``call_next`` short-circuits the
handler, and the result it returns is what is recorded.

Exceptions raised by the handler, and timeouts, reach middleware already
turned into a :class:`~pgqml.WorkerResult` (``retry`` or ``failure``, with
``.exception`` set), so "after" code sees every outcome as a value.
``asyncio.CancelledError`` (shutdown, lost lease) passes through: re-raise it.

A hook is a plain callable ``(job, old_state, new_state)`` run after a
transition has been written (a claimed job: ``enqueued -> processing``; a
finished attempt: ``processing -> succeeded | failed | awaiting_retry``; a
released job: ``processing -> enqueued``). Hooks run on the event loop: keep
them quick. Their exceptions are logged, never raised.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol, Union

from pgqml.worker.task import WorkerContext, WorkerResult

if TYPE_CHECKING:
    from pgqml._purepy import Job
    from pgqml.states import JobState

__all__ = [
    "LoggingMiddleware",
    "Middleware",
    "Next",
    "StateChangeHook",
    "build_chain",
]

Next = Callable[["Job", WorkerContext], Awaitable[WorkerResult]]


class _MiddlewareObject(Protocol):
    async def call(self, job: Job, ctx: WorkerContext, call_next: Next) -> WorkerResult: ...


Middleware = Union[  # noqa: UP007 (a runtime alias: "Job" is only a string here)
    Callable[["Job", WorkerContext, Next], Awaitable[WorkerResult]], _MiddlewareObject
]
StateChangeHook = Callable[["Job", "JobState", "JobState"], Any]


class LoggingMiddleware:
    """One INFO line when an attempt starts and one when it ends (on by default).

    ``job 42 send_email attempt 1/5: processing`` then ``... succeeded in
    3.1 ms``, ``... failed in 2 ms: ValueError: bad`` or ``... will retry in
    2.0 s: ...``.
    """

    def __init__(self, logger: logging.Logger | None = None, level: int = logging.INFO) -> None:
        self.logger = logger or logging.getLogger("pgqml.worker.jobs")
        self.level = level

    async def call(self, job: Job, ctx: WorkerContext, call_next: Next) -> WorkerResult:
        logger = self.logger
        if not logger.isEnabledFor(self.level):
            return await call_next(job, ctx)
        prefix = f"job {job.id} {job.method} attempt {job.attempt}/{job.max_attempts}"
        logger.log(self.level, "%s: processing", prefix)
        t0 = time.perf_counter()
        try:
            result = await call_next(job, ctx)
        except asyncio.CancelledError:
            logger.log(self.level, "%s: interrupted (%s)", prefix, ctx.cancel_reason or "cancelled")
            raise
        ms = (time.perf_counter() - t0) * 1000
        if result.kind == "success":
            logger.log(self.level, "%s: succeeded in %.1f ms", prefix, ms)
        elif result.kind == "retry":
            when = (
                f"at {result.retry_at.isoformat()}"
                if result.retry_at is not None
                else f"in {result.delay:.1f} s"
                if result.delay is not None
                else "per the retry policy"
            )
            logger.log(
                self.level, "%s: will retry %s (%.1f ms): %s", prefix, when, ms, result.error
            )
        else:
            logger.log(self.level, "%s: failed in %.1f ms: %s", prefix, ms, result.error)
        return result


def _as_callable(mw: Middleware) -> Callable[[Job, WorkerContext, Next], Awaitable[WorkerResult]]:
    call = getattr(mw, "call", None)
    if call is not None and callable(call):
        return call  # type: ignore[no-any-return]
    if callable(mw):
        return mw
    raise TypeError(f"middleware must be callable or have a call() method, got {mw!r}")


def build_chain(middleware: Sequence[Middleware], terminal: Next) -> Next:
    """Compose ``middleware`` (first = outermost) around ``terminal``."""
    call_next = terminal
    for mw in reversed(middleware):
        call_next = _link(_as_callable(mw), call_next)
    return call_next


def _link(
    mw: Callable[[Job, WorkerContext, Next], Awaitable[WorkerResult]], call_next: Next
) -> Next:
    def layer(job: Job, ctx: WorkerContext) -> Awaitable[WorkerResult]:
        return mw(job, ctx, call_next)

    return layer
