"""The ``pgqml`` command."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
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
