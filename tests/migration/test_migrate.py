"""Migrations: idempotent, concurrent, checked, forward-only."""

from __future__ import annotations

import threading

import psycopg
import pytest

import pgqml
from pgqml import _queries, errors
from pgqml import migrations as m


def test_fresh_install_then_noop(empty_dsn):
    with psycopg.connect(empty_dsn) as conn:
        assert pgqml.migration_status(conn).current == 0
        first = pgqml.migrate(conn)
        assert first.applied == [(v, n) for v, n, _ in _queries.migration_files()]
        second = pgqml.migrate(conn)
        assert second.applied == []
        status = pgqml.migration_status(conn)
        assert status.up_to_date and status.current == m.latest_version()
        m.require_current(conn)


def test_concurrent_migrators(empty_dsn):
    barrier = threading.Barrier(8)
    results: list[object] = []

    def run() -> None:
        try:
            with psycopg.connect(empty_dsn) as conn:
                barrier.wait(10)
                results.append(pgqml.migrate(conn))
        except BaseException as exc:  # pragma: no cover - asserted below
            results.append(exc)

    threads = [threading.Thread(target=run) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert all(isinstance(r, m.MigrateResult) for r in results), results
    assert sum(bool(r.applied) for r in results) == 1  # type: ignore[attr-defined]
    with psycopg.connect(empty_dsn) as conn:
        assert conn.execute("SELECT count(*) FROM pgqml.migrations").fetchone()[0] == len(
            _queries.migration_files()
        )


def test_require_current_on_empty_database(empty_dsn):
    with psycopg.connect(empty_dsn) as conn, pytest.raises(errors.SchemaNotInstalled):
        m.require_current(conn)


def test_database_newer_than_code_is_refused(conn):
    conn.execute(
        "INSERT INTO pgqml.migrations (version, name, checksum) VALUES (9999, 'future', 'x')"
    )
    conn.commit()
    assert pgqml.migration_status(conn).ahead
    with pytest.raises(errors.SchemaTooNew, match="upgrade the pgqml package"):
        pgqml.migrate(conn)
    with pytest.raises(errors.SchemaTooNew):
        m.require_current(conn)


def test_edited_migration_is_detected(conn):
    conn.execute("UPDATE pgqml.migrations SET checksum = 'tampered' WHERE version = 1")
    conn.commit()
    with pytest.raises(errors.MigrationError, match="checksum mismatch"):
        pgqml.migrate(conn)


def test_failed_migration_leaves_database_unchanged(empty_dsn, monkeypatch):
    real = _queries.migration_files()
    broken = [*real, (len(real) + 1, "broken", "CREATE TABLE pgqml.x (); SELECT 1/0;")]
    monkeypatch.setattr(_queries, "migration_files", lambda: broken)
    with psycopg.connect(empty_dsn) as conn:
        with pytest.raises(errors.DatabaseError, match="division by zero"):
            pgqml.migrate(conn)
        assert conn.execute("SELECT to_regnamespace('pgqml')").fetchone()[0] is None


def test_every_named_query_prepares(conn):
    """Each statement in sql/queries parses and plans against the migrated schema."""
    for name in _queries.names():
        sql = _queries.get(name)
        if sql.lstrip().upper().startswith(("COPY", "CREATE")):
            continue
        # PREPARE checks syntax and every referenced object without running it
        body = sql.replace("%(", "$__").replace(")s", "")
        params = sorted({p.split()[0].rstrip(",)") for p in body.split("$__")[1:]})
        for i, p in enumerate(params, 1):
            body = body.replace(f"$__{p}", f"${i}")
        conn.execute(f"PREPARE q_{name} AS {body}")
        conn.execute(f"DEALLOCATE q_{name}")
