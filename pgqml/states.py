"""The job state machine, written once.

Every other layer checks against this table: the compiled module
(``pgqml/_speedups.pyx``), its pure-Python twin (``pgqml/_purepy.py``) and the
SQL guard ``pgqml.transition_allowed()`` in ``sql/migrations/0001_initial.sql``.
``tests/unit/test_states.py`` asserts all three agree on all 49 pairs.

Where a job lives:

* **live** states sit in the hot table ``pgqml.jobs`` (small, claimed from);
* **final** states sit in ``pgqml.job_history`` (append-mostly, pruned by TTL).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping

__all__ = [
    "FINAL_STATES",
    "LIVE_STATES",
    "TRANSITIONS",
    "JobState",
    "can_transition",
]


class JobState(str, enum.Enum):
    """The seven states of a job (qml-rs's set).

    Each comment says who moves a job *out* of the state.
    """

    #: Ready to run. Out: a worker's claim (processing), cancel (deleted),
    #: an operator failing it (failed), rescheduling (scheduled).
    ENQUEUED = "enqueued"
    #: Waiting for ``run_at``. Out: a worker's claim once due (processing),
    #: an operator running it now (enqueued), cancel (deleted).
    SCHEDULED = "scheduled"
    #: Claimed and leased by one worker. Out: only that worker's fenced writes
    #: (succeeded, failed, awaiting_retry), release on shutdown or the lease
    #: rescuer (enqueued), cancel (deleted).
    PROCESSING = "processing"
    #: Failed, will run again at ``run_at``. Out: a worker's claim once due
    #: (processing), an operator (enqueued, deleted).
    AWAITING_RETRY = "awaiting_retry"
    #: Finished successfully. Out: only deletion (deleted).
    SUCCEEDED = "succeeded"
    #: Finished, attempts exhausted or a permanent error. Out: manual retry
    #: (enqueued or awaiting_retry), deletion (deleted).
    FAILED = "failed"
    #: Cancelled or deleted. Terminal: nothing moves it out.
    DELETED = "deleted"

    def __str__(self) -> str:
        return self.value

    @property
    def is_final(self) -> bool:
        """True for succeeded, failed and deleted (rows in ``job_history``)."""
        return self in FINAL_STATES

    @property
    def is_live(self) -> bool:
        """True for enqueued, scheduled, processing and awaiting_retry."""
        return self in LIVE_STATES


_S = JobState

#: Allowed transitions; anything absent (self-transitions included) is rejected.
TRANSITIONS: Mapping[JobState, frozenset[JobState]] = {
    _S.ENQUEUED: frozenset({_S.PROCESSING, _S.FAILED, _S.DELETED, _S.SCHEDULED}),
    _S.PROCESSING: frozenset({_S.SUCCEEDED, _S.FAILED, _S.DELETED, _S.AWAITING_RETRY, _S.ENQUEUED}),
    _S.SCHEDULED: frozenset({_S.ENQUEUED, _S.PROCESSING, _S.DELETED}),
    _S.AWAITING_RETRY: frozenset({_S.ENQUEUED, _S.PROCESSING, _S.DELETED}),
    _S.FAILED: frozenset({_S.ENQUEUED, _S.DELETED, _S.AWAITING_RETRY}),
    _S.SUCCEEDED: frozenset({_S.DELETED}),
    _S.DELETED: frozenset(),
}

LIVE_STATES: frozenset[JobState] = frozenset(
    {_S.ENQUEUED, _S.SCHEDULED, _S.PROCESSING, _S.AWAITING_RETRY}
)
FINAL_STATES: frozenset[JobState] = frozenset({_S.SUCCEEDED, _S.FAILED, _S.DELETED})


def can_transition(from_state: JobState | str, to_state: JobState | str) -> bool:
    """Reference implementation: is ``from_state -> to_state`` allowed?"""
    return JobState(to_state) in TRANSITIONS[JobState(from_state)]
