"""Micro-benchmark: ``rows_to_jobs``, compiled (``pgqml._speedups``) vs pure (``pgqml._purepy``).

Builds a batch of realistic job rows in ``pgqml.job.JOB_COLUMNS`` order, as a
worker's fetch returns them from psycopg (a list of tuples; JSON columns as
``str``, timestamps as aware ``datetime``, tags as ``list`` or ``None``), then
times both implementations on the very same batch in the same process. Both do
the same work: decode ``payload`` (required JSON object), ``metadata`` and
``result``, validate the state, copy the tags, build the ``Job`` objects.

Samples alternate between the two implementations and the garbage collector
stays enabled (as in a real worker). Reports best-of-N and median per batch,
jobs/s and the compiled/pure ratio, and checks both produce equal jobs.

Exit status: 0 ok; 1 the two implementations disagree (or ``--min-ratio`` is
not met); 2 the compiled module is missing.

    python bench/decode_speed.py --rows 1000 --payload-bytes 1024 --repeat 15
    python bench/decode_speed.py --quick      # CI smoke run
"""

from __future__ import annotations

import argparse
import gc
import importlib
import random
import statistics
import string
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta, timezone
from pathlib import Path
from types import ModuleType
from typing import Any

import orjson

STATES = (
    "enqueued",
    "scheduled",
    "processing",
    "awaiting_retry",
    "succeeded",
    "failed",
    "deleted",
)
METHODS = ("emails.send", "billing.charge", "reports.render", "webhooks.deliver", "search.index")
QUEUES = ("default", "critical", "bulk", "webhooks")
WORDS = (
    "alpha",
    "bravo",
    "charlie",
    "delta",
    "echo",
    "foxtrot",
    "golf",
    "hotel",
    "india",
    "juliet",
    "kilo",
    "lima",
    "mike",
    "november",
    "oscar",
    "papa",
    "quebec",
    "romeo",
    "sierra",
    "tango",
    "uniform",
    "victor",
    "whiskey",
    "xray",
)


def _import_impls() -> tuple[ModuleType, ModuleType | None]:
    """Import both twins directly (works from a checkout without installing)."""
    root = str(Path(__file__).resolve().parent.parent)
    if root not in sys.path:
        sys.path.insert(0, root)
    pure = importlib.import_module("pgqml._purepy")
    try:
        compiled: ModuleType | None = importlib.import_module("pgqml._speedups")
    except ImportError as exc:
        print(f"pgqml._speedups is not importable: {exc}", file=sys.stderr)
        compiled = None
    return pure, compiled


def _sentence(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n))


def make_payload(rng: random.Random, target_bytes: int) -> dict[str, Any]:
    """A realistic payload: ~20 top-level keys, nested objects and arrays.

    About 1 KB with one order item; larger targets add order items, smaller
    ones drop keys.
    """
    n_items = 1
    payload: dict[str, Any] = {}
    while True:
        payload = {
            "event_id": str(uuid.UUID(int=rng.getrandbits(128))),
            "event_type": rng.choice(("order.created", "order.paid", "invoice.sent")),
            "occurred_at": f"2025-0{rng.randint(1, 9)}-1{rng.randint(0, 9)}T12:34:56.789Z",
            "tenant_id": rng.randint(1, 50_000),
            "idempotency_key": uuid.UUID(int=rng.getrandbits(128)).hex,
            "user": {
                "id": rng.randint(1, 10**9),
                "email": f"user{rng.randint(1, 10**6)}@example.com",
                "name": _sentence(rng, 2).title(),
                "locale": rng.choice(("en-US", "de-DE", "fr-FR", "ja-JP")),
                "roles": rng.sample(["admin", "billing", "viewer", "editor", "owner"], 2),
                "verified": rng.random() < 0.8,
            },
            "order": {
                "id": f"ord_{rng.getrandbits(48):012x}",
                "currency": rng.choice(("USD", "EUR", "JPY")),
                "total_cents": rng.randint(100, 10**6),
                "discount": None if rng.random() < 0.5 else round(rng.random() * 20, 2),
                "items": [
                    {
                        "sku": f"SKU-{rng.randint(1000, 9999)}",
                        "qty": rng.randint(1, 5),
                        "unit_price_cents": rng.randint(100, 50_000),
                        "tax_rate": 0.19,
                    }
                    for _ in range(n_items)
                ],
            },
            "shipping_address": {
                "line1": f"{rng.randint(1, 999)} {_sentence(rng, 2).title()} St",
                "city": rng.choice(("Berlin", "Paris", "Osaka", "Austin")),
                "postal_code": f"{rng.randint(10000, 99999)}",
                "country": rng.choice(("DE", "FR", "JP", "US")),
            },
            "channel": rng.choice(("web", "ios", "android", "api")),
            "priority_hint": rng.randint(0, 10),
            "send_receipt": rng.random() < 0.5,
            "template": {"name": "receipt_v3", "version": rng.randint(1, 40)},
            "attempt_budget_ms": rng.randint(1_000, 60_000),
            "feature_flags": {
                "new_checkout": rng.random() < 0.5,
                "fraud_check_v2": rng.random() < 0.5,
                "split_shipments": False,
            },
            "trace": {
                "trace_id": uuid.UUID(int=rng.getrandbits(128)).hex,
                "span_id": f"{rng.getrandbits(64):016x}",
                "sampled": True,
            },
            "source_ip": ".".join(str(rng.randint(1, 254)) for _ in range(4)),
            "user_agent": "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36",
            "tags": rng.sample(WORDS, 3),
            "notes": "",
        }
        size = len(orjson.dumps(payload))
        if size >= target_bytes - 40 or n_items >= 64:
            break
        n_items += 1
    # Small targets: drop keys from the end until it fits; then top up with
    # free text to land near the target size.
    del payload["notes"]
    while len(payload) > 1 and len(orjson.dumps(payload)) > target_bytes:
        payload.popitem()
    missing = target_bytes - len(orjson.dumps(payload)) - len(',"notes":""')
    if missing > 0:
        payload["notes"] = "".join(rng.choice(string.ascii_letters + " ") for _ in range(missing))
    return payload


def make_rows(n: int, payload_bytes: int, seed: int = 1234) -> list[tuple[Any, ...]]:
    """``n`` rows in JOB_COLUMNS order, as psycopg returns them."""
    rng = random.Random(seed)
    base = datetime(2025, 6, 1, 12, 0, tzinfo=timezone.utc)
    rows = []
    for i in range(n):
        state = STATES[i % len(STATES)]
        created = base + timedelta(seconds=i)
        final = state in ("succeeded", "failed", "deleted")
        running = state == "processing"
        metadata = {
            "trace_id": uuid.UUID(int=rng.getrandbits(128)).hex,
            "enqueued_by": rng.choice(("api", "cron:nightly", "webhook")),
            "request_id": f"req_{rng.getrandbits(40):010x}",
        }
        result = (
            {"ok": state == "succeeded", "elapsed_ms": rng.randint(1, 5000), "rows": [1, 2, 3]}
            if final
            else None
        )
        rows.append(
            (
                i + 1,  # id
                rng.choice(METHODS),  # method
                rng.choice(QUEUES),  # queue
                orjson.dumps(make_payload(rng, payload_bytes)).decode(),  # payload::text
                state,  # state::text
                rng.randint(-10, 10),  # priority
                rng.randint(0, 3),  # attempt
                5,  # max_attempts
                created + timedelta(seconds=5),  # run_at
                created,  # created_at
                created + timedelta(seconds=6) if running or final else None,  # started_at
                created + timedelta(seconds=9) if final else None,  # finished_at
                f"worker-{rng.randint(1, 8)}:{rng.randint(100, 999)}" if running else None,
                created + timedelta(seconds=60) if running else None,  # lease_expires_at
                "TimeoutError: upstream took too long" if state == "failed" else None,
                None,  # last_traceback
                None if result is None else orjson.dumps(result).decode(),  # result::text
                f"order:{i}" if i % 3 == 0 else None,  # unique_key
                orjson.dumps(metadata).decode() if i % 5 else None,  # metadata::text
                rng.sample(WORDS, 2) if i % 4 else None,  # tags
                0,  # lost_count
                created + timedelta(days=7) if final else None,  # expires_at
            )
        )
    return rows


def json_floor(rows: Sequence[Sequence[Any]]) -> list[tuple[Any, Any, Any]]:
    """Only the ``orjson.loads`` calls both implementations make, results kept alive.

    A lower bound for any converter that decodes with orjson and returns the
    decoded values (allocating, keeping and freeing them costs as much as the
    parse itself); used to split each implementation's time into JSON work
    and everything else.
    """
    loads = orjson.loads
    return [
        (
            loads(row[3]),
            None if row[16] is None else loads(row[16]),
            None if row[18] is None else loads(row[18]),
        )
        for row in rows
    ]


def time_samples(
    funcs: dict[str, Callable[[], object]], repeat: int, number: int
) -> dict[str, list[float]]:
    """Per-call seconds, ``repeat`` samples each, alternating between ``funcs``."""
    samples: dict[str, list[float]] = {name: [] for name in funcs}
    for fn in funcs.values():  # warm-up
        fn()
    for _ in range(repeat):
        for name, fn in funcs.items():
            gc.collect()
            t0 = time.perf_counter()
            for _ in range(number):
                fn()
            samples[name].append((time.perf_counter() - t0) / number)
    return samples


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1000, help="rows per batch (default 1000)")
    parser.add_argument(
        "--payload-bytes", type=int, default=1024, help="approx. payload JSON size (default 1024)"
    )
    parser.add_argument("--repeat", type=int, default=15, help="samples per implementation")
    parser.add_argument("--number", type=int, default=5, help="calls per sample (default 5)")
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument(
        "--min-ratio",
        type=float,
        default=None,
        help="exit 1 if the best-of-N compiled/pure speed-up is below this",
    )
    parser.add_argument(
        "--quick", action="store_true", help="tiny smoke run (50 rows, 3 samples, 1 call)"
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.rows, args.repeat, args.number = 50, 3, 1

    pure, compiled = _import_impls()
    if compiled is None:
        print("error: the compiled module is required for this benchmark", file=sys.stderr)
        return 2

    rows = make_rows(args.rows, args.payload_bytes, args.seed)
    avg_payload = sum(len(r[3].encode()) for r in rows) / len(rows)
    avg_keys = sum(len(orjson.loads(r[3])) for r in rows) / len(rows)

    jobs_py = pure.rows_to_jobs(rows)
    jobs_c = compiled.rows_to_jobs(rows)
    if [j.to_dict() for j in jobs_py] != [j.to_dict() for j in jobs_c]:
        print("error: the two implementations produce different jobs", file=sys.stderr)
        return 1
    del jobs_py, jobs_c

    samples = time_samples(
        {
            "pure": lambda: pure.rows_to_jobs(rows),
            "compiled": lambda: compiled.rows_to_jobs(rows),
            "json-floor": lambda: json_floor(rows),
        },
        args.repeat,
        args.number,
    )

    print(
        f"python {sys.version.split()[0]}, orjson {orjson.__version__}; "
        f"{args.rows} rows/batch, payload ~{avg_payload:.0f} B, ~{avg_keys:.0f} top-level keys; "
        f"{args.repeat} samples x {args.number} calls, GC enabled"
    )
    best: dict[str, float] = {}
    median: dict[str, float] = {}
    for name, s in samples.items():
        best[name] = min(s)
        median[name] = statistics.median(s)
        print(
            f"  {name:<10} best {best[name] * 1e3:8.3f} ms/batch ({args.rows / best[name]:>11,.0f}"
            f" jobs/s)   median {median[name] * 1e3:8.3f} ms/batch"
            f" ({args.rows / median[name]:>11,.0f} jobs/s)"
        )
    ratio_best = best["pure"] / best["compiled"]
    ratio_median = median["pure"] / median["compiled"]
    print(f"  compiled/pure speed-up: {ratio_best:.2f}x best-of-N, {ratio_median:.2f}x median")
    # Time left once the orjson.loads calls (identical in both) are taken out.
    floor = best["json-floor"]
    over_py = (best["pure"] - floor) / args.rows * 1e6
    over_c = (best["compiled"] - floor) / args.rows * 1e6
    print(
        f"  json-floor is {floor / best['compiled']:.0%} of compiled time; non-JSON overhead "
        f"per job: pure {over_py:.2f} us, compiled {over_c:.2f} us (best-of-N, approximate)"
    )
    print("  results equal: yes")
    if args.min_ratio is not None and ratio_best < args.min_ratio:
        print(
            f"error: speed-up {ratio_best:.2f}x is below --min-ratio {args.min_ratio}",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
