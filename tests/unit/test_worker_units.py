"""Retry policies, the task registry and ServerConfig validation (no database)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from types import SimpleNamespace

import pytest

import pgqml
from pgqml import errors
from pgqml.worker import middleware, supervisor  # noqa: F401  (import check)
from pgqml.worker.retry import DEFAULT_RETRY_POLICY, RetryPolicy


def test_default_policy_is_qml_rs_exponential():
    p = DEFAULT_RETRY_POLICY
    assert (p.strategy, p.initial, p.multiplier, p.max_delay, p.jitter) == (
        "exponential",
        1.0,
        2.0,
        900.0,
        0.25,
    )
    assert [p.base_delay(n) for n in (1, 2, 3, 4)] == [1.0, 2.0, 4.0, 8.0]
    assert p.base_delay(30) == 900.0
    assert p.base_delay(10_000) == 900.0  # no overflow
    for attempt in (1, 5, 20):
        base = p.base_delay(attempt)
        assert base is not None
        for _ in range(200):
            d = p.delay(attempt)
            assert d is not None and 0.75 * base <= d <= 1.25 * base


def test_fixed_linear_none():
    assert RetryPolicy.fixed(5).delay(1) == 5.0 == RetryPolicy.fixed(5).delay(9)
    lin = RetryPolicy.linear(initial=2, increment=3, max_delay=10)
    assert [lin.delay(n) for n in (1, 2, 3, 4)] == [2.0, 5.0, 8.0, 10.0]
    assert RetryPolicy.none().delay(1) is None
    assert not RetryPolicy.none().retries(RuntimeError())
    exp = RetryPolicy.exponential(initial=timedelta(seconds=1), multiplier=3, jitter=0)
    assert exp.delay(3) == 9.0


def test_retry_filters():
    class Fatal(Exception):
        pass

    p = RetryPolicy.exponential(never_retry=(Fatal, KeyError), retry_on=(OSError, Fatal))
    assert p.retries(OSError())
    assert p.retries(ConnectionError())  # subclass of OSError
    assert not p.retries(Fatal())  # never_retry wins
    assert not p.retries(ValueError())  # not in retry_on
    assert p.retries(None)  # WorkerResult.retry()


@pytest.mark.parametrize(
    "kwargs",
    [
        {"strategy": "sometimes"},
        {"initial": -1},
        {"multiplier": 0.5},
        {"jitter": 1.5},
        {"never_retry": (ValueError, "nope")},
        {"retry_on": [ValueError]},
    ],
)
def test_bad_policies_are_rejected(kwargs):
    with pytest.raises(errors.ConfigurationError):
        RetryPolicy(**kwargs)


def test_task_payload_checks_and_context_detection():
    reg = pgqml.WorkerRegistry()

    @reg.task("send_email", queue="emails", max_attempts=3, timeout=30)
    def send_email(to: str, subject: str = "hi", *, ctx: pgqml.WorkerContext) -> str:
        return f"{to}:{subject}:{ctx.attempt}"

    assert isinstance(send_email, pgqml.Task)
    assert (send_email.queue, send_email.max_attempts, send_email.timeout) == ("emails", 3, 30.0)
    assert send_email("a", ctx=SimpleNamespace(attempt=1)) == "a:hi:1"  # still callable
    send_email.check_payload({"to": "x"})
    send_email.check_payload({"to": "x", "subject": "y"})
    with pytest.raises(pgqml.PayloadMismatch, match="missing to"):
        send_email.check_payload({})
    with pytest.raises(pgqml.PayloadMismatch, match="unexpected cc"):
        send_email.check_payload({"to": "x", "cc": "y"})
    with pytest.raises(pgqml.PayloadMismatch, match="unexpected ctx"):
        send_email.check_payload({"to": "x", "ctx": 1})

    @reg.task
    def anything(**kw: object) -> int:
        return len(kw)

    anything.check_payload({"a": 1, "b": 2})
    assert anything.name == "anything" and not anything.is_async

    @reg.task("annotated")
    async def annotated(n: int, context: pgqml.WorkerContext) -> int:
        return n

    assert annotated.is_async and annotated._ctx_param == "context"
    annotated.check_payload({"n": 1})
    assert reg.names() == ["annotated", "anything", "send_email"]
    assert "send_email" in reg and len(reg) == 3


def test_registry_rejects_duplicates_and_bad_definitions():
    reg = pgqml.WorkerRegistry()
    reg.task("a")(lambda: None)
    with pytest.raises(errors.ConfigurationError, match="already registered"):
        reg.task("a")(lambda: None)
    with pytest.raises(errors.InvalidMethodName):
        reg.task("bad name!")(lambda: None)
    with pytest.raises(errors.InvalidQueueName):
        reg.task("b", queue="")(lambda: None)
    with pytest.raises(errors.InvalidMaxAttempts):
        reg.task("c", max_attempts=0)(lambda: None)
    with pytest.raises(errors.ConfigurationError, match="timeout"):
        reg.task("d", timeout=-1)(lambda: None)
    with pytest.raises(errors.ConfigurationError, match="positional-only"):

        @reg.task("e")
        def e(x, /):
            return x

    class NoName(pgqml.Worker):
        def execute(self, job, ctx):
            return pgqml.WorkerResult.success()

    with pytest.raises(errors.ConfigurationError, match="method_name"):
        reg.register(NoName)
    with pytest.raises(errors.ConfigurationError, match="Worker subclass"):
        reg.register(lambda: None)


def test_worker_class_registration():
    reg = pgqml.WorkerRegistry()

    @reg.register
    class Report(pgqml.Worker):
        method_name = "generate_report"
        queue = "reports"
        timeout = 5

        async def execute(self, job, ctx):
            return pgqml.WorkerResult.success()

    handler = reg.get("generate_report")
    assert isinstance(handler, Report) and handler.is_async and handler.queue == "reports"


def test_task_enqueue_validates_payload_before_io():
    reg = pgqml.WorkerRegistry()

    @reg.task("t")
    def t(x: int) -> None: ...

    with pytest.raises(pgqml.PayloadMismatch):
        t.enqueue(None, y=1)  # type: ignore[arg-type]
    with pytest.raises(errors.ValidationError, match="unknown enqueue options"):
        t.options(when=1)


def test_worker_result_constructors():
    ok = pgqml.WorkerResult.success({"a": 1})
    assert ok.is_success and ok.result == {"a": 1}
    at = datetime.now(timezone.utc)
    r = pgqml.WorkerResult.retry("later", at=at)
    assert r.should_retry and r.retry_at == at
    assert pgqml.WorkerResult.retry(delay=timedelta(seconds=3)).delay == 3.0
    with pytest.raises(errors.InvalidSchedule):
        pgqml.WorkerResult.retry(at=datetime.now())  # naive
    with pytest.raises(errors.InvalidSchedule):
        pgqml.WorkerResult.retry(at=at, delay=1)
    with pytest.raises(errors.InvalidSchedule):
        pgqml.WorkerResult.retry(delay=-1)
    assert pgqml.WorkerResult.failure("no").is_failure


def test_server_config_defaults_and_validation():
    cfg = pgqml.ServerConfig()
    assert (cfg.server_name, cfg.concurrency, cfg.queues, cfg.polling_interval) == (
        "pgqml",
        10,
        None,
        1.0,
    )
    assert (cfg.job_timeout, cfg.fetch_batch_size, cfg.shutdown_timeout) == (300.0, 100, 30.0)
    assert (cfg.lease_duration, cfg.heartbeat_interval) == (30.0, 5.0)
    assert (cfg.succeeded_ttl, cfg.failed_ttl) == (86400.0, 604800.0)
    assert pgqml.ServerConfig(polling_interval=timedelta(milliseconds=250)).polling_interval == 0.25
    assert pgqml.ServerConfig(queues=["a", "b"]).queues == ("a", "b")
    bad = [
        {"concurrency": 0},
        {"queues": "emails"},
        {"queues": []},
        {"queues": ["bad queue"]},
        {"polling_interval": 0},
        {"heartbeat_interval": 20, "lease_duration": 30},
        {"job_timeout": -1},
        {"server_name": ""},
        {"retry": "exponential"},
    ]
    for kwargs in bad:
        with pytest.raises(errors.ConfigurationError):
            pgqml.ServerConfig(**kwargs)


def test_context_cancellation():
    job = pgqml.Job(
        1,
        "m",
        "q",
        {},
        "processing",
        0,
        2,
        5,
        datetime.now(timezone.utc),
        datetime.now(timezone.utc),
        last_error="boom",
    )
    ctx = pgqml.WorkerContext(job)
    assert ctx.attempt == 2 and ctx.is_retry and ctx.previous_error == "boom"
    assert not ctx.is_cancelled()
    ctx.raise_if_cancelled()
    ctx.cancel("shutdown")
    ctx.cancel("lost")  # the first reason sticks
    assert ctx.is_cancelled() and ctx.cancel_reason == "shutdown"
    assert ctx.wait_cancelled(0)
    with pytest.raises(pgqml.JobCancelled, match="shutdown"):
        ctx.raise_if_cancelled()
    assert ctx.logger.extra == {"job_id": 1, "attempt": 2}


def test_middleware_chain_order_without_a_database():
    import asyncio

    trail: list[str] = []

    def layer(name):
        async def mw(job, ctx, call_next):
            trail.append(f"{name}>")
            r = await call_next(job, ctx)
            trail.append(f"<{name}")
            return r

        return mw

    class Obj:
        async def call(self, job, ctx, call_next):
            trail.append("obj>")
            return await call_next(job, ctx)

    async def terminal(job, ctx):
        trail.append("handler")
        return pgqml.WorkerResult.success()

    chain = middleware.build_chain([layer("A"), layer("B"), Obj()], terminal)
    asyncio.run(chain(None, None))
    assert trail == ["A>", "B>", "obj>", "handler", "<B", "<A"]
