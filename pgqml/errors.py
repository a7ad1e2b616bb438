"""Exceptions raised by pgqml.

One root, :class:`PgqmlError`. The tree::

    PgqmlError
    ├── ConfigurationError          bad settings, missing DSN, forced C impl missing
    ├── ValidationError             bad input; nothing was written (also ValueError)
    │   ├── InvalidName
    │   │   ├── InvalidQueueName
    │   │   └── InvalidMethodName
    │   ├── InvalidPriority
    │   ├── InvalidMaxAttempts
    │   ├── InvalidPayload
    │   │   └── PayloadTooLarge
    │   ├── InvalidSchedule          naive datetime, negative delay, both delay and run_at
    │   ├── InvalidUniqueKey
    │   ├── InvalidMetadata
    │   └── InvalidWorkerCall        a worker procedure called with bad arguments
    ├── InvalidTransition           a state change the state machine forbids
    ├── JobNotFound
    ├── MigrationError
    │   ├── SchemaNotInstalled
    │   ├── SchemaOutdated           the database is behind this code: run `pgqml migrate`
    │   └── SchemaTooNew             the database is ahead of this code: upgrade pgqml
    └── DatabaseError               any other error from the database (wraps psycopg's)

Errors raised inside PostgreSQL by pgqml's functions and constraints carry
SQLSTATEs of class ``PQ`` (see :data:`SQLSTATE_TO_ERROR`) or name a pgqml
CHECK constraint (see :data:`CONSTRAINT_TO_ERROR`); :func:`translate` turns
them into the same classes the Python-side checks raise.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import psycopg

__all__ = [
    "CONSTRAINT_TO_ERROR",
    "SQLSTATE_TO_ERROR",
    "ConfigurationError",
    "DatabaseError",
    "InvalidMaxAttempts",
    "InvalidMetadata",
    "InvalidMethodName",
    "InvalidName",
    "InvalidPayload",
    "InvalidPriority",
    "InvalidQueueName",
    "InvalidSchedule",
    "InvalidTransition",
    "InvalidUniqueKey",
    "InvalidWorkerCall",
    "JobNotFound",
    "MigrationError",
    "PayloadTooLarge",
    "PgqmlError",
    "SchemaNotInstalled",
    "SchemaOutdated",
    "SchemaTooNew",
    "ValidationError",
    "translate",
    "wrap_errors",
    "wrap_errors_async",
]


class PgqmlError(Exception):
    """Base class of every pgqml error."""

    #: SQLSTATE raised by pgqml's SQL for this error, if any.
    sqlstate: str | None = None

    def __init__(self, message: str | None = None, **context: Any) -> None:
        self.context = context
        super().__init__(message or (self.__doc__ or self.__class__.__name__).strip())


class ConfigurationError(PgqmlError):
    """pgqml is misconfigured."""


class ValidationError(PgqmlError, ValueError):
    """Invalid input; nothing was written."""

    sqlstate: str | None = "PQ100"


class InvalidName(ValidationError):
    """Invalid name."""

    sqlstate: str | None = None


class InvalidQueueName(InvalidName):
    """Invalid queue name: 1 to 63 bytes of letters, digits and _ . : -, starting with a letter
    or _."""

    sqlstate = "PQ101"


class InvalidMethodName(InvalidName):
    """Invalid method name: 1 to 63 bytes of letters, digits and _ . : -, starting with a letter
    or _."""

    sqlstate = "PQ102"


class InvalidPriority(ValidationError):
    """Invalid priority: an integer from -1000 to 1000 is required."""

    sqlstate = "PQ103"


class InvalidMaxAttempts(ValidationError):
    """Invalid max_attempts: an integer of at least 1 is required."""

    sqlstate = "PQ104"


class InvalidPayload(ValidationError):
    """Invalid payload: a JSON object is required."""

    sqlstate = "PQ105"


class PayloadTooLarge(InvalidPayload):
    """Payload is larger than the configured limit."""

    sqlstate = "PQ106"


class InvalidSchedule(ValidationError):
    """Invalid schedule: run_at must be timezone-aware and delays non-negative."""

    sqlstate = "PQ107"


class InvalidUniqueKey(ValidationError):
    """Invalid unique_key: 1 to 255 bytes of text."""

    sqlstate = "PQ108"


class InvalidMetadata(ValidationError):
    """Invalid metadata or tags: metadata must be a JSON object, tags a list of strings."""

    sqlstate = "PQ109"


class InvalidWorkerCall(ValidationError):
    """Invalid call of a worker procedure (owner, limit, lease, batch arrays)."""

    sqlstate = "PQ110"


class InvalidTransition(PgqmlError):
    """The state machine does not allow this transition."""

    sqlstate = "PQ201"


class JobNotFound(PgqmlError, LookupError):
    """No job with this id."""

    sqlstate = "PQ202"


class MigrationError(PgqmlError):
    """The schema could not be migrated."""

    sqlstate = "PQ301"


class SchemaNotInstalled(MigrationError):
    """The pgqml schema is not installed in this database: run `pgqml migrate`."""

    sqlstate = "PQ302"


class SchemaOutdated(MigrationError):
    """The pgqml schema is older than this version of pgqml: run `pgqml migrate`."""

    sqlstate = "PQ303"


class SchemaTooNew(MigrationError):
    """The pgqml schema is newer than this version of pgqml: upgrade the pgqml package."""

    sqlstate = "PQ304"


class DatabaseError(PgqmlError):
    """The database reported an error."""


SQLSTATE_TO_ERROR: dict[str, type[PgqmlError]] = {
    cls.sqlstate: cls
    for cls in (
        ValidationError,
        InvalidQueueName,
        InvalidMethodName,
        InvalidPriority,
        InvalidMaxAttempts,
        InvalidPayload,
        PayloadTooLarge,
        InvalidSchedule,
        InvalidUniqueKey,
        InvalidMetadata,
        InvalidWorkerCall,
        InvalidTransition,
        JobNotFound,
        MigrationError,
        SchemaNotInstalled,
        SchemaOutdated,
        SchemaTooNew,
    )
    if cls.sqlstate
}

#: CHECK constraints of the pgqml schema, for rows written by plain SQL.
CONSTRAINT_TO_ERROR: dict[str, type[PgqmlError]] = {
    "jobs_queue_check": InvalidQueueName,
    "jobs_method_check": InvalidMethodName,
    "jobs_priority_check": InvalidPriority,
    "jobs_max_attempts_check": InvalidMaxAttempts,
    "jobs_attempt_check": InvalidMaxAttempts,
    "jobs_payload_check": InvalidPayload,
    "jobs_unique_key_check": InvalidUniqueKey,
    "jobs_metadata_check": InvalidMetadata,
    "jobs_state_check": InvalidTransition,
    "job_history_state_check": InvalidTransition,
}


def translate(exc: psycopg.Error) -> PgqmlError:
    """Map a psycopg error to the pgqml class for its SQLSTATE or constraint."""
    diag = exc.diag
    sqlstate = exc.sqlstate or ""
    message = diag.message_primary or str(exc)
    if diag.message_hint:
        message = f"{message} ({diag.message_hint})"
    cls = SQLSTATE_TO_ERROR.get(sqlstate)
    if cls is None and sqlstate == "23514":  # check_violation
        cls = CONSTRAINT_TO_ERROR.get(diag.constraint_name or "")
    if cls is None:
        cls = DatabaseError
    err = cls(message, sqlstate=sqlstate, detail=diag.message_detail)
    err.__cause__ = exc
    return err


@contextmanager
def wrap_errors() -> Iterator[None]:
    """Translate psycopg errors raised in the block into pgqml errors."""
    try:
        yield
    except psycopg.Error as exc:
        raise translate(exc) from exc


@asynccontextmanager
async def wrap_errors_async() -> AsyncIterator[None]:
    """Async twin of :func:`wrap_errors`."""
    try:
        yield
    except psycopg.Error as exc:
        raise translate(exc) from exc
