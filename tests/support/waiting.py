"""Wait on a condition, not a sleep: poll until true or fail with what was awaited."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_for(
    predicate: Callable[[], T],
    timeout: float = 10.0,
    what: str = "",
    *,
    interval: float = 0.02,
    context: Callable[[], str] | None = None,
) -> T:
    """Poll ``predicate`` every ``interval`` until it returns something truthy."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            extra = f"\n{context()}" if context is not None else ""
            raise AssertionError(
                f"timed out after {timeout:g}s waiting for {what or predicate}{extra}"
            )
        time.sleep(interval)
