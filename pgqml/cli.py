"""The ``pgqml`` command."""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Sequence
from typing import Any

import psycopg

from pgqml import errors
from pgqml import migrations as _migrate

__all__ = ["main", "resolve_dsn"]

log = logging.getLogger("pgqml.cli")

_DSN_HELP = (
    "PostgreSQL connection string, e.g. postgresql://user@host:5432/app "
    "(default: $PGQML_DSN, then $DATABASE_URL)"
)


def resolve_dsn(explicit: str | None) -> str:
    """``--dsn``, else ``PGQML_DSN``, else ``DATABASE_URL``."""
    dsn = explicit or os.environ.get("PGQML_DSN") or os.environ.get("DATABASE_URL")
    if not dsn:
        raise errors.ConfigurationError(
            "No database given: pass --dsn postgresql://user@host/db, or set PGQML_DSN "
            "(or DATABASE_URL)"
        )
    return dsn


def _connect(dsn: str) -> psycopg.Connection[tuple[object, ...]]:
    try:
        return psycopg.connect(dsn, autocommit=True, application_name="pgqml-cli")
    except psycopg.OperationalError as exc:
        raise errors.ConfigurationError(
            f"Cannot connect to the database: {str(exc).strip()}. Check the DSN, that the "
            "server is running, and that the role may log in."
        ) from exc


def _cmd_migrate(args: argparse.Namespace) -> int:
    with _connect(resolve_dsn(args.dsn)) as conn:
        if args.show_sql:
            pending = _migrate.pending_sql(conn)
            if not pending:
                print("-- pgqml: the schema is up to date; nothing would run")
            for version, name, sql in pending:
                print(f"-- pgqml migration {version:04d}_{name}\n{sql.rstrip()}\n")
            return 0
        if args.check:
            status = _migrate.migration_status(conn)
            if status.ahead:
                print(
                    f"pgqml: the schema is at migration {status.current}, newer than this "
                    f"pgqml ({status.latest}); upgrade the pgqml package",
                    file=sys.stderr,
                )
                return 2
            if status.behind:
                names = ", ".join(f"{v:04d}_{n}" for v, n in status.pending)
                print(
                    f"pgqml: the schema is at migration {status.current} of {status.latest}; "
                    f"pending: {names}. Run `pgqml migrate` to apply.",
                    file=sys.stderr,
                )
                return 1
            print(f"pgqml: the schema is up to date (migration {status.current})")
            return 0
        log.info("migrating %s", conn.info.dbname)
        result = _migrate.migrate(conn)
        for version, name in result.applied:
            log.info("applied %04d_%s", version, name)
        if result.applied:
            print(f"pgqml: applied {len(result.applied)} migration(s); schema at {result.version}")
        else:
            print(f"pgqml: the schema is up to date (migration {result.version})")
        return 0


def _load_app(spec: str) -> Any:
    """``module:attribute`` (or just ``module``, which must hold one WorkerRegistry)."""
    from pgqml.worker import WorkerRegistry

    module_name, _, attr = spec.partition(":")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise errors.ConfigurationError(
            f"Cannot import {module_name!r} for --app {spec!r}: {exc}. Run pgqml from the "
            "directory that contains it, or add that directory to PYTHONPATH."
        ) from exc
    if attr:
        obj: Any = module
        for part in attr.split("."):
            try:
                obj = getattr(obj, part)
            except AttributeError:
                raise errors.ConfigurationError(
                    f"{module_name!r} has no attribute {attr!r} (from --app {spec!r})"
                ) from None
        if callable(obj) and not isinstance(obj, WorkerRegistry):
            obj = obj()  # a factory
    else:
        found = [v for v in vars(module).values() if isinstance(v, WorkerRegistry)]
        if len(found) != 1:
            raise errors.ConfigurationError(
                f"--app {spec!r}: {module_name!r} holds {len(found)} WorkerRegistry objects; "
                "name one: --app module:attribute"
            )
        obj = found[0]
    if not isinstance(obj, WorkerRegistry):
        raise errors.ConfigurationError(
            f"--app {spec!r} is a {type(obj).__name__}, not a pgqml.WorkerRegistry"
        )
    return obj


def _positive(kind: type[float] | type[int]) -> Any:
    def parse(text: str) -> float | int:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not value > 0:
            raise argparse.ArgumentTypeError(f"{text!r} must be positive")
        return value

    return parse


def _cmd_worker(args: argparse.Namespace) -> int:
    from pgqml.worker import BackgroundJobServer, ServerConfig

    dsn = resolve_dsn(args.dsn)
    registry = _load_app(args.app)
    queues = None
    if args.queues and args.queues.strip() not in ("*", ""):
        queues = [q.strip() for q in args.queues.split(",") if q.strip()]
    config = ServerConfig(
        server_name=args.name,
        concurrency=args.concurrency,
        queues=queues,
        polling_interval=args.polling_interval,
        listen=not args.no_listen,
        job_timeout=None if args.job_timeout == 0 else args.job_timeout,
        fetch_batch_size=args.fetch_batch_size,
        shutdown_timeout=args.shutdown_timeout,
        lease_duration=args.lease_duration,
        heartbeat_interval=args.heartbeat_interval,
        rescue_interval=args.heartbeat_interval,
        summary_interval=args.summary_interval,
        metrics=args.metrics_port is not None or bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR")),
    )
    if args.processes > 1:
        from pgqml.worker.supervisor import Supervisor

        child_args = _child_argv(args.argv)
        return Supervisor(
            child_args,
            args.processes,
            dsn=dsn,
            heartbeat_interval=config.heartbeat_interval,
            metrics_host=args.metrics_host,
            metrics_port=args.metrics_port,
        ).run()
    if args.metrics_port is not None:
        from pgqml import metrics

        metrics.require()
    server = BackgroundJobServer(config, dsn, registry)
    metrics_server = None
    if args.metrics_port is not None:
        from pgqml import metrics

        metrics_server = metrics.MetricsServer(
            args.metrics_host, args.metrics_port, server.health
        ).start()
        log.info("serving /metrics and /health on %s:%d", args.metrics_host, metrics_server.port)
    try:
        server.run()
    finally:
        if metrics_server is not None:
            metrics_server.close()
    return 0


def _child_argv(argv: Sequence[str]) -> list[str]:
    """The supervisor's command line minus --processes and --metrics-*, for a child."""
    out: list[str] = []
    skip = False
    for a in argv:
        if skip:
            skip = False
            continue
        name = a.split("=", 1)[0]
        if name in ("--processes", "--metrics-port", "--metrics-host"):
            skip = "=" not in a
            continue
        out.append(a)
    return [*out, "--processes", "1"]


def build_parser() -> argparse.ArgumentParser:
    from pgqml import __version__

    parser = argparse.ArgumentParser(
        prog="pgqml",
        description="pgqml: a PostgreSQL-native background job queue.",
    )
    parser.add_argument("--version", action="version", version=f"pgqml {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug details to stderr")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    mig = sub.add_parser(
        "migrate",
        help="install or upgrade the pgqml schema",
        description=(
            "Install or upgrade the pgqml schema in the database. Safe to run again and "
            "from several processes at once: migrators take an advisory lock and apply "
            "pending migrations in one transaction."
        ),
    )
    mig.add_argument("--dsn", help=_DSN_HELP)
    mode = mig.add_mutually_exclusive_group()
    mode.add_argument(
        "--check",
        action="store_true",
        help="change nothing; exit 0 if up to date, 1 if migrations are pending, "
        "2 if the database is newer than this pgqml",
    )
    mode.add_argument(
        "--show-sql", action="store_true", help="print the SQL that would run, change nothing"
    )
    mig.set_defaults(func=_cmd_migrate)

    wk = sub.add_parser(
        "worker",
        help="run jobs: claim, execute, retry; until SIGTERM/SIGINT",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "Run a pgqml worker: claim jobs of the registered methods from the database,\n"
            "run them (async handlers on the event loop, sync ones in threads), retry\n"
            "failures with backoff, hold leases so a crashed worker's jobs are rescued.\n"
            "\n"
            "Stops on SIGTERM or SIGINT: the first stops claiming, lets running jobs\n"
            "finish within --shutdown-timeout, gives the rest back to the queue (attempt\n"
            "not charged), writes pending outcomes and exits 0; a second signal stops at\n"
            "once (jobs are still given back)."
        ),
        epilog=(
            "example:\n"
            "  pgqml worker --app tasks:registry --queues emails,default --concurrency 20\n"
            "\n"
            "Logs one INFO line per state change of each job and a throughput summary\n"
            "every --summary-interval seconds; use --log-level WARNING at high rates."
        ),
    )
    wk.add_argument(
        "--app",
        required=True,
        metavar="MODULE:ATTR",
        help="the pgqml.WorkerRegistry holding your tasks, e.g. tasks:registry (imported "
        "from the current directory or PYTHONPATH; ATTR may be a factory function)",
    )
    wk.add_argument("--dsn", help=_DSN_HELP)
    wk.add_argument(
        "--queues",
        default="*",
        metavar="Q1,Q2",
        help="comma-separated queues to take jobs from (default: every queue); only jobs "
        "whose method is registered are ever claimed",
    )
    wk.add_argument(
        "--concurrency",
        type=_positive(int),
        default=10,
        help="jobs run at once by each process (default: 10)",
    )
    wk.add_argument(
        "--processes",
        type=_positive(int),
        default=1,
        help="worker processes under one supervisor, for CPU-bound handlers; a child that "
        "dies is restarted (default: 1, no supervisor)",
    )
    wk.add_argument(
        "--name",
        default="pgqml",
        help="server name in logs, metrics and the pgqml.servers registry (default: pgqml)",
    )
    wk.add_argument(
        "--polling-interval",
        type=_positive(float),
        default=1.0,
        metavar="SECONDS",
        help="poll for due jobs this often even without notifications; the only wakeup "
        "with --no-listen (default: 1.0)",
    )
    wk.add_argument(
        "--no-listen",
        action="store_true",
        help="do not LISTEN for new jobs (for PgBouncer in transaction pooling mode); "
        "rely on --polling-interval",
    )
    wk.add_argument(
        "--fetch-batch-size",
        type=_positive(int),
        default=100,
        help="most jobs claimed by one statement, also capped by free concurrency (default: 100)",
    )
    wk.add_argument(
        "--job-timeout",
        type=float,
        default=300.0,
        metavar="SECONDS",
        help="default per-attempt time limit; a task's timeout= wins; 0 = none (default: 300)",
    )
    wk.add_argument(
        "--shutdown-timeout",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="on SIGTERM, how long running jobs may finish before they are given back "
        "(default: 30)",
    )
    wk.add_argument(
        "--lease-duration",
        type=_positive(float),
        default=30.0,
        metavar="SECONDS",
        help="a claim stays valid this long without renewal; a crashed worker's jobs run "
        "again after about this long (default: 30)",
    )
    wk.add_argument(
        "--heartbeat-interval",
        type=_positive(float),
        default=5.0,
        metavar="SECONDS",
        help="renew leases, heartbeat the server and rescue expired leases this often; at "
        "most half of --lease-duration (default: 5)",
    )
    wk.add_argument(
        "--metrics-port",
        type=int,
        metavar="PORT",
        help="serve Prometheus /metrics and a /health probe on this port (needs "
        "pip install 'pgqml[metrics]')",
    )
    wk.add_argument(
        "--metrics-host",
        default="0.0.0.0",
        help="address for --metrics-port (default: 0.0.0.0, for container probes)",
    )
    wk.add_argument(
        "--summary-interval",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="log a throughput summary this often; 0 = never (default: 60)",
    )
    wk.add_argument(
        "--log-level",
        default=None,
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="log level (default: INFO; -v means DEBUG)",
    )
    wk.set_defaults(func=_cmd_worker, argv=None)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    level = getattr(args, "log_level", None) or ("DEBUG" if args.verbose else "INFO")
    prefix = ""
    if os.environ.get("PGQML_WORKER_CHILD"):
        prefix = f"[{os.environ['PGQML_WORKER_CHILD']}] "
    logging.basicConfig(
        level=level,
        format=f"%(asctime)s {prefix}%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    args.argv = list(sys.argv[1:] if argv is None else argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args))
    except errors.PgqmlError as exc:
        print(f"pgqml: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
