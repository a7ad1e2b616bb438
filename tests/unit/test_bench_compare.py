"""bench/compare.py's bookkeeping: verification by key, percentiles, and the report it writes.

The benchmark itself runs against real servers (a smoke run in CI); these tests
pin the parts that decide what gets published: a run with a lost or repeated
job must print FAILURE, never a number, and the ratios and target verdicts must
be computed from the medians they claim.
"""

from __future__ import annotations

import importlib
import subprocess
import sys
from collections.abc import Iterator
from importlib.metadata import requires
from pathlib import Path
from types import ModuleType

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"
PEERS = ("procrastinate", "pgqueuer", "asyncpg", "uvloop", "matplotlib")


@pytest.fixture(scope="module")
def compare() -> Iterator[ModuleType]:
    sys.path.insert(0, str(BENCH))
    try:
        yield importlib.import_module("compare")
    finally:
        sys.path.remove(str(BENCH))


def test_check_keys_accepts_exactly_once_and_ignores_warmup(compare: ModuleType) -> None:
    assert compare.check_keys([2, 0, 1, 10**9], range(3)) is None


def test_check_keys_reports_missing_and_repeated_jobs(compare: ModuleType) -> None:
    err = compare.check_keys([0, 1, 1, 3], range(4))
    assert err == "1 of 4 jobs never ran, 1 ran more than once"


def test_percentiles_are_nearest_rank(compare: ModuleType) -> None:
    values = [float(v) for v in range(1, 101)]
    assert compare.pct(values, 50) == 50
    assert compare.pct(values, 99) == 99
    assert compare.pct(values, 100) == 100
    assert compare.pct([7.0], 99) == 7.0


def _results(samples: dict[str, list[dict[str, object]]]) -> dict[str, object]:
    systems = ["pgqml", "pgqueuer", "procrastinate"]
    return {
        "command": "python bench/compare.py --dsn postgresql://root@127.0.0.1/postgres",
        "machine": {
            "date": "2026-11-25",
            "cpu": "Test CPU",
            "cores": 2,
            "ram": "24 GiB",
            "os": "Linux",
            "python": "3.11",
            "postgres": "15",
            "postgres_host": "127.0.0.1",
            "durability": {"fsync": "on"},
            "settings": [],
            "versions": {"pgqml": "0.1.0"},
            "loop": "asyncio",
            "raw_tool": "pgbench",
        },
        "args": {
            "systems": systems,
            "rounds": 3,
            "jobs": 20_000,
            "enqueue_jobs": 10_000,
            "latency_jobs": 1_000,
            "load_seconds": 10,
            "scale_history": 1_000_000,
            "scale_scheduled": 500_000,
        },
        "configs": {
            x: {"default": "d", "documented": None, "tuned": "t", "note": "n"} for x in systems
        },
        "samples": samples,
    }


def ok(*values: float) -> list[dict[str, object]]:
    return [{"value": v, "error": None} for v in values]


def lat(p50: float, p99: float) -> list[dict[str, object]]:
    v = {"p50": p50, "p95": p99, "p99": p99, "max": p99, "rate": 100.0}
    return [{"value": v, "error": None}] * 3


def test_report_uses_medians_and_states_verdicts(compare: ModuleType) -> None:
    samples = {
        "pgqml/drain/tuned/noop": ok(20_000, 30_000, 10_000),
        "pgqueuer/drain/tuned/noop": ok(5_000, 4_000, 6_000),
        "procrastinate/drain/tuned/noop": ok(500, 400, 600),
        "pgqml/enqueue_bulk": ok(40_000, 40_000, 40_000),
        "pgqueuer/enqueue_bulk": ok(20_000, 20_000, 20_000),
        "pgqml/latency/idle": lat(2.0, 4.0),
        "pgqueuer/latency/idle": lat(5.0, 3.0),
        "procrastinate/latency/idle": lat(4.0, 9.0),
    }
    text = compare.report(_results(samples))
    assert "| drain, tuned, no-op | 20,000 (10,000–30,000) | 5,000 (4,000–6,000) |" in text
    assert "| 4.00× | 40.00× |" in text  # pgqml / pgqueuer, pgqml / procrastinate
    assert "best no-op drain ≥ 3× pgqueuer's best: 4.00×" in text
    assert "best no-op drain ≥ 20× procrastinate's best: 40.00×" in text
    assert "bulk enqueue ≥ 4× pgqueuer's: 2.00× — **not met**" in text
    assert "idle latency p50 below every peer" in text
    assert "idle latency p99 below every peer: pgqml 4.00 ms" in text
    assert "pgqueuer on idle latency p99 (3.00 against 4.00 ms)" in text
    assert text.startswith(compare.BEGIN)
    assert text.endswith(compare.END)


def test_a_failed_round_shows_failure_not_a_number(compare: ModuleType) -> None:
    samples = {
        "pgqml/drain/tuned/noop": [
            {"value": 20_000, "error": None},
            {"value": None, "error": "3 of 20,000 jobs never ran, 0 ran more than once"},
        ],
        "pgqueuer/drain/tuned/noop": ok(5_000),
    }
    text = compare.report(_results(samples))
    row = next(line for line in text.splitlines() if line.startswith("| drain, tuned, no-op |"))
    assert "FAILURE: 3 of 20,000 jobs never ran" in row
    assert row.split("|")[2].strip().startswith("FAILURE")
    assert "best no-op drain ≥ 3× pgqueuer" not in text  # no verdict from a failed run


def test_markdown_section_is_replaced_between_markers(compare: ModuleType, tmp_path: Path) -> None:
    md = tmp_path / "RESULTS.md"
    md.write_text("# Results\n\nhand-written intro\n")
    compare.write_markdown(md, f"{compare.BEGIN}\nfirst\n{compare.END}")
    compare.write_markdown(md, f"{compare.BEGIN}\nsecond\n{compare.END}")
    text = md.read_text()
    assert "hand-written intro" in text
    assert "second" in text
    assert "first" not in text
    assert text.count(compare.BEGIN) == 1


def test_the_runtime_package_never_depends_on_the_peers() -> None:
    runtime = [r for r in requires("pgqml") or [] if "extra ==" not in r]
    assert not [r for r in runtime if r.split()[0].split(">")[0].split("[")[0] in PEERS]
    code = (
        "import sys, pgqml, pgqml.worker, pgqml.cli, pgqml.metrics\n"
        f"print(sorted(m for m in {PEERS!r} if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
