"""Type stub for the compiled twin of ``pgqml._purepy`` (same names and types)."""

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, ClassVar

from pgqml.states import JobState

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

IMPL: str

class Job:
    """A snapshot of one job row, read-only."""

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
    ) -> None: ...
    @property
    def id(self) -> int: ...
    @property
    def method(self) -> str: ...
    @property
    def queue(self) -> str: ...
    @property
    def payload(self) -> dict[str, Any]: ...
    @property
    def state(self) -> JobState: ...
    @property
    def priority(self) -> int: ...
    @property
    def attempt(self) -> int: ...
    @property
    def max_attempts(self) -> int: ...
    @property
    def run_at(self) -> datetime: ...
    @property
    def created_at(self) -> datetime: ...
    @property
    def started_at(self) -> datetime | None: ...
    @property
    def finished_at(self) -> datetime | None: ...
    @property
    def lease_owner(self) -> str | None: ...
    @property
    def lease_expires_at(self) -> datetime | None: ...
    @property
    def last_error(self) -> str | None: ...
    @property
    def last_traceback(self) -> str | None: ...
    @property
    def result(self) -> Any: ...
    @property
    def unique_key(self) -> str | None: ...
    @property
    def metadata(self) -> dict[str, Any]: ...
    @property
    def tags(self) -> list[str]: ...
    @property
    def lost_count(self) -> int: ...
    @property
    def expires_at(self) -> datetime | None: ...
    def __setattr__(self, name: str, value: Any) -> None: ...
    def __delattr__(self, name: str) -> None: ...
    def __eq__(self, other: object) -> bool: ...
    __hash__: ClassVar[None]  # type: ignore[assignment]
    def to_dict(self) -> dict[str, Any]:
        """All fields as a dict (``state`` as its string value)."""

def decode_payload(data: str | bytes) -> dict[str, Any]:
    """Decode a JSON payload; it must be a JSON object."""

def decode_json(data: str | bytes | None) -> Any:
    """Decode any JSON value; ``None`` (SQL NULL) stays ``None``."""

def encode_payload(payload: Mapping[str, Any], max_bytes: int) -> bytes:
    """Encode a payload to JSON bytes, checking type and size."""

def row_to_job(row: Sequence[Any]) -> Job:
    """Build a :class:`Job` from one row in ``JOB_COLUMNS`` order."""

def rows_to_jobs(rows: Sequence[Sequence[Any]]) -> list[Job]:
    """Convert a fetched batch of rows (``JOB_COLUMNS`` order) to jobs."""

def can_transition(from_state: JobState | str, to_state: JobState | str) -> bool:
    """Is ``from_state -> to_state`` allowed? Unknown state names are not."""

def check_transition(from_state: JobState | str, to_state: JobState | str) -> None:
    """Raise :class:`pgqml.errors.InvalidTransition` unless the transition is allowed."""
