"""Versioned, forward-only schema migrations.

Migrations are ``sql/migrations/NNNN_name.sql``. :func:`migrate` takes a
transaction-scoped advisory lock, creates the ``pgqml`` schema and the
``pgqml.migrations`` bookkeeping table if needed, and applies every pending
file in order in that one transaction, so concurrent migrators serialise and
a failure leaves the database as it was. Applied files are checksummed: a
changed file is an error, not a silent no-op.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import psycopg

from pgqml import _queries, errors

__all__ = [
    "MigrateResult",
    "MigrationStatus",
    "latest_version",
    "migrate",
    "migration_status",
    "pending_sql",
    "require_current",
    "require_current_async",
]


@dataclass(frozen=True)
class MigrationStatus:
    """Where a database stands against this version of pgqml."""

    current: int
    latest: int
    pending: list[tuple[int, str]] = field(default_factory=list)

    @property
    def up_to_date(self) -> bool:
        return self.current == self.latest

    @property
    def behind(self) -> bool:
        return self.current < self.latest

    @property
    def ahead(self) -> bool:
        return self.current > self.latest


@dataclass(frozen=True)
class MigrateResult:
    """What :func:`migrate` did."""

    applied: list[tuple[int, str]]
    version: int


def _checksum(sql: str) -> str:
    return hashlib.sha256(sql.encode("utf-8")).hexdigest()


def latest_version() -> int:
    """The newest migration this version of pgqml knows."""
    files = _queries.migration_files()
    return files[-1][0] if files else 0


def _applied(cur: psycopg.Cursor[Any]) -> list[tuple[int, str, str]]:
    if not cur.execute(_queries.get("schema_exists")).fetchone()[0]:  # type: ignore[index]
        return []
    return [(int(v), str(n), str(c)) for v, n, c in cur.execute(_queries.get("applied_migrations"))]


def _verify(applied: list[tuple[int, str, str]]) -> None:
    known = {v: (n, _checksum(sql)) for v, n, sql in _queries.migration_files()}
    latest = max(known, default=0)
    for version, name, checksum in applied:
        if version > latest:
            raise errors.SchemaTooNew(
                f"The database schema is at migration {max(v for v, _, _ in applied)}, newer "
                f"than this pgqml ({latest}): upgrade the pgqml package before using it "
                "with this database"
            )
        if known[version][1] != checksum:
            raise errors.MigrationError(
                f"Migration {version:04d}_{name} was applied from a different file than the one "
                "shipped with this pgqml (checksum mismatch); migrations are forward-only and "
                "must never be edited once released"
            )


def _status(applied: list[tuple[int, str, str]]) -> MigrationStatus:
    done = {v for v, _, _ in applied}
    files = _queries.migration_files()
    return MigrationStatus(
        current=max(done, default=0),
        latest=latest_version(),
        pending=[(v, n) for v, n, _ in files if v not in done],
    )


def migration_status(conn: psycopg.Connection[Any]) -> MigrationStatus:
    """Compare the database with the migrations shipped in this package."""
    with errors.wrap_errors(), conn.cursor() as cur:
        applied = _applied(cur)
    return _status(applied)


def pending_sql(conn: psycopg.Connection[Any]) -> list[tuple[int, str, str]]:
    """``(version, name, sql)`` of the migrations :func:`migrate` would run."""
    with errors.wrap_errors(), conn.cursor() as cur:
        applied = _applied(cur)
    _verify(applied)
    done = {v for v, _, _ in applied}
    return [(v, n, sql) for v, n, sql in _queries.migration_files() if v not in done]


def migrate(conn: psycopg.Connection[Any]) -> MigrateResult:
    """Install or upgrade the ``pgqml`` schema; safe to run twice or concurrently.

    Runs in a transaction of its own (a savepoint if ``conn`` is already in one).
    """
    applied_now: list[tuple[int, str]] = []
    with errors.wrap_errors(), conn.transaction(), conn.cursor() as cur:
        cur.execute(_queries.get("migration_lock"))
        cur.execute(_queries.get("create_bookkeeping"))
        applied = _applied(cur)
        _verify(applied)
        done = {v for v, _, _ in applied}
        for version, name, sql in _queries.migration_files():
            if version in done:
                continue
            cur.execute(sql.encode("utf-8"))
            cur.execute(
                _queries.get("record_migration"),
                {"version": version, "name": name, "checksum": _checksum(sql)},
            )
            applied_now.append((version, name))
    return MigrateResult(applied=applied_now, version=latest_version())


def _require(status: MigrationStatus) -> None:
    if status.current == 0:
        raise errors.SchemaNotInstalled()
    if status.behind:
        raise errors.SchemaOutdated(
            f"The pgqml schema is at migration {status.current}, this pgqml needs "
            f"{status.latest}: run `pgqml migrate`"
        )
    if status.ahead:
        raise errors.SchemaTooNew(
            f"The pgqml schema is at migration {status.current}, newer than this pgqml "
            f"({status.latest}): upgrade the pgqml package"
        )


def require_current(conn: psycopg.Connection[Any]) -> None:
    """Raise unless the schema matches this code exactly (for workers and tools)."""
    _require(migration_status(conn))


async def require_current_async(conn: psycopg.AsyncConnection[Any]) -> None:
    """Async twin of :func:`require_current`."""
    async with errors.wrap_errors_async(), conn.cursor() as cur:
        await cur.execute(_queries.get("schema_exists"))
        row = await cur.fetchone()
        applied: list[tuple[int, str, str]] = []
        if row is not None and row[0]:
            await cur.execute(_queries.get("applied_migrations"))
            applied = [(int(v), str(n), str(c)) for v, n, c in await cur.fetchall()]
    _require(_status(applied))
