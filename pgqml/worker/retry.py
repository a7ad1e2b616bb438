"""Retry policies: when a failed attempt runs again, and which errors never retry.

How many times a job may run is the job's own ``max_attempts`` (set at
enqueue, default 5; a task's ``max_attempts`` is its enqueue default). The
policy only decides *when* the next attempt runs and *whether* an error is
worth retrying at all. The default is qml-rs's: exponential backoff from 1 s,
doubling, capped at 15 minutes, with ±25 % jitter.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import timedelta
from typing import Literal

from pgqml import errors

__all__ = ["DEFAULT_RETRY_POLICY", "RetryPolicy", "RetryStrategy"]

RetryStrategy = Literal["none", "fixed", "linear", "exponential"]

_Seconds = float | int | timedelta


def _seconds(value: _Seconds, what: str) -> float:
    seconds = value.total_seconds() if isinstance(value, timedelta) else value
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not seconds >= 0:
        raise errors.ConfigurationError(
            f"Invalid {what} {value!r}: a non-negative number of seconds or a timedelta"
        )
    return float(seconds)


@dataclass(frozen=True)
class RetryPolicy:
    """When to retry a failed attempt.

    Build one with :meth:`none`, :meth:`fixed`, :meth:`linear` or
    :meth:`exponential`. ``never_retry`` lists exception classes that fail the
    job at once, whatever attempts remain; ``retry_on`` limits retries to these
    classes (default: every ``Exception``).
    """

    strategy: RetryStrategy = "exponential"
    #: first delay in seconds (the constant delay for ``fixed``)
    initial: float = 1.0
    #: growth factor of ``exponential``
    multiplier: float = 2.0
    #: growth per attempt of ``linear``, in seconds
    increment: float = 0.0
    #: upper bound on any delay, in seconds
    max_delay: float = 900.0
    #: relative jitter: 0.25 spreads each delay uniformly over ±25 %
    jitter: float = 0.25
    retry_on: tuple[type[BaseException], ...] = (Exception,)
    never_retry: tuple[type[BaseException], ...] = ()

    def __post_init__(self) -> None:
        if self.strategy not in ("none", "fixed", "linear", "exponential"):
            raise errors.ConfigurationError(
                f"Invalid retry strategy {self.strategy!r}: none, fixed, linear or exponential"
            )
        for name in ("initial", "increment", "max_delay"):
            _seconds(getattr(self, name), name)
        if not self.multiplier >= 1:
            raise errors.ConfigurationError(f"Invalid multiplier {self.multiplier!r}: >= 1")
        if not 0 <= self.jitter < 1:
            raise errors.ConfigurationError(f"Invalid jitter {self.jitter!r}: from 0 to below 1")
        for name in ("retry_on", "never_retry"):
            classes = getattr(self, name)
            if not isinstance(classes, tuple) or not all(
                isinstance(c, type) and issubclass(c, BaseException) for c in classes
            ):
                raise errors.ConfigurationError(f"{name} must be a tuple of exception classes")

    # -- constructors -------------------------------------------------------

    @classmethod
    def none(cls) -> RetryPolicy:
        """Never retry: the first failure is final."""
        return cls(strategy="none", jitter=0.0)

    @classmethod
    def fixed(
        cls,
        interval: _Seconds = 60.0,
        *,
        jitter: float = 0.0,
        never_retry: tuple[type[BaseException], ...] = (),
        retry_on: tuple[type[BaseException], ...] = (Exception,),
    ) -> RetryPolicy:
        """The same delay before every retry."""
        seconds = _seconds(interval, "interval")
        return cls(
            strategy="fixed",
            initial=seconds,
            max_delay=max(seconds, 0.0),
            jitter=jitter,
            never_retry=never_retry,
            retry_on=retry_on,
        )

    @classmethod
    def linear(
        cls,
        initial: _Seconds = 1.0,
        increment: _Seconds = 1.0,
        max_delay: _Seconds = 900.0,
        *,
        jitter: float = 0.0,
        never_retry: tuple[type[BaseException], ...] = (),
        retry_on: tuple[type[BaseException], ...] = (Exception,),
    ) -> RetryPolicy:
        """``initial + increment * (attempt - 1)``, capped at ``max_delay``."""
        return cls(
            strategy="linear",
            initial=_seconds(initial, "initial"),
            increment=_seconds(increment, "increment"),
            max_delay=_seconds(max_delay, "max_delay"),
            jitter=jitter,
            never_retry=never_retry,
            retry_on=retry_on,
        )

    @classmethod
    def exponential(
        cls,
        initial: _Seconds = 1.0,
        multiplier: float = 2.0,
        max_delay: _Seconds = 900.0,
        *,
        jitter: float = 0.25,
        never_retry: tuple[type[BaseException], ...] = (),
        retry_on: tuple[type[BaseException], ...] = (Exception,),
    ) -> RetryPolicy:
        """``initial * multiplier ** (attempt - 1)``, capped at ``max_delay``, ± jitter."""
        return cls(
            strategy="exponential",
            initial=_seconds(initial, "initial"),
            multiplier=multiplier,
            max_delay=_seconds(max_delay, "max_delay"),
            jitter=jitter,
            never_retry=never_retry,
            retry_on=retry_on,
        )

    # -- decisions ----------------------------------------------------------

    def base_delay(self, attempt: int) -> float | None:
        """The delay in seconds after failed attempt ``attempt`` (1-based), before jitter;
        ``None`` for strategy ``none``."""
        n = max(attempt, 1) - 1
        if self.strategy == "none":
            return None
        if self.strategy == "fixed":
            delay = self.initial
        elif self.strategy == "linear":
            delay = self.initial + self.increment * n
        else:
            # Cap the exponent first so huge attempt numbers cannot overflow.
            try:
                delay = self.initial * self.multiplier**n
            except OverflowError:
                delay = self.max_delay
        return min(delay, self.max_delay)

    def delay(self, attempt: int) -> float | None:
        """The delay in seconds after failed attempt ``attempt``, jitter applied."""
        base = self.base_delay(attempt)
        if base is None or not self.jitter:
            return base
        return max(0.0, base * random.uniform(1 - self.jitter, 1 + self.jitter))

    def retries(self, exc: BaseException | None) -> bool:
        """Is this error worth another attempt (attempts permitting)?"""
        if self.strategy == "none":
            return False
        if exc is None:
            return True
        if isinstance(exc, self.never_retry):
            return False
        return isinstance(exc, self.retry_on)


#: qml-rs's default: 1 s doubling to at most 15 min, ±25 % jitter.
DEFAULT_RETRY_POLICY = RetryPolicy()
