"""``pgqml worker`` as real subprocesses: throughput, latency, crashes, pauses, shutdown.

Each test starts ``pgqml worker --app worker_app:registry`` processes against a
database of its own. The tasks in ``worker_app.py`` record every execution in
a ``ledger`` table on a connection of their own, so the tests can tell which
process ran which attempt of which job, and when. Every wait polls the
database (or a worker's log file) against a deadline; the ``fleet`` fixture
kills whatever a test leaves running.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import psycopg
import pytest

import pgqml
from pgqml.cli import build_parser
from tests.acceptance import worker_app
from tests.support import waiting

HERE = Path(__file__).resolve().parent
PGQML = shutil.which("pgqml")
APP = "worker_app:registry"
# Short leases so that lost workers are noticed within seconds.
FAST_LEASES = ("--heartbeat-interval", "0.5", "--lease-duration", "2")

T = TypeVar("T")

LEDGER_DDL = """
CREATE TABLE ledger (
    job_id  bigint NOT NULL,
    attempt integer NOT NULL,
    pid     integer NOT NULL,
    event   text NOT NULL DEFAULT 'start',
    at      timestamptz NOT NULL DEFAULT clock_timestamp()
)
"""


# -- helpers -------------------------------------------------------------------------


def wait_for(predicate: Callable[[], T], timeout: float, what: str, **kw: Any) -> T:
    kw.setdefault("interval", 0.05)
    return waiting.wait_for(predicate, timeout, what, **kw)


def rows(conn: psycopg.Connection[Any], query: str, params: Any = None) -> list[tuple[Any, ...]]:
    return conn.execute(query, params).fetchall()


def one(conn: psycopg.Connection[Any], query: str, params: Any = None) -> Any:
    row = conn.execute(query, params).fetchone()
    assert row is not None
    return row[0]


def _proc_children(pid: int) -> list[int]:
    """Pids whose parent is ``pid`` (from /proc)."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        # pid (comm) state ppid ...; comm may hold spaces, so split after the last ')'
        fields = stat[stat.rindex(")") + 2 :].split()
        if int(fields[1]) == pid:
            out.append(int(entry))
    return out


def _alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"


class Worker:
    """One ``pgqml worker`` process, its output in a log file."""

    def __init__(self, name: str, args: list[str], env: dict[str, str], log_path: Path) -> None:
        self.name = name
        self.log_path = log_path
        self._log_file = open(log_path, "wb")  # noqa: SIM115 (closed by close())
        cmd = [PGQML] if PGQML else [sys.executable, "-m", "pgqml"]
        self.proc = subprocess.Popen(
            [*cmd, "worker", "--app", APP, *args],
            cwd=HERE,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
        )
        self.pid = self.proc.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def tail(self, lines: int = 40) -> str:
        text = self.log().splitlines()[-lines:]
        return f"--- {self.name} (pid {self.pid}, exit {self.proc.poll()}) log tail:\n" + "\n".join(
            text
        )

    def send(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def wait_started(self, count: int = 1, timeout: float = 30.0) -> None:
        """Until the log says ``count`` servers started (signal handlers are then set)."""

        def started() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"{self.name} exited early\n{self.tail()}")
            return self.log().count(" started: queues=") >= count

        wait_for(started, timeout, f"{self.name} to start", context=self.tail)

    def wait_exit(self, timeout: float) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"{self.name} did not exit within {timeout:g}s\n{self.tail()}"
            ) from None

    def kill(self) -> None:
        """SIGKILL this process and (if it is a supervisor) the children it started."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGSTOP)  # freeze it: no restarts while we look
            children = _proc_children(self.pid)
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)
            for child in children:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(child, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(10)

    def close(self) -> None:
        self.kill()
        self._log_file.close()


class Fleet:
    """Starts workers for one test and kills every one of them at teardown."""

    def __init__(self, dsn: str, tmp_path: Path) -> None:
        self.dsn = dsn
        self.tmp_path = tmp_path
        self.workers: list[Worker] = []
        env = {k: v for k, v in os.environ.items() if k not in ("PGQML_DSN", "DATABASE_URL")}
        env["PGQML_DSN"] = dsn
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(HERE), env.get("PYTHONPATH")]))
        self.env = env

    def start(self, *args: str, name: str | None = None) -> Worker:
        name = name or f"worker{len(self.workers)}"
        w = Worker(name, [*args], self.env, self.tmp_path / f"{name}.log")
        self.workers.append(w)
        return w

    def tails(self) -> str:
        return "\n".join(w.tail() for w in self.workers)

    def wait_for(self, predicate: Callable[[], T], timeout: float, what: str, **kw: Any) -> T:
        return wait_for(predicate, timeout, what, context=self.tails, **kw)

    def close(self) -> None:
        for w in self.workers:
            w.close()


@pytest.fixture
def fleet(dsn: str, tmp_path: Path) -> Iterator[Fleet]:
    f = Fleet(dsn, tmp_path)
    try:
        yield f
    finally:
        f.close()


@pytest.fixture
def db(autoconn: psycopg.Connection[Any]) -> psycopg.Connection[Any]:
    """The test database (autocommit) with the ledger table."""
    autoconn.execute(LEDGER_DDL)
    return autoconn


def enqueue_sql(
    db: psycopg.Connection[Any],
    method: str,
    payload: dict[str, Any] | None = None,
    queue: str = "default",
) -> int:
    return int(
        one(
            db,
            "SELECT pgqml.enqueue(%s, %s::jsonb, queue => %s)",
            (method, json.dumps(payload or {}), queue),
        )
    )


def history(db: psycopg.Connection[Any], ids: list[int]) -> dict[int, tuple[Any, ...]]:
    """id -> (state, attempt, lost_count, last_error, result, lease_owner) of finished jobs."""
    return {
        r[0]: r[1:]
        for r in rows(
            db,
            "SELECT id, state::text, attempt, lost_count, last_error, result, lease_owner"
            " FROM pgqml.job_history WHERE id = ANY(%s)",
            (ids,),
        )
    }


def live(db: psycopg.Connection[Any], ids: list[int]) -> dict[int, tuple[Any, ...]]:
    """id -> (state, attempt, lease_owner) of live jobs."""
    return {
        r[0]: r[1:]
        for r in rows(
            db,
            "SELECT id, state::text, attempt, lease_owner FROM pgqml.jobs WHERE id = ANY(%s)",
            (ids,),
        )
    }


def all_succeeded(db: psycopg.Connection[Any], ids: list[int]) -> bool:
    done = one(
        db,
        "SELECT count(*) FROM pgqml.job_history WHERE id = ANY(%s) AND state = 'succeeded'",
        (ids,),
    )
    return bool(done == len(ids))


def ledger(
    db: psycopg.Connection[Any], ids: list[int] | None = None, event: str | None = None
) -> list[tuple[int, int, int, str]]:
    """(job_id, attempt, pid, event) rows, optionally of some jobs / one event."""
    return [
        tuple(r)  # type: ignore[misc]
        for r in rows(
            db,
            "SELECT job_id, attempt, pid, event FROM ledger"
            " WHERE (%(ids)s::bigint[] IS NULL OR job_id = ANY(%(ids)s))"
            "   AND (%(event)s::text IS NULL OR event = %(event)s)"
            " ORDER BY at",
            {"ids": ids, "event": event},
        )
    ]


def owner_pid(lease_owner: str) -> int:
    """The pid in a server id (name:host:pid:token)."""
    return int(lease_owner.split(":")[-2])


def claimed_by(db: psycopg.Connection[Any], ids: list[int], w: Worker) -> set[int]:
    """Those of ``ids`` that ``w`` holds (processing, under its lease)."""
    return {
        i
        for i, (state, _, owner) in live(db, ids).items()
        if state == "processing" and owner_pid(owner) == w.pid
    }


def holds_all_and_runs(db: psycopg.Connection[Any], ids: list[int], w: Worker) -> bool:
    """``w`` has claimed every one of ``ids`` and its handlers have started at least one.

    (Only one, not all: see test_sync_handlers_run_concurrently.)
    """
    return claimed_by(db, ids, w) == set(ids) and any(
        r[2] == w.pid for r in ledger(db, ids, "start")
    )


def server_pids(db: psycopg.Connection[Any]) -> set[int]:
    return {r[0] for r in rows(db, "SELECT pid FROM pgqml.servers")}


# -- 1. help ----------------------------------------------------------------------------


def test_worker_help_explains_every_option() -> None:
    cmd = [PGQML] if PGQML else [sys.executable, "-m", "pgqml"]
    out = subprocess.run(
        [*cmd, "worker", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        env={k: v for k, v in os.environ.items() if k not in ("PGQML_DSN", "DATABASE_URL")},
    )
    assert out.returncode == 0, out.stderr
    text = out.stdout
    # The ones named in the docs, and whatever else the parser knows.
    expected = {
        "--app",
        "--dsn",
        "--queues",
        "--concurrency",
        "--processes",
        "--no-listen",
        "--polling-interval",
        "--lease-duration",
        "--heartbeat-interval",
        "--shutdown-timeout",
        "--job-timeout",
        "--metrics-port",
        "--log-level",
        "--summary-interval",
    }
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    worker_parser = sub.choices["worker"]
    for action in worker_parser._actions:
        longs = [o for o in action.option_strings if o.startswith("--")]
        if longs and longs[0] != "--help":
            expected.add(longs[0])
            assert action.help, f"{longs[0]} has no help text"
    missing = sorted(o for o in expected if o not in text)
    assert not missing, f"not in `pgqml worker --help`: {missing}\n{text}"
    flat = " ".join(text.split())
    assert "SIGTERM" in flat
    assert "--shutdown-timeout" in flat and "not charged" in flat
    assert "a second signal stops at once" in flat
    assert "PGQML_DSN" in flat


# -- 2. acceptance ------------------------------------------------------------------------


def test_worker_runs_jobs_enqueued_from_sql_and_python(
    fleet: Fleet, db: psycopg.Connection[Any], conn: psycopg.Connection[Any]
) -> None:
    before = [enqueue_sql(db, "record", {"n": 1})]  # waiting before the worker starts
    w = fleet.start(*FAST_LEASES)
    w.wait_started()
    ids = [*before, enqueue_sql(db, "record", {"n": 2}), enqueue_sql(db, "stamp")]
    # From Python, in the caller's transaction: nothing runs before the commit.
    ids.append(pgqml.enqueue(conn, "record", {"n": 3}))
    ids.append(worker_app.record.enqueue(conn, n=4))
    ids.append(worker_app.sleepy.enqueue(conn, seconds=0.1))
    ids.append(worker_app.record_async.enqueue(conn, n=5))
    ids += pgqml.enqueue_many(
        conn, [pgqml.JobSpec("record", {"n": 6}), {"method": "record", "payload": {"n": 7}}]
    )
    conn.commit()

    fleet.wait_for(lambda: all_succeeded(db, ids), 20, "every job to succeed")
    h = history(db, ids)
    assert {i: h[i][:3] for i in ids} == dict.fromkeys(ids, ("succeeded", 1, 0))
    results = [h[i][4] for i in ids]
    assert results == [1, 2, None, 3, 4, {"slept": 0.1, "pid": w.pid}, 5, 6, 7]
    starts = ledger(db, ids, "start")
    assert sorted(r[0] for r in starts) == sorted(ids)  # each ran exactly once
    assert {(r[1], r[2]) for r in starts} == {(1, w.pid)}
    assert one(db, "SELECT count(*) FROM pgqml.jobs") == 0

    w.send(signal.SIGTERM)
    assert w.wait_exit(15) == 0
    assert server_pids(db) == set()


# -- 3. latency ---------------------------------------------------------------------------


def _measure_latency(
    fleet: Fleet, db: psycopg.Connection[Any], dsn: str, n: int, *args: str
) -> list[float]:
    """Start a worker, let it idle, then time ``n`` sequential jobs: handler start minus commit."""
    w = fleet.start(*args, name=f"latency{len(fleet.workers)}")
    w.wait_started()
    warm = enqueue_sql(db, "stamp")  # opens the task's ledger connection
    fleet.wait_for(lambda: all_succeeded(db, [warm]), 10, "the warm-up job")
    time.sleep(1.2)  # deliberately idle for more than a second
    latencies = []
    with psycopg.connect(dsn) as enq:
        for _ in range(n):
            job_id = one(enq, "SELECT pgqml.enqueue('stamp', '{}'::jsonb)")
            committed_at = one(enq, "SELECT clock_timestamp()")  # right before the commit
            enq.commit()
            started_at = fleet.wait_for(
                lambda job_id=job_id: rows(
                    db, "SELECT at FROM ledger WHERE job_id = %s", (job_id,)
                ),
                10,
                f"job {job_id} to start",
                interval=0.01,
            )[0][0]
            latencies.append((started_at - committed_at).total_seconds())
            # a random gap, so pickups do not fall in step with a polling period
            time.sleep(random.uniform(0.05, 0.3))
    w.send(signal.SIGTERM)
    assert w.wait_exit(15) == 0
    return latencies


def test_listen_picks_up_new_jobs_fast_and_polling_within_its_interval(
    fleet: Fleet, db: psycopg.Connection[Any], dsn: str
) -> None:
    # A long polling interval: with LISTEN only the notification can explain a fast pickup.
    with_listen = _measure_latency(fleet, db, dsn, 20, "--polling-interval", "10")
    without = _measure_latency(fleet, db, dsn, 20, "--no-listen", "--polling-interval", "0.5")
    med_listen, med_poll = statistics.median(with_listen), statistics.median(without)

    def fmt(xs: list[float]) -> str:
        return " ".join(f"{x * 1000:.0f}" for x in xs)

    print(
        f"\nLISTEN   latency ms: median {med_listen * 1000:.1f}  max {max(with_listen) * 1000:.1f}"
        f"  [{fmt(with_listen)}]"
    )
    print(
        f"polling  latency ms: median {med_poll * 1000:.1f}  max {max(without) * 1000:.1f}"
        f"  [{fmt(without)}]"
    )
    assert med_listen < 0.2, with_listen
    assert max(without) < 1.5, without
    assert med_listen < med_poll / 2, (with_listen, without)


# -- 4. throughput, exactly once --------------------------------------------------------------


def test_four_workers_drain_ten_thousand_jobs_exactly_once(
    fleet: Fleet, db: psycopg.Connection[Any], conn: psycopg.Connection[Any]
) -> None:
    t0 = time.monotonic()
    n = 10_000
    workers = [fleet.start("--concurrency", "8", "--log-level", "WARNING") for _ in range(4)]
    pids = {w.pid for w in workers}
    fleet.wait_for(lambda: server_pids(db) == pids, 30, "4 workers to register")
    # Half sync handlers (threads), half async ones (the event loop).
    ids = pgqml.enqueue_many(
        conn, [pgqml.JobSpec(("record", "record_async")[i % 2], {"n": i}) for i in range(n)]
    )
    conn.commit()
    t_enq = time.monotonic()

    def drained() -> bool:
        for w in workers:
            if w.proc.poll() is not None:
                raise AssertionError(f"{w.name} died\n{w.tail()}")
        return bool(one(db, "SELECT count(*) FROM pgqml.job_history") == n)

    fleet.wait_for(drained, 100 - (t_enq - t0), f"{n} jobs to finish", interval=0.25)
    elapsed = time.monotonic() - t_enq
    assert one(db, "SELECT count(*) FROM pgqml.jobs") == 0
    states = dict(
        rows(db, "SELECT state::text || ':' || attempt, count(*) FROM pgqml.job_history GROUP BY 1")
    )
    assert states == {"succeeded:1": n}
    total, distinct, attempts, bad_results = rows(
        db,
        "SELECT count(*), count(DISTINCT job_id), array_agg(DISTINCT attempt),"
        " (SELECT count(*) FROM pgqml.job_history h"
        "  WHERE h.result <> (h.payload -> 'n')) FROM ledger",
    )[0]
    assert (total, distinct, attempts, bad_results) == (n, n, [1], 0)
    assert one(db, "SELECT count(*) FROM ledger WHERE job_id <> ALL(%s)", (ids,)) == 0
    per_pid = dict(rows(db, "SELECT pid, count(*) FROM ledger GROUP BY pid"))
    assert set(per_pid) <= pids
    print(
        f"\n{n} jobs in {elapsed:.1f}s ({n / elapsed:.0f}/s); per worker: "
        f"{sorted(per_pid.values(), reverse=True)}"
    )
    for w in workers:
        w.send(signal.SIGTERM)
    assert [w.wait_exit(20) for w in workers] == [0, 0, 0, 0], fleet.tails()
    assert server_pids(db) == set()


# -- 5. kill -9 ----------------------------------------------------------------------------


def test_jobs_of_a_killed_worker_are_rerun_by_another(
    fleet: Fleet, db: psycopg.Connection[Any]
) -> None:
    a = fleet.start(*FAST_LEASES, "--concurrency", "4", name="A")
    a.wait_started()
    ids = [enqueue_sql(db, "sleepy_once", {"seconds": 30}) for _ in range(4)]
    fleet.wait_for(lambda: holds_all_and_runs(db, ids, a), 15, "A to run the jobs")
    b = fleet.start(*FAST_LEASES, "--concurrency", "4", name="B")
    b.wait_started()
    assert claimed_by(db, ids, a) == set(ids)

    a.send(signal.SIGKILL)
    killed_at = time.monotonic()
    assert a.wait_exit(10) == -signal.SIGKILL
    fleet.wait_for(lambda: all_succeeded(db, ids), 15, "B to rerun A's jobs")
    took = time.monotonic() - killed_at
    print(f"\nA's jobs rerun and finished {took:.1f}s after kill -9 (lease 2s)")

    h = history(db, ids)
    for i in ids:
        state, attempt, lost, last_error, result, owner = h[i]
        assert (state, attempt, lost) == ("succeeded", 2, 1), h[i]
        assert "worker lost" in last_error
        assert result == {"attempt": 2, "pid": b.pid}
        assert owner_pid(owner) == b.pid
    starts = ledger(db, ids, "start")
    # Every job ran once more, on B; attempt 1 only ever ran on A.
    assert sorted(r[:3] for r in starts if r[1] == 2) == [(i, 2, b.pid) for i in sorted(ids)]
    first = [r[:3] for r in starts if r[1] == 1]
    assert first and {r[2] for r in first} == {a.pid} and len(first) == len(set(first))
    assert {r[1] for r in starts} == {1, 2}
    assert "rescued 4 job(s)" in b.log()
    b.send(signal.SIGTERM)
    assert b.wait_exit(15) == 0


# -- 6. SIGSTOP --------------------------------------------------------------------------


def test_paused_worker_cannot_overwrite_rescued_jobs(
    fleet: Fleet, db: psycopg.Connection[Any]
) -> None:
    a = fleet.start(*FAST_LEASES, "--concurrency", "3", name="A")
    a.wait_started()
    # 2 s: over by the time A is resumed, so A's handlers return at once and A tries
    # to report them while it learns (from its heartbeat) that it lost them.
    ids = [enqueue_sql(db, "sleepy_once", {"seconds": 2}) for _ in range(3)]
    fleet.wait_for(lambda: holds_all_and_runs(db, ids, a), 15, "A to run the jobs")
    a.send(signal.SIGSTOP)
    try:
        assert claimed_by(db, ids, a) == set(ids)
        b = fleet.start(*FAST_LEASES, "--concurrency", "3", name="B")
        b.wait_started()
        fleet.wait_for(lambda: all_succeeded(db, ids), 20, "B to rescue and finish A's jobs")
        snapshot_query = (
            "SELECT id, to_jsonb(h) FROM pgqml.job_history h WHERE id = ANY(%s) ORDER BY id"
        )
        before = rows(db, snapshot_query, (ids,))
        for _, row in before:
            assert (row["state"], row["attempt"], row["lost_count"]) == ("succeeded", 2, 1)
            assert row["result"] == {"attempt": 2, "pid": b.pid}
    finally:
        a.send(signal.SIGCONT)

    # A's handlers finish (each logs an 'end' or 'cancelled' row) and A tries to report them.
    def a_finished() -> bool:
        mine = [r for r in ledger(db, ids) if r[2] == a.pid]
        return {r[0] for r in mine if r[3] != "start"} == set(ids)

    fleet.wait_for(a_finished, 15, "A's handlers to finish")

    def a_noticed() -> bool:
        lines = [
            line
            for line in a.log().splitlines()
            if "not written" in line or "stopping work" in line
        ]
        return all(any(f" {i} (attempt 1)" in line for line in lines) for i in ids)

    fleet.wait_for(a_noticed, 15, "A to notice that its leases were lost (naming each job)")
    assert a.proc.poll() is None, a.tail()
    # Nothing A did changed the jobs.
    assert rows(db, snapshot_query, (ids,)) == before
    assert live(db, ids) == {}
    assert one(db, "SELECT count(*) FROM pgqml.all_jobs WHERE id = ANY(%s)", (ids,)) == 3
    print(
        "\n"
        + "\n".join(
            line
            for line in a.log().splitlines()
            if "not written" in line or "stopping work" in line
        )
    )

    # A keeps working: with B gone, a new job is A's.
    b.send(signal.SIGTERM)
    assert b.wait_exit(15) == 0
    job = enqueue_sql(db, "record", {"n": 9})
    fleet.wait_for(lambda: all_succeeded(db, [job]), 15, "A to run a new job")
    assert [r[2] for r in ledger(db, [job])] == [a.pid]
    assert server_pids(db) == {a.pid}
    a.send(signal.SIGTERM)
    assert a.wait_exit(15) == 0, a.tail()
    assert server_pids(db) == set()


# -- 7. SIGTERM ---------------------------------------------------------------------------


def test_sigterm_lets_running_jobs_finish_and_leaves_the_rest(
    fleet: Fleet, db: psycopg.Connection[Any]
) -> None:
    w = fleet.start("--concurrency", "2", "--shutdown-timeout", "10")
    w.wait_started()
    ids = [enqueue_sql(db, "sleepy", {"seconds": 1}) for _ in range(6)]

    def two_running() -> set[int]:
        held = claimed_by(db, ids, w)
        return held if len(held) == 2 and ledger(db, ids, "start") else set()

    running = fleet.wait_for(two_running, 15, "two jobs to start")
    sent = time.monotonic()
    w.send(signal.SIGTERM)
    assert w.wait_exit(10 + 5) == 0, w.tail()
    took = time.monotonic() - sent
    started = {r[0] for r in ledger(db, ids, "start")}
    assert started == running
    finished = {i: v[:2] for i, v in history(db, sorted(started)).items()}
    assert finished == dict.fromkeys(started, ("succeeded", 1))
    assert {r[0] for r in ledger(db, ids, "end")} == started  # ran to the end
    rest = [i for i in ids if i not in started]
    assert live(db, rest) == dict.fromkeys(rest, ("enqueued", 0, None))
    assert took < 2 + 5, took
    assert server_pids(db) == set()


def test_sigterm_gives_unfinished_jobs_back_after_shutdown_timeout(
    fleet: Fleet, db: psycopg.Connection[Any]
) -> None:
    w = fleet.start("--concurrency", "3", "--shutdown-timeout", "1")
    w.wait_started()
    ids = [enqueue_sql(db, "sleepy", {"seconds": 30}) for _ in range(3)]
    fleet.wait_for(lambda: holds_all_and_runs(db, ids, w), 15, "the jobs to start")
    sent = time.monotonic()
    w.send(signal.SIGTERM)
    assert w.wait_exit(1 + 10) == 0, w.tail()
    took = time.monotonic() - sent
    assert 0.9 < took < 1 + 5, took
    assert live(db, ids) == dict.fromkeys(ids, ("enqueued", 0, None))  # attempt not charged
    assert "released 3 unfinished job(s)" in w.log()
    assert server_pids(db) == set()


def test_second_sigterm_stops_at_once_and_still_gives_jobs_back(
    fleet: Fleet, db: psycopg.Connection[Any]
) -> None:
    w = fleet.start("--concurrency", "3", "--shutdown-timeout", "60")
    w.wait_started()
    ids = [enqueue_sql(db, "sleepy", {"seconds": 30}) for _ in range(3)]
    fleet.wait_for(lambda: holds_all_and_runs(db, ids, w), 15, "the jobs to start")
    sent = time.monotonic()
    w.send(signal.SIGTERM)
    fleet.wait_for(lambda: "waiting up to 60s" in w.log(), 10, "the graceful stop to begin")
    w.send(signal.SIGTERM)
    assert w.wait_exit(15) == 0, w.tail()
    took = time.monotonic() - sent
    assert took < 5, took
    assert live(db, ids) == dict.fromkeys(ids, ("enqueued", 0, None))
    assert "received SIGTERM again" in w.log()
    assert server_pids(db) == set()


def test_sync_handlers_run_concurrently(fleet: Fleet, db: psycopg.Connection[Any]) -> None:
    """--concurrency 4 and 4 sync jobs: all four handlers run at the same time."""
    w = fleet.start("--concurrency", "4", "--shutdown-timeout", "0")
    w.wait_started()
    # One transaction: one notification, and the worker claims all four at once.
    ids = [
        r[0]
        for r in rows(
            db,
            "SELECT pgqml.enqueue('sleepy', '{\"seconds\": 3}'::jsonb) FROM generate_series(1, 4)",
        )
    ]
    fleet.wait_for(lambda: claimed_by(db, ids, w) == set(ids), 10, "the jobs to be claimed")
    fleet.wait_for(
        lambda: {r[0] for r in ledger(db, ids, "start")} == set(ids),
        2,
        "all 4 claimed sync handlers to be running at once",
    )


# -- 8. --processes ------------------------------------------------------------------------


def test_supervisor_restarts_a_killed_child_and_stops_cleanly(
    fleet: Fleet, db: psycopg.Connection[Any]
) -> None:
    sup = fleet.start(*FAST_LEASES, "--processes", "2", "--concurrency", "4", name="supervisor")
    sup.wait_started(count=2)
    first = fleet.wait_for(
        lambda: len(server_pids(db)) == 2 and server_pids(db), 15, "2 children to register"
    )
    assert first == set(_proc_children(sup.pid))
    ids = [enqueue_sql(db, "record", {"n": i}) for i in range(10)]
    fleet.wait_for(lambda: all_succeeded(db, ids), 15, "the first jobs")

    victim = min(first)
    os.kill(victim, signal.SIGKILL)
    fleet.wait_for(lambda: not _alive(victim), 10, "the child to die")
    survivor = (first - {victim}).pop()
    new = fleet.wait_for(
        lambda: (server_pids(db) - first) or None, 20, "a replacement child to register"
    ).pop()
    sup.wait_started(count=3)  # the replacement's signal handlers are set
    assert set(_proc_children(sup.pid)) == {survivor, new}
    assert f"died with signal {signal.SIGKILL.value}" in sup.log()

    more = [enqueue_sql(db, "sleepy", {"seconds": 0.3}) for _ in range(16)]
    fleet.wait_for(lambda: all_succeeded(db, more), 20, "jobs after the restart")
    ran_on = {r[2] for r in ledger(db, more, "start")}
    assert ran_on <= {survivor, new}

    sup.send(signal.SIGTERM)
    assert sup.wait_exit(20) == 0, sup.tail()
    assert not _alive(survivor) and not _alive(new)
    # The children that stopped deregistered. The SIGKILLed one could not: its row may stay
    # until pruned (dead_server_timeout, 60 s), which is harmless (rescue goes by lease).
    assert server_pids(db) <= {victim}


# -- 9. unknown methods ---------------------------------------------------------------------


def test_jobs_of_unknown_methods_stay_enqueued(fleet: Fleet, db: psycopg.Connection[Any]) -> None:
    unknown = enqueue_sql(db, "not_registered_here", {"x": 1})
    known = enqueue_sql(db, "record", {"n": 1})
    w = fleet.start()
    w.wait_started()
    fleet.wait_for(lambda: all_succeeded(db, [known]), 15, "the known job")
    # A few more claim rounds (woken by NOTIFY) that could have taken it, too.
    later = [enqueue_sql(db, "record", {"n": i}) for i in range(3)]
    fleet.wait_for(lambda: all_succeeded(db, later), 15, "later known jobs")
    assert live(db, [unknown]) == {unknown: ("enqueued", 0, None)}
    assert ledger(db, [unknown]) == []
    w.send(signal.SIGTERM)
    assert w.wait_exit(15) == 0
    assert live(db, [unknown]) == {unknown: ("enqueued", 0, None)}
