"""Bad input: a clear typed error, and nothing written, from Python and SQL."""

from __future__ import annotations

from datetime import datetime, timedelta

import psycopg
import pytest

import pgqml
from pgqml import errors

E = errors

PYTHON_CASES = [
    ({"method": ""}, E.InvalidMethodName),
    ({"method": "has space"}, E.InvalidMethodName),
    ({"method": "1starts_with_digit"}, E.InvalidMethodName),
    ({"method": "x" * 64}, E.InvalidMethodName),
    ({"method": "é" * 32}, E.InvalidMethodName),  # 64 bytes
    ({"method": 5}, E.InvalidMethodName),
    ({"queue": ""}, E.InvalidQueueName),
    ({"queue": "q" * 64}, E.InvalidQueueName),
    ({"queue": "semi;colon"}, E.InvalidQueueName),
    ({"queue": None}, E.InvalidQueueName),
    ({"priority": 1001}, E.InvalidPriority),
    ({"priority": -1001}, E.InvalidPriority),
    ({"priority": 1.5}, E.InvalidPriority),
    ({"priority": True}, E.InvalidPriority),
    ({"max_attempts": 0}, E.InvalidMaxAttempts),
    ({"max_attempts": -3}, E.InvalidMaxAttempts),
    ({"payload": [1, 2]}, E.InvalidPayload),
    ({"payload": "a string"}, E.InvalidPayload),
    ({"payload": {"x": object()}}, E.InvalidPayload),
    ({"payload": {1: "non-str key"}}, E.InvalidPayload),
    ({"payload": {"big": "x" * (1024 * 1024)}}, E.PayloadTooLarge),
    ({"run_at": datetime(2030, 1, 1)}, E.InvalidSchedule),  # naive
    ({"run_at": "2030-01-01T00:00:00Z"}, E.InvalidSchedule),
    ({"delay": -1}, E.InvalidSchedule),
    ({"delay": timedelta(seconds=-1)}, E.InvalidSchedule),
    ({"delay": float("nan")}, E.InvalidSchedule),
    ({"delay": "5m"}, E.InvalidSchedule),
    ({"unique_key": ""}, E.InvalidUniqueKey),
    ({"unique_key": "k" * 256}, E.InvalidUniqueKey),
    ({"metadata": ["not", "a", "dict"]}, E.InvalidMetadata),
    ({"tags": "not-a-list"}, E.InvalidMetadata),
    ({"tags": ["ok", 3]}, E.InvalidMetadata),
]


def _call(conn, **overrides):
    kwargs = {"method": "send_email", "payload": {"to": "a@b.c"}, **overrides}
    method = kwargs.pop("method")
    payload = kwargs.pop("payload")
    return pgqml.enqueue(conn, method, payload, **kwargs)


def _nothing_written(conn) -> None:
    conn.rollback()
    assert conn.execute("SELECT count(*) FROM pgqml.all_jobs").fetchone()[0] == 0


@pytest.mark.parametrize(("overrides", "error"), PYTHON_CASES)
def test_python_enqueue_rejects(conn, overrides, error):
    with pytest.raises(error) as info:
        _call(conn, **overrides)
    assert isinstance(info.value, E.ValidationError)
    assert isinstance(info.value, E.PgqmlError)
    assert str(info.value)
    _nothing_written(conn)


@pytest.mark.parametrize(("overrides", "error"), PYTHON_CASES)
def test_python_enqueue_many_rejects(conn, overrides, error):
    good = {"method": "m"}
    bad = {"method": "send_email", **overrides}
    with pytest.raises(error, match="job 1"):
        pgqml.enqueue_many(conn, [good, bad] + [good] * 100)
    _nothing_written(conn)


def test_run_at_and_delay_together(conn):
    from datetime import timezone

    with pytest.raises(E.InvalidSchedule, match="either run_at or delay"):
        pgqml.enqueue(conn, "m", run_at=datetime.now(timezone.utc), delay=5)


def test_payload_too_large_names_size_and_limit(conn, monkeypatch):
    monkeypatch.setenv("PGQML_MAX_PAYLOAD_BYTES", "100")
    with pytest.raises(E.PayloadTooLarge) as info:
        pgqml.enqueue(conn, "m", {"x": "y" * 200})
    assert "over the limit of 100 bytes" in str(info.value)
    assert info.value.context == {"size": 208, "limit": 100}
    pgqml.enqueue(conn, "m", {"x": "y" * 50})  # under the limit: fine


def test_bad_limit_setting_is_a_configuration_error(conn, monkeypatch):
    monkeypatch.setenv("PGQML_MAX_PAYLOAD_BYTES", "lots")
    with pytest.raises(E.ConfigurationError, match="PGQML_MAX_PAYLOAD_BYTES"):
        pgqml.enqueue(conn, "m")


SQL_CASES = [
    ("SELECT pgqml.enqueue('')", E.InvalidMethodName),
    ("SELECT pgqml.enqueue('bad name')", E.InvalidMethodName),
    ("SELECT pgqml.enqueue(repeat('m', 64))", E.InvalidMethodName),
    ("SELECT pgqml.enqueue(NULL)", E.InvalidMethodName),
    ("SELECT pgqml.enqueue('m', queue => '')", E.InvalidQueueName),
    ("SELECT pgqml.enqueue('m', queue => repeat('q', 64))", E.InvalidQueueName),
    ("SELECT pgqml.enqueue('m', priority => 1001)", E.InvalidPriority),
    ("SELECT pgqml.enqueue('m', priority => NULL)", E.InvalidPriority),
    ("SELECT pgqml.enqueue('m', max_attempts => 0)", E.InvalidMaxAttempts),
    ("SELECT pgqml.enqueue('m', '[1, 2]')", E.InvalidPayload),
    ("SELECT pgqml.enqueue('m', '\"str\"')", E.InvalidPayload),
    ("SELECT pgqml.enqueue('m', 'null')", E.InvalidPayload),
    ("SELECT pgqml.enqueue('m', delay => interval '-1 second')", E.InvalidSchedule),
    ("SELECT pgqml.enqueue('m', run_at => 'infinity')", E.InvalidSchedule),
    ("SELECT pgqml.enqueue('m', unique_key => '')", E.InvalidUniqueKey),
    ("SELECT pgqml.enqueue('m', metadata => '[]')", E.InvalidMetadata),
    ("SELECT pgqml.enqueue('m', tags => ARRAY['a', NULL])", E.InvalidMetadata),
    ("SELECT pgqml.enqueue_many('{}')", E.ValidationError),
    ("SELECT pgqml.enqueue_many('[1]')", E.ValidationError),
    (
        """SELECT pgqml.enqueue_many('[{"method": "m"}, {"method": "m", "priority": 5000}]')""",
        E.InvalidPriority,
    ),
    ("""SELECT pgqml.enqueue_many('[{"method": "m", "priority": "high"}]')""", E.ValidationError),
    ("""SELECT pgqml.enqueue_many('[{"method": "m", "tags": "x"}]')""", E.ValidationError),
    ("""SELECT pgqml.enqueue_many('[{"method": "m", "delay": -5}]')""", E.InvalidSchedule),
    ("""SELECT pgqml.enqueue_many('[{"queue": "q"}]')""", E.InvalidMethodName),
    ("""SELECT pgqml.enqueue_many('[{"method": "m", "payload": [1]}]')""", E.InvalidPayload),
    # Plain INSERTs bypass the functions; CHECK constraints still hold.
    ("INSERT INTO pgqml.jobs (method) VALUES ('bad name')", E.InvalidMethodName),
    ("INSERT INTO pgqml.jobs (method, queue) VALUES ('m', '')", E.InvalidQueueName),
    ("INSERT INTO pgqml.jobs (method, priority) VALUES ('m', 2000)", E.InvalidPriority),
    ("INSERT INTO pgqml.jobs (method, max_attempts) VALUES ('m', 0)", E.InvalidMaxAttempts),
    ("INSERT INTO pgqml.jobs (method, payload) VALUES ('m', '[]')", E.InvalidPayload),
    ("INSERT INTO pgqml.jobs (method, state) VALUES ('m', 'succeeded')", E.InvalidTransition),
]


@pytest.mark.parametrize(("statement", "error"), SQL_CASES)
def test_sql_rejects_with_pgqml_sqlstate(conn, statement, error):
    with pytest.raises(psycopg.Error) as info:
        conn.execute(statement)
    translated = errors.translate(info.value)
    assert type(translated) is error or isinstance(translated, error), (
        info.value.sqlstate,
        str(info.value),
    )
    assert not isinstance(translated, E.DatabaseError)
    _nothing_written(conn)


def test_sql_payload_limit_is_configurable(conn):
    conn.execute("SET pgqml.max_payload_bytes = 64")
    with pytest.raises(psycopg.Error) as info:
        conn.execute("""SELECT pgqml.enqueue('m', jsonb_build_object('x', repeat('y', 200)))""")
    err = errors.translate(info.value)
    assert isinstance(err, E.PayloadTooLarge)
    assert "over the limit of 64 bytes" in str(err)
    _nothing_written(conn)


def test_sql_error_classes_round_trip_through_wrap_errors(conn):
    with pytest.raises(E.InvalidPriority), errors.wrap_errors():
        conn.execute("SELECT pgqml.enqueue('m', priority => 99999)")
