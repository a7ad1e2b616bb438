"""``pgqml worker --processes N``: N worker processes under one supervisor.

For CPU-bound handlers (the GIL). The supervisor starts each child as
``python -m pgqml worker ...`` with the same options, in its own process
group (so a terminal's Ctrl-C reaches only the supervisor, which forwards
it), restarts a child that dies with backoff, and on SIGTERM/SIGINT forwards
the signal: the first makes children drain gracefully, a second one makes
them stop at once. It exits 0 when every child exited 0.

With ``--metrics-port`` the children record into a prometheus-client
multiprocess directory and the supervisor serves the aggregate on
``/metrics``; ``/health`` is healthy while every child is alive and
heartbeating in ``pgqml.servers``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from typing import Any

import psycopg

from pgqml import metrics as _metrics

__all__ = ["Supervisor"]

log = logging.getLogger("pgqml.supervisor")


class _Child:
    def __init__(self, index: int) -> None:
        self.index = index
        self.proc: subprocess.Popen[bytes] | None = None
        self.started = 0.0
        self.restarts = 0
        self.next_start = 0.0


class Supervisor:
    def __init__(
        self,
        child_args: Sequence[str],
        processes: int,
        *,
        dsn: str,
        heartbeat_interval: float,
        metrics_host: str | None = None,
        metrics_port: int | None = None,
    ) -> None:
        self.child_args = list(child_args)
        self.children = [_Child(i) for i in range(processes)]
        self.dsn = dsn
        self.heartbeat_interval = heartbeat_interval
        self.metrics_host = metrics_host
        self.metrics_port = metrics_port
        self._signals = 0
        self._mpdir: str | None = None

    def _spawn(self, child: _Child) -> None:
        env = dict(os.environ)
        env["PGQML_WORKER_CHILD"] = str(child.index)
        if self._mpdir is not None:
            env["PROMETHEUS_MULTIPROC_DIR"] = self._mpdir
        cmd = [sys.executable, "-m", "pgqml", *self.child_args]
        child.proc = subprocess.Popen(cmd, env=env, start_new_session=True)
        child.started = time.monotonic()
        log.info("started worker process %d (pid %d)", child.index, child.proc.pid)

    def _on_signal(self, signum: int, frame: Any) -> None:
        self._signals += 1
        name = signal.Signals(signum).name
        if self._signals == 1:
            log.info(
                "received %s: stopping %d worker process(es) gracefully (again to stop at once)",
                name,
                len(self.children),
            )
        else:
            log.warning("received %s again: stopping worker processes at once", name)
        for child in self.children:
            if child.proc is not None and child.proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    child.proc.send_signal(signal.SIGTERM)

    def _health(self) -> tuple[bool, dict[str, Any]]:
        pids = [c.proc.pid for c in self.children if c.proc is not None and c.proc.poll() is None]
        details: dict[str, Any] = {"processes": len(self.children), "alive": len(pids)}
        if len(pids) < len(self.children):
            return False, details
        try:
            with psycopg.connect(self.dsn, connect_timeout=3, autocommit=True) as conn:
                rows = conn.execute(
                    "SELECT pid, extract(epoch FROM now() - last_heartbeat_at) FROM pgqml.servers"
                    " WHERE host = %s AND pid = ANY(%s)",
                    (socket.gethostname(), pids),
                ).fetchall()
        except psycopg.Error as exc:
            details["error"] = f"database unreachable: {exc}"
            return False, details
        ages = {pid: float(age) for pid, age in rows}
        details["heartbeat_ages"] = {str(p): round(ages[p], 3) for p in ages}
        fresh = all(ages.get(p, 1e9) < self.heartbeat_interval * 3 for p in pids)
        return fresh, details

    def run(self) -> int:
        server = None
        if self.metrics_port is not None:
            self._mpdir = tempfile.mkdtemp(prefix="pgqml-metrics-")
            server = _metrics.MetricsServer(
                self.metrics_host or "0.0.0.0",
                self.metrics_port,
                self._health,
                multiprocess_dir=self._mpdir,
            ).start()
            log.info("serving /metrics and /health on %s:%d", self.metrics_host, server.port)
        old = {s: signal.signal(s, self._on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            for child in self.children:
                self._spawn(child)
            return self._watch()
        finally:
            for s, handler in old.items():
                signal.signal(s, handler)
            if server is not None:
                server.close()
            if self._mpdir is not None:
                shutil.rmtree(self._mpdir, ignore_errors=True)

    def _watch(self) -> int:
        worst = 0
        while True:
            alive = 0
            for child in self.children:
                proc = child.proc
                if proc is None:
                    if self._signals:
                        continue
                    if time.monotonic() >= child.next_start:
                        self._spawn(child)
                    alive += 1
                    continue
                code = proc.poll()
                if code is None:
                    alive += 1
                    continue
                if self._mpdir is not None:
                    from prometheus_client import multiprocess

                    multiprocess.mark_process_dead(proc.pid, self._mpdir)  # type: ignore[no-untyped-call]
                child.proc = None
                if self._signals:
                    if code != 0:
                        log.warning("worker process %d exited with %d", child.index, code)
                        worst = max(worst, 1)
                    else:
                        log.info("worker process %d stopped", child.index)
                    continue
                # Died on its own: restart with backoff (reset after a minute of health).
                ran = time.monotonic() - child.started
                child.restarts = 0 if ran > 60 else child.restarts + 1
                delay = min(30.0, 0.5 * 2 ** min(child.restarts, 6)) if child.restarts else 0.5
                child.next_start = time.monotonic() + delay
                log.error(
                    "worker process %d (pid %d) died with %s after %.1fs; restarting in %.1fs",
                    child.index,
                    proc.pid,
                    f"signal {-code}" if code < 0 else f"exit code {code}",
                    ran,
                    delay,
                )
                alive += 1
            if self._signals and alive == 0:
                return worst
            time.sleep(0.1)
