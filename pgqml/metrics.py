"""Prometheus metrics (the ``pgqml[metrics]`` extra) and the /metrics + /health server.

Metrics live in prometheus-client's default registry, created on first use,
so they show up next to an application's own. Without prometheus-client
installed every recording call is a no-op.

======================================== ========= ===================================
name                                     type      labels
======================================== ========= ===================================
pgqml_jobs_enqueued_total                counter   queue (jobs enqueued by this
                                                   process through the Python API)
pgqml_jobs_processed_total               counter   queue, state (succeeded, failed,
                                                   retry, lost; written outcomes)
pgqml_job_duration_seconds               histogram method
pgqml_workers_active                     gauge     server (attempts running now)
pgqml_queue_depth                        gauge     queue (ready and due jobs)
pgqml_queue_oldest_ready_age_seconds     gauge     queue
======================================== ========= ===================================

Queue depth and age are read from the database by each server every
``stats_interval`` for its queues, with index probes only (no ``count(*)``
over the table: ready jobs are counted exactly up to 10,000, estimated above).

Under ``pgqml worker --processes N`` the children record into
prometheus-client's multiprocess directory and the supervisor serves the
aggregate.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from pgqml import errors

__all__ = ["DURATION_BUCKETS", "Metrics", "MetricsServer", "get", "record_enqueued"]

#: Histogram buckets of pgqml_job_duration_seconds (qml-rs's, plus 1 ms).
DURATION_BUCKETS = (
    0.001,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
)


class Metrics:
    """The pgqml metric objects (prometheus-client instruments)."""

    def __init__(self) -> None:
        from prometheus_client import Counter, Gauge, Histogram

        self.enqueued = Counter(
            "pgqml_jobs_enqueued_total",
            "Jobs enqueued through pgqml's Python API by this process.",
            ["queue"],
        )
        self.processed = Counter(
            "pgqml_jobs_processed_total",
            "Attempts whose outcome was written: succeeded, failed, retry; lost = the "
            "server lost the lease and wrote nothing.",
            ["queue", "state"],
        )
        self.duration = Histogram(
            "pgqml_job_duration_seconds",
            "Time to run one attempt, middleware included.",
            ["method"],
            buckets=DURATION_BUCKETS,
        )
        self.active = Gauge(
            "pgqml_workers_active",
            "Attempts running now.",
            ["server"],
            multiprocess_mode="livesum",
        )
        self.depth = Gauge(
            "pgqml_queue_depth",
            "Jobs ready to run (enqueued, or scheduled/retrying and due) per queue.",
            ["queue"],
            multiprocess_mode="mostrecent",
        )
        self.oldest_age = Gauge(
            "pgqml_queue_oldest_ready_age_seconds",
            "How long the oldest ready job of the queue has been waiting.",
            ["queue"],
            multiprocess_mode="mostrecent",
        )


_metrics: Metrics | None = None
_unavailable = False
_lock = threading.Lock()


def get() -> Metrics | None:
    """The process's :class:`Metrics`, or ``None`` without prometheus-client."""
    global _metrics, _unavailable
    if _metrics is not None or _unavailable:
        return _metrics
    with _lock:
        if _metrics is None and not _unavailable:
            try:
                _metrics = Metrics()
            except ImportError:
                _unavailable = True
    return _metrics


def record_enqueued(queue: str, count: int = 1) -> None:
    """Count jobs enqueued by this process (called by :mod:`pgqml.client`)."""
    m = _metrics if _metrics is not None else get()
    if m is not None:
        m.enqueued.labels(queue).inc(count)


def require() -> Metrics:
    m = get()
    if m is None:
        raise errors.ConfigurationError(
            "Metrics need prometheus-client: pip install 'pgqml[metrics]'"
        )
    return m


class MetricsServer:
    """Serves ``/metrics`` (Prometheus text) and ``/health`` from a daemon thread.

    ``health()`` returns ``(healthy, details)``; ``/health`` answers 200 or
    503 with the details as JSON, for container probes.
    """

    def __init__(
        self,
        host: str,
        port: int,
        health: Callable[[], tuple[bool, dict[str, Any]]],
        *,
        multiprocess_dir: str | None = None,
    ) -> None:
        require()
        from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

        if multiprocess_dir is not None:
            from prometheus_client import CollectorRegistry, multiprocess

            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry, path=multiprocess_dir)  # type: ignore[no-untyped-call]
        else:
            registry = REGISTRY

        class _Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    body = generate_latest(registry)
                    self._reply(200, CONTENT_TYPE_LATEST, body)
                elif path in ("/health", "/healthz"):
                    try:
                        ok, details = health()
                    except Exception as exc:
                        ok, details = False, {"error": str(exc)}
                    body = json.dumps({"healthy": ok, **details}, default=str).encode()
                    self._reply(200 if ok else 503, "application/json", body)
                else:
                    self._reply(404, "text/plain", b"not found: try /metrics or /health\n")

            def _reply(self, status: int, ctype: str, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        try:
            self._httpd = ThreadingHTTPServer((host, port), _Handler)
        except OSError as exc:
            raise errors.ConfigurationError(
                f"Cannot serve metrics on {host}:{port}: {exc}. Pick another --metrics-port."
            ) from exc
        self._httpd.daemon_threads = True
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, name="pgqml-metrics", daemon=True
        )

    def start(self) -> MetricsServer:
        self._thread.start()
        return self

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


def multiprocess_dir() -> str | None:
    """prometheus-client's multiprocess directory, when this process records into one."""
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None
