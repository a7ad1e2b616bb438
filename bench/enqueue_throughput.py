"""Enqueue throughput against a raw-INSERT baseline measured in the same run.

    python bench/enqueue_throughput.py --dsn postgresql://root@127.0.0.1/postgres

Creates a scratch database on the server, migrates it, and measures, in
interleaved rounds (this machine is shared and noisy; ratios within one run
are what count):

* ``raw_insert``: single-row INSERT transactions into a table with the same
  columns, constraints and indexes as ``pgqml.jobs`` but no trigger and no
  function, through the same psycopg client: the baseline;
* ``pgqml.enqueue``: ``pgqml.enqueue(conn, ...)``, one job per transaction;
* ``sql enqueue``: ``SELECT pgqml.enqueue(...)`` per call, one per transaction;
* ``enqueue_many``: ``pgqml.enqueue_many`` of 10,000 jobs (COPY path);
* ``enqueue_many unique``: the same with unique keys (SQL function path);
* ``raw COPY``: the floor for bulk: COPY of the same rows straight into the
  table, without pgqml's validation.

Also, when ``pgbench`` is on the PATH, pgbench's own single-row INSERT rate
(a C client) for reference. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

import pgqml

RAW_TABLE = """
CREATE TABLE bench_raw (LIKE pgqml.jobs INCLUDING DEFAULTS INCLUDING CONSTRAINTS);
ALTER TABLE bench_raw ALTER COLUMN id SET DEFAULT nextval('pgqml.job_id_seq');
ALTER TABLE bench_raw ADD PRIMARY KEY (id);
CREATE INDEX ON bench_raw (queue, priority DESC, run_at, id) WHERE state = 'enqueued';
CREATE INDEX ON bench_raw (queue, run_at) WHERE state IN ('scheduled', 'awaiting_retry');
CREATE INDEX ON bench_raw (lease_expires_at) WHERE state = 'processing';
CREATE UNIQUE INDEX ON bench_raw (unique_key) WHERE unique_key IS NOT NULL;
"""
RAW_INSERT = (
    "INSERT INTO bench_raw (method, queue, payload) VALUES (%s, %s, %s::jsonb) RETURNING id"
)
PAYLOAD = {"to": "user@example.com", "subject": "Welcome", "template": "welcome-v2", "n": 1}


def timed(fn: Callable[[], int]) -> float:
    """Run fn (which returns an operation count) and return ops/s."""
    t0 = time.perf_counter()
    n = fn()
    return n / (time.perf_counter() - t0)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--dsn", default=os.environ.get("PGQML_DSN", "postgresql://127.0.0.1/postgres"))
    ap.add_argument("--single", type=int, default=2000, help="jobs per single-enqueue round")
    ap.add_argument("--bulk", type=int, default=10_000, help="jobs per enqueue_many call")
    ap.add_argument("--rounds", type=int, default=5, help="interleaved rounds (median reported)")
    ap.add_argument("--quick", action="store_true", help="tiny sizes: a CI smoke run")
    args = ap.parse_args()
    if args.quick:
        args.single, args.bulk, args.rounds = 50, 500, 1

    dbname = f"pgqml_bench_{os.getpid()}"
    admin = psycopg.connect(args.dsn, autocommit=True)
    admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(dbname)))
    dsn = make_conninfo(args.dsn, dbname=dbname)
    try:
        with psycopg.connect(dsn) as c:
            pgqml.migrate(c)
            c.execute(RAW_TABLE)
            c.commit()
            settings = c.execute(
                "SELECT current_setting('server_version'), current_setting('synchronous_commit'),"
                " current_setting('fsync'), current_setting('shared_buffers')"
            ).fetchone()
        results = run(dsn, args)
        report(results, settings, args)
        ok = all(results.values())
    finally:
        admin.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(dbname))
        )
        admin.close()
    return 0 if ok else 1


def run(dsn: str, args: argparse.Namespace) -> dict[str, list[float]]:
    conn = psycopg.connect(dsn, autocommit=True)
    payload_text = psycopg.types.json.Jsonb(PAYLOAD)
    results: dict[str, list[float]] = {
        "raw_insert": [],
        "pgqml.enqueue": [],
        "sql enqueue": [],
        "enqueue_many": [],
        "enqueue_many unique": [],
        "raw COPY": [],
    }

    def reset() -> None:
        conn.execute("TRUNCATE pgqml.jobs, bench_raw")
        conn.execute("VACUUM ANALYZE pgqml.jobs")
        conn.execute("VACUUM ANALYZE bench_raw")

    def raw_insert() -> int:
        for _ in range(args.single):
            conn.execute(RAW_INSERT, ("send_email", "emails", payload_text)).fetchone()
        return args.single

    def py_enqueue() -> int:
        for _ in range(args.single):
            pgqml.enqueue(conn, "send_email", PAYLOAD, queue="emails")
        return args.single

    def sql_enqueue() -> int:
        for _ in range(args.single):
            conn.execute(
                "SELECT pgqml.enqueue(%s, %s::jsonb, queue => %s)",
                ("send_email", payload_text, "emails"),
            ).fetchone()
        return args.single

    bulk_jobs = [
        pgqml.JobSpec("send_email", {**PAYLOAD, "n": i}, queue="emails") for i in range(args.bulk)
    ]

    def many() -> int:
        with conn.transaction():
            ids = pgqml.enqueue_many(conn, bulk_jobs)
        assert len(ids) == args.bulk
        return args.bulk

    counter = [0]

    def many_unique() -> int:
        counter[0] += 1
        jobs = [
            pgqml.JobSpec(
                "send_email", {**PAYLOAD, "n": i}, queue="emails", unique_key=f"{counter[0]}-{i}"
            )
            for i in range(args.bulk)
        ]
        with conn.transaction():
            ids = pgqml.enqueue_many(conn, jobs)
        assert len(set(ids)) == args.bulk
        return args.bulk

    import orjson

    copy_rows = [
        ("send_email", "emails", orjson.dumps({**PAYLOAD, "n": i}).decode())
        for i in range(args.bulk)
    ]

    def raw_copy() -> int:
        with (
            conn.transaction(),
            conn.cursor().copy("COPY bench_raw (method, queue, payload) FROM STDIN") as copy,
        ):
            for row in copy_rows:
                copy.write_row(row)
        return args.bulk

    # warm up prepared statements and caches
    raw_insert(), py_enqueue(), sql_enqueue()
    scenarios = [
        ("raw_insert", raw_insert),
        ("pgqml.enqueue", py_enqueue),
        ("sql enqueue", sql_enqueue),
        ("raw COPY", raw_copy),
        ("enqueue_many", many),
        ("enqueue_many unique", many_unique),
    ]
    for r in range(args.rounds):
        for name, fn in scenarios:
            reset()
            results[name].append(timed(fn))
        print(f"round {r + 1}/{args.rounds} done", file=sys.stderr)
    conn.close()
    pgb = pgbench(dsn, args)
    if pgb:
        results["pgbench INSERT (C client)"] = pgb
    return results


def pgbench(dsn: str, args: argparse.Namespace) -> list[float]:
    exe = (
        shutil.which("pgbench")
        or next(
            (
                p
                for p in sorted(os.listdir("/usr/lib/postgresql"), reverse=True)
                if os.path.exists(f"/usr/lib/postgresql/{p}/bin/pgbench")
            ),
            None,
        )
        if os.path.isdir("/usr/lib/postgresql")
        else shutil.which("pgbench")
    )
    if exe and not exe.startswith("/"):
        exe = f"/usr/lib/postgresql/{exe}/bin/pgbench"
    if not exe:
        return []
    with tempfile.NamedTemporaryFile("w", suffix=".sql", delete=False) as f:
        f.write(
            "INSERT INTO bench_raw (method, queue, payload) VALUES "
            '(\'send_email\', \'emails\', \'{"to": "user@example.com", "subject": "Welcome", '
            '"template": "welcome-v2", "n": 1}\');\n'
        )
        script = f.name
    params = conninfo_to_dict(dsn)
    env = {
        **os.environ,
        "PGHOST": str(params.get("host", "")),
        "PGPORT": str(params.get("port", "5432")),
        "PGUSER": str(params.get("user", os.environ.get("USER", ""))),
        "PGDATABASE": str(params["dbname"]),
    }
    out = []
    for _ in range(max(1, min(args.rounds, 3))):
        proc = subprocess.run(
            [exe, "-n", "-c", "1", "-t", str(args.single), "-f", script, "-M", "prepared"],
            env=env,
            capture_output=True,
            text=True,
        )
        for line in proc.stdout.splitlines():
            if line.startswith("tps ="):
                out.append(float(line.split()[2]))
    os.unlink(script)
    return out


def report(results: dict[str, list[float]], settings: tuple, args: argparse.Namespace) -> None:
    base = statistics.median(results["raw_insert"])
    bulk_base = statistics.median(results["raw COPY"])
    print(
        f"\nPostgreSQL {settings[0]}, synchronous_commit={settings[1]}, fsync={settings[2]}, "
        f"shared_buffers={settings[3]}; pgqml impl={pgqml.__impl__}; "
        f"{args.rounds} rounds, single={args.single}, bulk={args.bulk}\n"
    )
    print("| scenario | jobs/s (median) | min–max | vs raw INSERT | vs raw COPY |")
    print("|---|---:|---:|---:|---:|")
    for name, values in results.items():
        if not values:
            continue
        med = statistics.median(values)
        print(
            f"| {name} | {med:,.0f} | {min(values):,.0f}–{max(values):,.0f} | "
            f"{med / base:.2f}× | {med / bulk_base:.2f}× |"
        )


if __name__ == "__main__":
    sys.exit(main())
