"""Named SQL statements, loaded once from ``sql/queries/*.sql``.

A block starts with ``-- name: <name>``, followed by comment lines (its
purpose) and the statement. ``{job_columns}`` expands to the job row layout.
"""

from __future__ import annotations

import re
from functools import cache
from importlib import resources
from typing import TYPE_CHECKING

from pgqml.job import JOB_SELECT

if TYPE_CHECKING:
    from importlib.abc import Traversable

__all__ = ["get", "migration_files", "names", "sql_root"]

_NAME_RE = re.compile(r"^--\s*name:\s*([a-z_][a-z0-9_]*)\s*$", re.MULTILINE)


def sql_root() -> Traversable:
    """The ``sql/`` directory (installed as the ``pgqml.sql`` package data)."""
    return resources.files("pgqml.sql")


def _parse(text: str, source: str) -> dict[str, str]:
    parts = _NAME_RE.split(text)
    queries: dict[str, str] = {}
    for name, body in zip(parts[1::2], parts[2::2], strict=True):
        lines = [ln for ln in body.strip().splitlines() if not ln.lstrip().startswith("--")]
        sql = "\n".join(lines).strip().replace("{job_columns}", JOB_SELECT)
        if not sql:
            raise RuntimeError(f"query {name!r} in {source} is empty")
        if name in queries:
            raise RuntimeError(f"query {name!r} defined twice in {source}")
        queries[name] = sql
    return queries


@cache
def _all() -> dict[str, str]:
    queries: dict[str, str] = {}
    folder = sql_root() / "queries"
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".sql"):
            for name, sql in _parse(entry.read_text("utf-8"), entry.name).items():
                if name in queries:
                    raise RuntimeError(f"query {name!r} defined in two files")
                queries[name] = sql
    return queries


def get(name: str) -> str:
    """The SQL text of the named query."""
    return _all()[name]


def names() -> list[str]:
    """All query names."""
    return sorted(_all())


def migration_files() -> list[tuple[int, str, str]]:
    """``(version, name, sql)`` for every file in ``sql/migrations``, in order."""
    out: list[tuple[int, str, str]] = []
    for entry in (sql_root() / "migrations").iterdir():
        m = re.fullmatch(r"(\d{4})_([a-z0-9_]+)\.sql", entry.name)
        if m:
            out.append((int(m.group(1)), m.group(2), entry.read_text("utf-8")))
    out.sort()
    versions = [v for v, _, _ in out]
    if versions != list(range(1, len(versions) + 1)):
        raise RuntimeError(f"migration versions must be 1..N without gaps, got {versions}")
    return out
