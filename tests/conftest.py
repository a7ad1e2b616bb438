"""Fixtures: a real PostgreSQL, a migrated template database, a clone per test.

Each test that asks for ``dsn`` (or ``conn``) gets a database of its own,
cloned from a template migrated once per session; cloning is fast and keeps
LISTEN/NOTIFY channels of different tests apart.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator

import psycopg
import pytest
from psycopg import sql

import pgqml
from tests.support.pg import Server, find_server

_counter = itertools.count()


@pytest.fixture(scope="session")
def pg_server() -> Iterator[Server]:
    with find_server() as server:
        yield server


def _create_db(server: Server, name: str, template: str = "template0") -> None:
    with psycopg.connect(server.admin_dsn, autocommit=True) as conn:
        conn.execute(
            sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                sql.Identifier(name), sql.Identifier(template)
            )
        )


def _drop_db(server: Server, name: str) -> None:
    with psycopg.connect(server.admin_dsn, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


@pytest.fixture(scope="session")
def template_db(pg_server: Server) -> Iterator[str]:
    name = f"pgqml_tpl_{os.getpid()}"
    _drop_db(pg_server, name)
    _create_db(pg_server, name)
    with psycopg.connect(pg_server.dsn_for(name)) as conn:
        pgqml.migrate(conn)
    yield name
    _drop_db(pg_server, name)


@pytest.fixture
def empty_dsn(pg_server: Server) -> Iterator[str]:
    """A fresh database without the pgqml schema."""
    name = f"pgqml_t_{os.getpid()}_{next(_counter)}"
    _create_db(pg_server, name)
    yield pg_server.dsn_for(name)
    _drop_db(pg_server, name)


@pytest.fixture
def dsn(pg_server: Server, template_db: str) -> Iterator[str]:
    """A fresh, migrated database of this test's own."""
    name = f"pgqml_t_{os.getpid()}_{next(_counter)}"
    _create_db(pg_server, name, template=template_db)
    yield pg_server.dsn_for(name)
    _drop_db(pg_server, name)


@pytest.fixture
def conn(dsn: str) -> Iterator[psycopg.Connection[tuple[object, ...]]]:
    """A connection to this test's database (not autocommit)."""
    with psycopg.connect(dsn) as c:
        yield c


@pytest.fixture
def autoconn(dsn: str) -> Iterator[psycopg.Connection[tuple[object, ...]]]:
    """An autocommit connection to this test's database."""
    with psycopg.connect(dsn, autocommit=True) as c:
        yield c
