"""Enqueue and look up jobs, inside the caller's transaction.

Every function takes the caller's psycopg connection and runs in whatever
transaction it is in: a rollback leaves no job, a commit makes the job visible
and wakes listening workers (one NOTIFY per statement and queue). The sync and
async functions share the validation and parameter building below (sans-IO);
only the I/O differs.

Input is validated in Python first, so bad input raises a
:class:`pgqml.errors.ValidationError` subclass before anything is sent; the
SQL functions and CHECK constraints check again for rows that arrive by other
roads (plain SQL, triggers, other languages).
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, NamedTuple

import orjson
import psycopg
from psycopg.adapt import Dumper

from pgqml import _queries, errors
from pgqml import metrics as _metrics
from pgqml._impl import impl

__all__ = [
    "DEFAULT_MAX_ATTEMPTS",
    "DEFAULT_MAX_PAYLOAD_BYTES",
    "DEFAULT_QUEUE",
    "JobSpec",
    "enqueue",
    "enqueue_async",
    "enqueue_many",
    "enqueue_many_async",
    "get_job",
    "get_job_async",
]

DEFAULT_QUEUE = "default"
DEFAULT_MAX_ATTEMPTS = 5
PRIORITY_MIN, PRIORITY_MAX = -1000, 1000
#: Payload size limit in bytes of encoded JSON; ``PGQML_MAX_PAYLOAD_BYTES``
#: overrides it. The SQL side reads ``pgqml.max_payload_bytes`` (same default).
DEFAULT_MAX_PAYLOAD_BYTES = 1024 * 1024

_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_.:\-]*")
_valid_names: set[str] = set()


def _max_payload_bytes() -> int:
    raw = os.environ.get("PGQML_MAX_PAYLOAD_BYTES")
    if not raw:
        return DEFAULT_MAX_PAYLOAD_BYTES
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1:
        raise errors.ConfigurationError(
            f"PGQML_MAX_PAYLOAD_BYTES={raw!r} is not valid: a positive number of bytes is required"
        )
    return value


class _JsonText(bytes):
    """JSON already encoded by orjson, sent as jsonb without re-encoding."""


class _JsonTextDumper(Dumper):
    # Text format: the bytes are the jsonb input as is.
    def dump(self, obj: Any) -> bytes:
        return bytes(obj)


_JSONB_OID = 3802
_JsonTextDumper.oid = _JSONB_OID
psycopg.adapters.register_dumper(_JsonText, _JsonTextDumper)


@dataclass(frozen=True)
class JobSpec:
    """One job for :func:`enqueue_many` (plain dicts with these keys work too)."""

    method: str
    payload: Mapping[str, Any] | None = None
    queue: str = DEFAULT_QUEUE
    priority: int = 0
    run_at: datetime | None = None
    delay: timedelta | float | None = None
    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    unique_key: str | None = None
    metadata: Mapping[str, Any] | None = None
    tags: Sequence[str] = field(default_factory=tuple)


# -- validation (sans-IO) ---------------------------------------------------


def _check_name(value: object, what: str, cls: type[errors.InvalidName]) -> str:
    if type(value) is str and value in _valid_names:
        return value
    if (
        not isinstance(value, str)
        or not _NAME_RE.fullmatch(value)
        or len(value.encode("utf-8")) > 63
    ):
        raise cls(
            f"Invalid {what} name {value!r}: 1 to 63 bytes of letters, digits and _ . : -, "
            "starting with a letter or _"
        )
    if len(_valid_names) < 10_000:
        _valid_names.add(value)
    return value


def _check_int(
    value: object, what: str, cls: type[errors.ValidationError], lo: int, hi: int
) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
        bounds = f"from {lo} to {hi}" if hi < 2**31 else f"of at least {lo}"
        raise cls(f"Invalid {what} {value!r}: an integer {bounds} is required")
    return value


def _check_delay(delay: timedelta | float | None) -> timedelta | None:
    if delay is None:
        return None
    if isinstance(delay, timedelta):
        seconds = delay.total_seconds()
    elif isinstance(delay, (int, float)) and not isinstance(delay, bool):
        seconds = float(delay)
    else:
        raise errors.InvalidSchedule(
            f"Invalid delay {delay!r}: a timedelta or a number of seconds is required"
        )
    if not math.isfinite(seconds) or seconds < 0:
        raise errors.InvalidSchedule(f"Invalid delay {delay!r}: it must not be negative")
    return delay if isinstance(delay, timedelta) else timedelta(seconds=seconds)


def _check_run_at(run_at: datetime | None, delay: object) -> datetime | None:
    if run_at is None:
        return None
    if delay is not None:
        raise errors.InvalidSchedule("Pass either run_at or delay, not both")
    if not isinstance(run_at, datetime):
        raise errors.InvalidSchedule(
            f"Invalid run_at {run_at!r}: a timezone-aware datetime is required"
        )
    if run_at.tzinfo is None or run_at.utcoffset() is None:
        raise errors.InvalidSchedule(
            f"Invalid run_at {run_at!r}: naive datetimes are ambiguous; pass a timezone-aware "
            "datetime (e.g. datetime.now(timezone.utc) + timedelta(minutes=5)) or use delay="
        )
    return run_at


def _check_unique_key(key: object) -> str | None:
    if key is None:
        return None
    if not isinstance(key, str) or not 1 <= len(key.encode("utf-8")) <= 255:
        raise errors.InvalidUniqueKey(f"Invalid unique_key {key!r}: 1 to 255 bytes of text")
    return key


def _encode_metadata(metadata: object) -> bytes:
    if metadata is None:
        return b"{}"
    if not isinstance(metadata, Mapping):
        raise errors.InvalidMetadata(
            f"Invalid metadata: a JSON object (dict) is required, got {type(metadata).__name__}"
        )
    try:
        return orjson.dumps(metadata)
    except TypeError as exc:
        raise errors.InvalidMetadata(f"Invalid metadata: not JSON-serializable ({exc})") from None


def _check_tags(tags: object) -> list[str]:
    if tags is None:
        return []
    if isinstance(tags, (str, bytes)) or not isinstance(tags, Iterable):
        raise errors.InvalidMetadata(f"Invalid tags {tags!r}: a list of strings is required")
    out = list(tags)
    if not all(isinstance(t, str) for t in out):
        raise errors.InvalidMetadata(f"Invalid tags {tags!r}: a list of strings is required")
    return out


class _Row(NamedTuple):
    """One validated job, payload and metadata already encoded."""

    method: str
    queue: str
    payload: bytes
    priority: int
    run_at: datetime | None
    delay: timedelta | None
    max_attempts: int
    unique_key: str | None
    metadata: bytes
    tags: list[str]


def _validate(
    method: object,
    payload: object,
    queue: object,
    priority: object,
    run_at: object,
    delay: object,
    max_attempts: object,
    unique_key: object,
    metadata: object,
    tags: object,
    limit: int,
) -> _Row:
    # Fast paths first: this runs once per job in enqueue_many.
    if type(priority) is not int or not PRIORITY_MIN <= priority <= PRIORITY_MAX:
        priority = _check_int(priority, "priority", errors.InvalidPriority, -1000, 1000)
    if type(max_attempts) is not int or max_attempts < 1:
        max_attempts = _check_int(
            max_attempts, "max_attempts", errors.InvalidMaxAttempts, 1, 2**31 - 1
        )
    return _Row(
        _check_name(method, "method", errors.InvalidMethodName),
        _check_name(queue, "queue", errors.InvalidQueueName),
        impl.encode_payload({} if payload is None else payload, limit),
        priority,
        None if run_at is None else _check_run_at(run_at, delay),  # type: ignore[arg-type]
        None if delay is None else _check_delay(delay),  # type: ignore[arg-type]
        max_attempts,
        None if unique_key is None else _check_unique_key(unique_key),
        b"{}" if metadata is None else _encode_metadata(metadata),
        [] if not tags and isinstance(tags, (tuple, list, type(None))) else _check_tags(tags),
    )


def _enqueue_call(
    method: str,
    payload: Mapping[str, Any] | None,
    queue: str,
    priority: int,
    run_at: datetime | None,
    delay: timedelta | float | None,
    max_attempts: int,
    unique_key: str | None,
    metadata: Mapping[str, Any] | None,
    tags: Sequence[str] | None,
) -> tuple[str, Any]:
    """The statement and parameters that enqueue one job."""
    row = _validate(
        method,
        payload,
        queue,
        priority,
        run_at,
        delay,
        max_attempts,
        unique_key,
        metadata,
        tags,
        _max_payload_bytes(),
    )
    if (
        row.unique_key is None
        and row.run_at is None
        and row.delay is None
        and row.metadata == b"{}"
        and not row.tags
    ):
        return _queries.get("enqueue_plain"), {
            "method": row.method,
            "queue": row.queue,
            "payload": _JsonText(row.payload),
            "priority": row.priority,
            "max_attempts": row.max_attempts,
        }
    params = row._asdict()
    params["payload"] = _JsonText(row.payload)
    params["metadata"] = _JsonText(row.metadata)
    return _queries.get("enqueue"), params


_SPEC_KEYS = frozenset(JobSpec.__dataclass_fields__)


def _prepare_many(
    jobs: Iterable[JobSpec | Mapping[str, Any]], start: int = 0, limit: int | None = None
) -> list[_Row]:
    """Validate and encode ``jobs``; errors name the job's index (counted from ``start``)."""
    if limit is None:
        limit = _max_payload_bytes()
    rows: list[_Row] = []
    append = rows.append
    for index, job in enumerate(jobs, start):
        try:
            if isinstance(job, JobSpec):
                append(
                    _validate(
                        job.method,
                        job.payload,
                        job.queue,
                        job.priority,
                        job.run_at,
                        job.delay,
                        job.max_attempts,
                        job.unique_key,
                        job.metadata,
                        job.tags,
                        limit,
                    )
                )
            elif isinstance(job, Mapping):
                unknown = job.keys() - _SPEC_KEYS
                if unknown:
                    raise errors.ValidationError(
                        f"unknown keys {sorted(unknown)}; allowed: {sorted(_SPEC_KEYS)}"
                    )
                if "method" not in job:
                    raise errors.InvalidMethodName("'method' is required")
                get = job.get
                append(
                    _validate(
                        job["method"],
                        get("payload"),
                        get("queue", DEFAULT_QUEUE),
                        get("priority", 0),
                        get("run_at"),
                        get("delay"),
                        get("max_attempts", DEFAULT_MAX_ATTEMPTS),
                        get("unique_key"),
                        get("metadata"),
                        get("tags"),
                        limit,
                    )
                )
            else:
                raise errors.ValidationError(
                    f"a pgqml.JobSpec or a dict is required, got {type(job).__name__}"
                )
        except errors.ValidationError as exc:
            raise type(exc)(f"job {index}: {exc}", **exc.context) from None
    return rows


def _json_body(rows: list[_Row]) -> _JsonText:
    """The whole batch as one JSON array for ``pgqml.enqueue_many_v1``."""
    out = []
    for r in rows:
        item: dict[str, Any] = {
            "method": r.method,
            "queue": r.queue,
            "payload": orjson.Fragment(r.payload),
            "priority": r.priority,
            "max_attempts": r.max_attempts,
            "metadata": orjson.Fragment(r.metadata),
            "tags": r.tags,
        }
        if r.unique_key is not None:
            item["unique_key"] = r.unique_key
        if r.run_at is not None:
            item["run_at"] = r.run_at
        if r.delay is not None:
            item["delay"] = r.delay.total_seconds()
        out.append(item)
    return _JsonText(orjson.dumps(out))


def _copy_text(value: str) -> bytes:
    """Escape a value for COPY's text format."""
    return (
        value.replace("\\", "\\\\")
        .replace("\n", "\\n")
        .replace("\r", "\\r")
        .replace("\t", "\\t")
        .encode("utf-8")
    )


def _array_literal(tags: list[str]) -> bytes:
    if not tags:
        return b"{}"
    items = ",".join('"' + t.replace("\\", "\\\\").replace('"', '\\"') + '"' for t in tags)
    return _copy_text("{" + items + "}")


def _copy_buffer(rows: list[_Row], ids: list[int], now: datetime) -> bytes:
    """The batch in COPY text format, built in one pass (no per-row adaptation)."""
    now_text = now.isoformat().encode()
    out: list[bytes] = []
    append = out.append
    for job_id, r in zip(ids, rows, strict=True):
        if r.run_at is None and r.delay is None:
            run_at, state = now_text, b"enqueued"
        else:
            when = r.run_at if r.run_at is not None else now + r.delay  # type: ignore[operator]
            run_at = when.isoformat().encode()
            state = b"scheduled" if when > now else b"enqueued"
        payload = r.payload
        if b"\\" in payload:  # orjson escapes control characters, so only \ needs care
            payload = payload.replace(b"\\", b"\\\\")
        metadata = r.metadata
        if b"\\" in metadata:
            metadata = metadata.replace(b"\\", b"\\\\")
        append(
            b"%d\t%s\t%s\t%s\t%s\t%d\t%s\t%d\t%s\t%s\n"
            % (
                job_id,
                r.method.encode(),
                r.queue.encode(),
                payload,
                state,
                r.priority,
                run_at,
                r.max_attempts,
                metadata,
                _array_literal(r.tags),
            )
        )
    return b"".join(out)


def _count_enqueued(rows: list[_Row]) -> None:
    if _metrics.get() is None:
        return
    counts: dict[str, int] = {}
    _count_queues(rows, counts)
    _record_counts(counts)


#: Below this size the JSON statement is as fast as COPY and needs one round trip.
_COPY_THRESHOLD = 64

#: Jobs validated, encoded and sent per COPY chunk: the server inserts one chunk
#: while Python prepares the next, so the two overlap instead of adding up.
_COPY_CHUNK = 1000


def _has_unique_key(jobs: list[Any]) -> bool:
    """Does any job ask for a unique key? (Such batches take the SQL path.)"""
    for job in jobs:
        if isinstance(job, JobSpec):
            if job.unique_key is not None:
                return True
        elif isinstance(job, Mapping) and job.get("unique_key") is not None:
            return True
    return False


def _count_queues(rows: list[_Row], counts: dict[str, int]) -> None:
    for r in rows:
        counts[r.queue] = counts.get(r.queue, 0) + 1


def _record_counts(counts: dict[str, int]) -> None:
    for queue, n in counts.items():
        _metrics.record_enqueued(queue, n)


# -- sync API ----------------------------------------------------------------


def enqueue(
    conn: psycopg.Connection[Any],
    method: str,
    payload: Mapping[str, Any] | None = None,
    *,
    queue: str = DEFAULT_QUEUE,
    priority: int = 0,
    run_at: datetime | None = None,
    delay: timedelta | float | None = None,
    max_attempts: int = DEFAULT_MAX_ATTEMPTS,
    unique_key: str | None = None,
    metadata: Mapping[str, Any] | None = None,
    tags: Sequence[str] | None = None,
) -> int:
    """Enqueue one job in the connection's current transaction; return its id.

    ``payload`` is a JSON object (dict) passed to the handler as keyword
    arguments. ``run_at`` (timezone-aware) or ``delay`` (timedelta or seconds,
    measured on the database clock) schedule it for later. ``priority`` runs
    from -1000 to 1000, higher first. ``max_attempts`` is the total number of
    executions allowed. With ``unique_key``, if a live (unfinished) job already
    holds the key, no job is created and that job's id is returned.
    """
    query, params = _enqueue_call(
        method, payload, queue, priority, run_at, delay, max_attempts, unique_key, metadata, tags
    )
    with errors.wrap_errors():
        row = conn.execute(query, params).fetchone()
    assert row is not None
    _metrics.record_enqueued(queue)
    return int(row[0])


def enqueue_many(
    conn: psycopg.Connection[Any], jobs: Iterable[JobSpec | Mapping[str, Any]]
) -> list[int]:
    """Enqueue many jobs in the caller's transaction; their ids, in input order.

    Batches of 64+ jobs without unique keys are streamed through COPY in
    chunks (validated as they are sent), others go in one statement. If any
    job is invalid, nothing is written and the caller's transaction stays
    usable. Jobs with a ``unique_key``
    behave as in :func:`enqueue`, also against each other within the batch.
    """
    specs = jobs if isinstance(jobs, list) else list(jobs)
    if len(specs) < _COPY_THRESHOLD or _has_unique_key(specs):
        rows = _prepare_many(specs)
        if not rows:
            return []
        with errors.wrap_errors():
            cur = conn.execute(_queries.get("enqueue_many"), {"jobs": _json_body(rows)})
            out = [int(r[0]) for r in cur.fetchall()]
        _count_enqueued(rows)
        return out
    limit = _max_payload_bytes()
    counts: dict[str, int] = {}
    counting = _metrics.get() is not None
    with errors.wrap_errors():
        reserved = (
            conn.cursor(binary=True)
            .execute(_queries.get("reserve_job_ids"), {"count": len(specs)})
            .fetchone()
        )
        assert reserved is not None
        ids: list[int] = reserved[0]
        now: datetime = reserved[1]
        # The reservation opened the caller's transaction (or ran alone in
        # autocommit), so this block is a savepoint (or a transaction of its
        # own): bad input found in a later chunk aborts the COPY and rolls
        # back only this block, leaving the caller's transaction usable.
        with conn.transaction(), conn.cursor().copy(_queries.get("copy_jobs")) as copy:
            for start in range(0, len(specs), _COPY_CHUNK):
                end = start + _COPY_CHUNK
                rows = _prepare_many(specs[start:end], start, limit)
                copy.write(_copy_buffer(rows, ids[start:end], now))
                if counting:
                    _count_queues(rows, counts)
    _record_counts(counts)
    return ids


def get_job(conn: psycopg.Connection[Any], job_id: int) -> Any:
    """The job with this id (live or finished), or ``None``."""
    with errors.wrap_errors():
        row = conn.execute(_queries.get("get_job"), {"id": job_id}).fetchone()
    return None if row is None else impl.row_to_job(row)


# -- async API ---------------------------------------------------------------


async def enqueue_async(
    conn: psycopg.AsyncConnection[Any],
    method: str,
    payload: Mapping[str, Any] | None = None,
    *,
    queue: str = DEFAULT_QUEUE,
    priority: int = 0,
    run_at: datetime | None = None,
    delay: timedelta | float | None = None,
    max_attempts: int = DEFAULT_MAX_ATTEMPTS,
    unique_key: str | None = None,
    metadata: Mapping[str, Any] | None = None,
    tags: Sequence[str] | None = None,
) -> int:
    """Async twin of :func:`enqueue`."""
    query, params = _enqueue_call(
        method, payload, queue, priority, run_at, delay, max_attempts, unique_key, metadata, tags
    )
    async with errors.wrap_errors_async():
        cur = await conn.execute(query, params)
        row = await cur.fetchone()
    assert row is not None
    _metrics.record_enqueued(queue)
    return int(row[0])


async def enqueue_many_async(
    conn: psycopg.AsyncConnection[Any], jobs: Iterable[JobSpec | Mapping[str, Any]]
) -> list[int]:
    """Async twin of :func:`enqueue_many`."""
    specs = jobs if isinstance(jobs, list) else list(jobs)
    if len(specs) < _COPY_THRESHOLD or _has_unique_key(specs):
        rows = _prepare_many(specs)
        if not rows:
            return []
        async with errors.wrap_errors_async():
            cur = await conn.execute(_queries.get("enqueue_many"), {"jobs": _json_body(rows)})
            out = [int(r[0]) for r in await cur.fetchall()]
        _count_enqueued(rows)
        return out
    limit = _max_payload_bytes()
    counts: dict[str, int] = {}
    counting = _metrics.get() is not None
    async with errors.wrap_errors_async():
        cur = conn.cursor(binary=True)
        await cur.execute(_queries.get("reserve_job_ids"), {"count": len(specs)})
        reserved = await cur.fetchone()
        assert reserved is not None
        ids: list[int] = reserved[0]
        now: datetime = reserved[1]
        async with conn.transaction(), conn.cursor().copy(_queries.get("copy_jobs")) as copy:
            for start in range(0, len(specs), _COPY_CHUNK):
                end = start + _COPY_CHUNK
                rows = _prepare_many(specs[start:end], start, limit)
                await copy.write(_copy_buffer(rows, ids[start:end], now))
                if counting:
                    _count_queues(rows, counts)
    _record_counts(counts)
    return ids


async def get_job_async(conn: psycopg.AsyncConnection[Any], job_id: int) -> Any:
    """Async twin of :func:`get_job`."""
    async with errors.wrap_errors_async():
        cur = await conn.execute(_queries.get("get_job"), {"id": job_id})
        row = await cur.fetchone()
    return None if row is None else impl.row_to_job(row)
