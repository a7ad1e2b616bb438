"""A small pool of daemon threads for sync handlers.

Not ``concurrent.futures.ThreadPoolExecutor``: its threads are joined at
interpreter exit, so one sync handler that never returns would keep a
stopped worker process alive forever. Python cannot kill a thread; these are
daemon threads, so a process that has released its jobs and flushed its
writes can exit while a runaway handler is still inside them.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import queue
import threading
from collections.abc import Callable
from typing import Any

__all__ = ["ThreadPool"]

_Item = tuple[asyncio.AbstractEventLoop, "asyncio.Future[Any]", Callable[[], Any]] | None


class ThreadPool:
    def __init__(self, max_threads: int, name: str = "pgqml-sync") -> None:
        self._max = max_threads
        self._name = name
        self._queue: queue.SimpleQueue[_Item] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._idle = 0
        self._lock = threading.Lock()
        self.busy = 0

    def submit(
        self, loop: asyncio.AbstractEventLoop, fn: Callable[..., Any], *args: Any
    ) -> asyncio.Future[Any]:
        """Run ``fn(*args)`` in a thread (with the caller's contextvars); a loop future."""
        fut: asyncio.Future[Any] = loop.create_future()
        ctx = contextvars.copy_context()
        with self._lock:
            self.busy += 1
            # Reserve an idle thread for this item, else start one (up to the
            # cap). Counting idle threads without reserving them lets several
            # submits share one thread that only looks idle.
            if self._idle > 0:
                self._idle -= 1
                spawn = False
            else:
                spawn = len(self._threads) < self._max
            if spawn:
                t = threading.Thread(
                    target=self._work, name=f"{self._name}-{len(self._threads)}", daemon=True
                )
                self._threads.append(t)
        if spawn:
            t.start()
        self._queue.put((loop, fut, lambda: ctx.run(fn, *args)))
        return fut

    def _work(self) -> None:
        # A new thread was started for an item already on its way: it is not idle.
        while True:
            item = self._queue.get()
            if item is None:
                return
            loop, fut, call = item
            try:
                result = call()
            except BaseException as exc:
                self._deliver(loop, fut, None, exc)
            else:
                self._deliver(loop, fut, result, None)
            with self._lock:
                self._idle += 1

    def _deliver(
        self,
        loop: asyncio.AbstractEventLoop,
        fut: asyncio.Future[Any],
        result: Any,
        exc: BaseException | None,
    ) -> None:
        with self._lock:
            self.busy -= 1

        def settle() -> None:
            if fut.cancelled():
                return
            if exc is not None:
                fut.set_exception(exc)
            else:
                fut.set_result(result)

        # A closed loop means nobody is waiting any more.
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(settle)

    def shutdown(self) -> None:
        """Ask idle threads to exit; busy ones exit when their call returns."""
        for _ in self._threads:
            self._queue.put(None)
