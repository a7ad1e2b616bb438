"""The job row layout shared by SQL queries and the row converters."""

from __future__ import annotations

__all__ = ["JOB_COLUMNS", "JOB_FIELDS", "JOB_SELECT"]

#: Column order of every query that returns jobs; ``row_to_job`` unpacks in this
#: order. JSON columns are selected as text so the compiled module decodes them.
JOB_COLUMNS: tuple[str, ...] = (
    "id",
    "method",
    "queue",
    "payload::text",
    "state::text",
    "priority",
    "attempt",
    "max_attempts",
    "run_at",
    "created_at",
    "started_at",
    "finished_at",
    "lease_owner",
    "lease_expires_at",
    "last_error",
    "last_traceback",
    "result::text",
    "unique_key",
    "metadata::text",
    "tags",
    "lost_count",
    "expires_at",
)

JOB_SELECT = ", ".join(JOB_COLUMNS)

#: The Job attribute names, in the same order (the columns without their casts).
JOB_FIELDS: tuple[str, ...] = tuple(c.split("::")[0] for c in JOB_COLUMNS)
