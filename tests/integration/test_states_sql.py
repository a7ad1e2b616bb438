"""The SQL state machine agrees with pgqml/states.py, and guards UPDATEs."""

from __future__ import annotations

import itertools

import psycopg
import pytest

from pgqml import errors
from pgqml._impl import impl
from pgqml.states import TRANSITIONS, JobState

PAIRS = list(itertools.product(JobState, JobState))


def test_sql_python_and_impl_agree_on_all_49_pairs(conn):
    assert len(PAIRS) == 49
    rows = conn.execute(
        """
        SELECT f::text, t::text, pgqml.transition_allowed(f, t)
        FROM unnest(enum_range(NULL::pgqml.job_state)) f,
             unnest(enum_range(NULL::pgqml.job_state)) t
        """
    ).fetchall()
    sql_table = {(f, t): ok for f, t, ok in rows}
    assert set(sql_table) == {(a.value, b.value) for a, b in PAIRS}
    for a, b in PAIRS:
        expected = b in TRANSITIONS[a]
        assert sql_table[(a.value, b.value)] is expected, (a, b)
        assert impl.can_transition(a, b) is expected, (a, b)


@pytest.mark.parametrize(("a", "b"), PAIRS)
def test_check_transition_function(conn, a, b):
    if b in TRANSITIONS[a]:
        conn.execute("SELECT pgqml.check_transition(%s, %s)", (a.value, b.value))
    else:
        with pytest.raises(errors.InvalidTransition), errors.wrap_errors():
            conn.execute("SELECT pgqml.check_transition(%s, %s)", (a.value, b.value))
        conn.rollback()


def test_update_guard_rejects_invalid_and_allows_valid(conn):
    job_id = conn.execute("SELECT pgqml.enqueue('m')").fetchone()[0]
    conn.commit()
    # enqueued -> scheduled is allowed; scheduled -> awaiting_retry is not
    conn.execute("UPDATE pgqml.jobs SET state = 'scheduled' WHERE id = %s", (job_id,))
    with (
        pytest.raises(errors.InvalidTransition, match="scheduled -> awaiting_retry"),
        errors.wrap_errors(),
    ):
        conn.execute("UPDATE pgqml.jobs SET state = 'awaiting_retry' WHERE id = %s", (job_id,))
    conn.rollback()
    # a processing job needs a lease (CHECK), and the guard lets the claim through
    conn.execute(
        "UPDATE pgqml.jobs SET state = 'processing', lease_owner = 'w',"
        " lease_expires_at = now() + interval '1 minute', attempt = attempt + 1 WHERE id = %s",
        (job_id,),
    )
    with pytest.raises(psycopg.errors.CheckViolation):
        conn.execute("UPDATE pgqml.jobs SET lease_owner = NULL WHERE id = %s", (job_id,))
    conn.rollback()
