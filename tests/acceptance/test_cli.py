"""The installed `pgqml` command, run as a subprocess."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import psycopg
import pytest

PGQML = shutil.which("pgqml") or ""


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if k not in ("PGQML_DSN", "DATABASE_URL")}
    cmd = [PGQML] if PGQML else [sys.executable, "-m", "pgqml.cli"]
    return subprocess.run(
        [*cmd, *args], env={**base, **(env or {})}, capture_output=True, text=True, timeout=120
    )


def test_help_explains_commands():
    out = run("--help")
    assert out.returncode == 0 and "migrate" in out.stdout
    out = run("migrate", "--help")
    assert out.returncode == 0
    for word in ("--dsn", "PGQML_DSN", "DATABASE_URL", "--check", "--show-sql"):
        assert word in out.stdout


def test_migrate_check_show_sql_cycle(empty_dsn):
    out = run("migrate", "--check", "--dsn", empty_dsn)
    assert out.returncode == 1 and "pending: 0001_initial" in out.stderr
    out = run("migrate", "--show-sql", "--dsn", empty_dsn)
    assert out.returncode == 0 and "CREATE TABLE pgqml.jobs" in out.stdout
    with psycopg.connect(empty_dsn) as conn:  # --show-sql changed nothing
        assert conn.execute("SELECT to_regclass('pgqml.jobs')").fetchone()[0] is None
    out = run("migrate", "--dsn", empty_dsn)
    assert out.returncode == 0, out.stderr
    assert "applied 2 migration" in out.stdout
    assert "applied 0001_initial" in out.stderr  # progress log
    assert "applied 0002_worker" in out.stderr
    out = run("migrate", "--dsn", empty_dsn)
    assert out.returncode == 0 and "up to date" in out.stdout
    out = run("migrate", "--check", "--dsn", empty_dsn)
    assert out.returncode == 0 and "up to date" in out.stdout
    out = run("migrate", "--show-sql", "--dsn", empty_dsn)
    assert "nothing would run" in out.stdout


@pytest.mark.parametrize("var", ["PGQML_DSN", "DATABASE_URL"])
def test_dsn_from_environment(empty_dsn, var):
    out = run("migrate", env={var: empty_dsn})
    assert out.returncode == 0, out.stderr


def test_missing_dsn_says_what_to_do():
    out = run("migrate")
    assert out.returncode == 1
    assert "--dsn" in out.stderr and "PGQML_DSN" in out.stderr


def test_unreachable_database_says_what_to_check():
    out = run("migrate", "--dsn", "postgresql://nobody@127.0.0.1:1/nope?connect_timeout=2")
    assert out.returncode == 1
    assert "Cannot connect" in out.stderr and "Traceback" not in out.stderr


def test_sql_enqueue_after_cli_migrate(empty_dsn):
    assert run("migrate", "--dsn", empty_dsn).returncode == 0
    with psycopg.connect(empty_dsn) as conn:
        job_id = conn.execute(
            """SELECT pgqml.enqueue('send_email', '{"to": "a@b.c"}', queue => 'emails',
                                    priority => 5, run_at => now() + interval '1 hour',
                                    max_attempts => 3, unique_key => 'order-42')"""
        ).fetchone()[0]
        assert isinstance(job_id, int)
        row = conn.execute(
            "SELECT method, queue, priority, max_attempts, unique_key, state::text,"
            " run_at - now() FROM pgqml.jobs WHERE id = %s",
            (job_id,),
        ).fetchone()
    assert row[:6] == ("send_email", "emails", 5, 3, "order-42", "scheduled")


def test_two_migrate_processes_at_once(empty_dsn):
    cmd = [PGQML] if PGQML else [sys.executable, "-m", "pgqml.cli"]
    env = {k: v for k, v in os.environ.items() if k not in ("PGQML_DSN", "DATABASE_URL")}
    procs = [
        subprocess.Popen(
            [*cmd, "migrate", "--dsn", empty_dsn],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    outputs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0, 0], outputs
    assert sum("applied 2 migration" in out for out, _ in outputs) == 1
    with psycopg.connect(empty_dsn) as conn:
        assert conn.execute("SELECT count(*) FROM pgqml.migrations").fetchone()[0] == 2
