"""Pure-Python twin of ``pgqml._speedups``.

Same names, same signatures, same behaviour; ``pgqml._impl`` picks one at
import time. Keep the two files in step: ``tests/unit/test_impl_parity.py``
runs the same cases against both.

The row layout consumed by :func:`row_to_job` is ``pgqml.job.JOB_COLUMNS``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import orjson

from pgqml import errors
from pgqml.job import JOB_FIELDS
from pgqml.states import TRANSITIONS, JobState

__all__ = [
    "Job",
    "can_transition",
    "check_transition",
    "decode_json",
    "decode_payload",
    "encode_payload",
    "row_to_job",
    "rows_to_jobs",
]

IMPL = "python"

_FIELDS = JOB_FIELDS

_STATES: dict[str, JobState] = {s.value: s for s in JobState}
_ALLOWED: frozenset[tuple[str, str]] = frozenset(
    (a.value, b.value) for a, targets in TRANSITIONS.items() for b in targets
)


class Job:
    """A snapshot of one job row, read-only.

    ``payload``, ``result`` and ``metadata`` are decoded JSON. ``attempt``
    counts claims so far (the running attempt while processing);
    ``max_attempts`` is the total number of executions allowed.
    """

    __slots__ = _FIELDS

    id: int
    method: str
    queue: str
    payload: dict[str, Any]
    state: JobState
    priority: int
    attempt: int
    max_attempts: int
    run_at: datetime
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    lease_owner: str | None
    lease_expires_at: datetime | None
    last_error: str | None
    last_traceback: str | None
    result: Any
    unique_key: str | None
    metadata: dict[str, Any]
    tags: list[str]
    lost_count: int
    expires_at: datetime | None

    def __init__(
        self,
        id: int,
        method: str,
        queue: str,
        payload: dict[str, Any],
        state: JobState | str,
        priority: int,
        attempt: int,
        max_attempts: int,
        run_at: datetime,
        created_at: datetime,
        started_at: datetime | None = None,
        finished_at: datetime | None = None,
        lease_owner: str | None = None,
        lease_expires_at: datetime | None = None,
        last_error: str | None = None,
        last_traceback: str | None = None,
        result: Any = None,
        unique_key: str | None = None,
        metadata: dict[str, Any] | None = None,
        tags: list[str] | None = None,
        lost_count: int = 0,
        expires_at: datetime | None = None,
    ) -> None:
        setattr_ = object.__setattr__
        setattr_(self, "id", id)
        setattr_(self, "method", method)
        setattr_(self, "queue", queue)
        setattr_(self, "payload", payload)
        setattr_(self, "state", JobState(state))
        setattr_(self, "priority", priority)
        setattr_(self, "attempt", attempt)
        setattr_(self, "max_attempts", max_attempts)
        setattr_(self, "run_at", run_at)
        setattr_(self, "created_at", created_at)
        setattr_(self, "started_at", started_at)
        setattr_(self, "finished_at", finished_at)
        setattr_(self, "lease_owner", lease_owner)
        setattr_(self, "lease_expires_at", lease_expires_at)
        setattr_(self, "last_error", last_error)
        setattr_(self, "last_traceback", last_traceback)
        setattr_(self, "result", result)
        setattr_(self, "unique_key", unique_key)
        setattr_(self, "metadata", {} if metadata is None else metadata)
        setattr_(self, "tags", [] if tags is None else tags)
        setattr_(self, "lost_count", lost_count)
        setattr_(self, "expires_at", expires_at)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"Job is read-only: cannot set {name!r}")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"Job is read-only: cannot delete {name!r}")

    def _astuple(self) -> tuple[Any, ...]:
        return tuple(getattr(self, f) for f in _FIELDS)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Job):
            return NotImplemented
        return self._astuple() == other._astuple()

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return (
            f"<Job id={self.id} method={self.method!r} queue={self.queue!r} "
            f"state={self.state.value} attempt={self.attempt}/{self.max_attempts}>"
        )

    def to_dict(self) -> dict[str, Any]:
        """All fields as a dict (``state`` as its string value)."""
        d = {f: getattr(self, f) for f in _FIELDS}
        d["state"] = self.state.value
        return d


def decode_payload(data: str | bytes) -> dict[str, Any]:
    """Decode a JSON payload; it must be a JSON object."""
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise errors.InvalidPayload(f"Invalid payload: not valid JSON ({exc})") from None
    if type(value) is not dict:
        raise errors.InvalidPayload(
            f"Invalid payload: a JSON object is required, got {type(value).__name__}"
        )
    return value


def decode_json(data: str | bytes | None) -> Any:
    """Decode any JSON value; ``None`` (SQL NULL) stays ``None``."""
    if data is None:
        return None
    return orjson.loads(data)


def encode_payload(payload: Mapping[str, Any], max_bytes: int) -> bytes:
    """Encode a payload to JSON bytes, checking type and size."""
    if not isinstance(payload, Mapping):
        raise errors.InvalidPayload(
            f"Invalid payload: a JSON object (dict) is required, got {type(payload).__name__}"
        )
    if type(payload) is not dict:
        payload = dict(payload)  # orjson serialises real dicts only
    try:
        data = orjson.dumps(payload)
    except TypeError as exc:
        raise errors.InvalidPayload(f"Invalid payload: not JSON-serializable ({exc})") from None
    if len(data) > max_bytes:
        raise errors.PayloadTooLarge(
            f"Payload is {len(data)} bytes, over the limit of {max_bytes} bytes; "
            "store large data elsewhere and pass a reference, or raise the limit",
            size=len(data),
            limit=max_bytes,
        )
    return data


def row_to_job(row: Sequence[Any]) -> Job:
    """Build a :class:`Job` from one row in ``JOB_COLUMNS`` order."""
    (
        id_,
        method,
        queue,
        payload,
        state,
        priority,
        attempt,
        max_attempts,
        run_at,
        created_at,
        started_at,
        finished_at,
        lease_owner,
        lease_expires_at,
        last_error,
        last_traceback,
        result,
        unique_key,
        metadata,
        tags,
        lost_count,
        expires_at,
    ) = row
    job_state = _STATES.get(state)
    if job_state is None:
        raise errors.DatabaseError(f"Unknown job state {state!r} in row for job {id_}")
    return Job(
        id_,
        method,
        queue,
        decode_payload(payload),
        job_state,
        priority,
        attempt,
        max_attempts,
        run_at,
        created_at,
        started_at,
        finished_at,
        lease_owner,
        lease_expires_at,
        last_error,
        last_traceback,
        decode_json(result),
        unique_key,
        {} if metadata is None else decode_json(metadata),
        [] if tags is None else list(tags),
        lost_count,
        expires_at,
    )


def rows_to_jobs(rows: Sequence[Sequence[Any]]) -> list[Job]:
    """Convert a fetched batch of rows (``JOB_COLUMNS`` order) to jobs."""
    return [row_to_job(row) for row in rows]


def can_transition(from_state: JobState | str, to_state: JobState | str) -> bool:
    """Is ``from_state -> to_state`` allowed? Unknown state names are not."""
    return (str(from_state), str(to_state)) in _ALLOWED


def check_transition(from_state: JobState | str, to_state: JobState | str) -> None:
    """Raise :class:`pgqml.errors.InvalidTransition` unless the transition is allowed."""
    if (str(from_state), str(to_state)) not in _ALLOWED:
        raise errors.InvalidTransition(
            f"Invalid transition {from_state!s} -> {to_state!s}",
            from_state=str(from_state),
            to_state=str(to_state),
        )
