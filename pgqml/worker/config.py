"""``ServerConfig``: every setting of a :class:`BackgroundJobServer`, with its default.

The names follow qml-rs where it had the setting (``server_name``,
``concurrency`` = qml-rs ``worker_count``, ``queues``, ``polling_interval``,
``job_timeout``, ``fetch_batch_size``, ``shutdown_timeout``,
``succeeded_ttl``, ``failed_ttl``, ``heartbeat_interval``,
``dead_server_timeout``); the lease settings are pgqml's. All durations are
seconds (``float``) or ``timedelta``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from pgqml import client, errors
from pgqml.worker.retry import DEFAULT_RETRY_POLICY, RetryPolicy

__all__ = ["ServerConfig"]


def _secs(value: Any) -> Any:
    return value.total_seconds() if isinstance(value, timedelta) else value


@dataclass(frozen=True)
class ServerConfig:
    """Settings of one :class:`pgqml.BackgroundJobServer` (one process).

    ============================ ============ =========================================
    setting                      default      meaning
    ============================ ============ =========================================
    server_name                  ``"pgqml"``  label in logs, metrics and the registry
    concurrency                  10           handlers running at once (qml-rs worker_count);
                                              as many finished jobs more may hold their
                                              claim until their outcome is written
    queues                       ``None``     queues to take jobs from; None = all
    polling_interval             1.0          poll period, the safety net under LISTEN
    listen                       True         LISTEN/NOTIFY wakeup (off for PgBouncer
                                              transaction pooling)
    job_timeout                  300.0        per-attempt limit; a task's own wins;
                                              None = no limit
    fetch_batch_size             100          most jobs claimed by one statement
                                              (also capped by free concurrency)
    shutdown_timeout             30.0         grace for running jobs on stop
    lease_duration               30.0         how long a claim stays valid unrenewed
    heartbeat_interval           5.0          lease renewal and server heartbeat
    rescue_interval              5.0          how often expired leases are rescued
    dead_server_timeout          60.0         registry rows older than this are pruned
    completion_batch_size        500          most outcomes written per statement
    completion_flush_interval    0.005        how long an outcome may wait for others
                                              (only while other claimed jobs still run)
    succeeded_ttl                86400.0      history retention of succeeded jobs
    failed_ttl                   604800.0     history retention of failed jobs
    retry                        exponential  default RetryPolicy (1 s x2, 15 min, ±25 %)
    metrics                      True         record Prometheus metrics if installed
    stats_interval               10.0         queue depth / age gauge refresh
    summary_interval             60.0         throughput summary log line; 0 = off
    ============================ ============ =========================================

    A job whose worker dies is run again within about
    ``lease_duration + rescue_interval + polling_interval``.
    """

    server_name: str = "pgqml"
    concurrency: int = 10
    queues: Sequence[str] | None = None
    polling_interval: float = 1.0
    listen: bool = True
    job_timeout: float | None = 300.0
    fetch_batch_size: int = 100
    shutdown_timeout: float = 30.0
    lease_duration: float = 30.0
    heartbeat_interval: float = 5.0
    rescue_interval: float = 5.0
    dead_server_timeout: float = 60.0
    completion_batch_size: int = 500
    completion_flush_interval: float = 0.005
    succeeded_ttl: float = 86400.0
    failed_ttl: float = 7 * 86400.0
    retry: RetryPolicy = DEFAULT_RETRY_POLICY
    metrics: bool = True
    stats_interval: float = 10.0
    summary_interval: float = 60.0
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, timedelta):
                object.__setattr__(self, f.name, value.total_seconds())
        try:
            client._check_name(self.server_name, "server", errors.InvalidName)
        except errors.InvalidName as exc:
            raise errors.ConfigurationError(str(exc)) from None
        if self.queues is not None:
            if isinstance(self.queues, str):
                raise errors.ConfigurationError(
                    f"queues must be a list of names, not the string {self.queues!r}"
                )
            queues = tuple(self.queues)
            if not queues:
                raise errors.ConfigurationError(
                    "queues is empty: pass None to take jobs from every queue"
                )
            for q in queues:
                try:
                    client._check_name(q, "queue", errors.InvalidQueueName)
                except errors.InvalidQueueName as exc:
                    raise errors.ConfigurationError(str(exc)) from None
            object.__setattr__(self, "queues", queues)
        for name in ("concurrency", "fetch_batch_size", "completion_batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 10_000:
                raise errors.ConfigurationError(f"Invalid {name} {value!r}: 1 to 10000")
        positive = (
            "polling_interval",
            "shutdown_timeout",
            "lease_duration",
            "heartbeat_interval",
            "rescue_interval",
            "dead_server_timeout",
            "succeeded_ttl",
            "failed_ttl",
            "stats_interval",
        )
        for name in positive:
            self._check_seconds(name, allow_zero=name == "shutdown_timeout")
        self._check_seconds("completion_flush_interval", allow_zero=True)
        self._check_seconds("summary_interval", allow_zero=True)
        if self.job_timeout is not None:
            self._check_seconds("job_timeout")
        if self.heartbeat_interval * 2 > self.lease_duration:
            raise errors.ConfigurationError(
                f"heartbeat_interval ({self.heartbeat_interval}s) must be at most half of "
                f"lease_duration ({self.lease_duration}s), so one missed heartbeat does not "
                "lose the lease"
            )
        if not isinstance(self.retry, RetryPolicy):
            raise errors.ConfigurationError(
                f"retry must be a pgqml.RetryPolicy, got {self.retry!r}"
            )

    def _check_seconds(self, name: str, *, allow_zero: bool = False) -> None:
        value = _secs(getattr(self, name))
        ok = (
            not isinstance(value, bool)
            and isinstance(value, (int, float))
            and (value >= 0 if allow_zero else value > 0)
            and value < 10**9
        )
        if not ok:
            kind = "a non-negative" if allow_zero else "a positive"
            raise errors.ConfigurationError(f"Invalid {name} {value!r}: {kind} number of seconds")
        object.__setattr__(self, name, float(value))

    def replace(self, **changes: Any) -> ServerConfig:
        """A copy with some settings changed."""
        return dataclasses.replace(self, **changes)
