"""The compiled module ``pgqml._speedups`` and its pure twin ``pgqml._purepy`` agree.

Every test runs against both implementations (``impl`` fixture), and the
``*_parity`` tests run the same input through both and compare the outcome:
return value, or exception class, message, ``context`` and chaining.

The compiled module must be importable: its parametrisation fails (not skips)
when it is missing, unless ``PGQML_IMPL=python`` is set, which skips it.
No database needed.
"""

from __future__ import annotations

import importlib
import inspect
import os
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from types import MappingProxyType, ModuleType
from typing import Any

import orjson
import pytest

from pgqml import errors
from pgqml.job import JOB_COLUMNS
from pgqml.states import TRANSITIONS, JobState

FIELDS = (
    "id",
    "method",
    "queue",
    "payload",
    "state",
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
    "result",
    "unique_key",
    "metadata",
    "tags",
    "lost_count",
    "expires_at",
)
PUBLIC = {
    "Job",
    "can_transition",
    "check_transition",
    "decode_json",
    "decode_payload",
    "encode_payload",
    "row_to_job",
    "rows_to_jobs",
}
T0 = datetime(2025, 6, 1, 12, 0, tzinfo=timezone.utc)
ALL_PAIRS = [(a, b) for a in JobState for b in JobState]


def _load(name: str) -> ModuleType:
    if name == "python":
        return importlib.import_module("pgqml._purepy")
    try:
        return importlib.import_module("pgqml._speedups")
    except ImportError as exc:
        if os.environ.get("PGQML_IMPL", "").strip().lower() == "python":
            pytest.skip(f"PGQML_IMPL=python: compiled module not tested ({exc})")
        pytest.fail(
            f"pgqml._speedups is not importable ({exc}): build it with "
            "`python setup.py build_ext --inplace`, or set PGQML_IMPL=python to skip",
            pytrace=False,
        )


@pytest.fixture(params=["python", "c"])
def impl(request: pytest.FixtureRequest) -> ModuleType:
    return _load(request.param)


@pytest.fixture
def pure() -> ModuleType:
    return _load("python")


@pytest.fixture
def compiled() -> ModuleType:
    return _load("c")


def outcome(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[Any, ...]:
    """What a call did, in a form comparable across implementations."""
    try:
        value = fn(*args, **kwargs)
    except Exception as exc:
        return (
            "raised",
            type(exc),
            str(exc),
            getattr(exc, "context", None),
            exc.__cause__,
            exc.__suppress_context__,
        )
    if isinstance(value, list) and value and hasattr(value[0], "to_dict"):
        return ("returned", [job.to_dict() for job in value])
    if hasattr(value, "to_dict"):
        return ("returned", value.to_dict())
    return ("returned", value)


def assert_same(pure: ModuleType, compiled: ModuleType, name: str, *args: Any) -> tuple[Any, ...]:
    got_py = outcome(getattr(pure, name), *args)
    got_c = outcome(getattr(compiled, name), *args)
    assert got_c == got_py
    return got_py


def make_row(**overrides: Any) -> tuple[Any, ...]:
    """A row in JOB_COLUMNS order, as psycopg returns it."""
    values: dict[str, Any] = {
        "id": 7,
        "method": "emails.send",
        "queue": "default",
        "payload": '{"to": "a@b.c", "n": [1, 2, {"x": null}]}',
        "state": "processing",
        "priority": 3,
        "attempt": 1,
        "max_attempts": 5,
        "run_at": T0,
        "created_at": T0 - timedelta(seconds=5),
        "started_at": T0 + timedelta(seconds=1),
        "finished_at": None,
        "lease_owner": "worker-1:123",
        "lease_expires_at": T0 + timedelta(seconds=60),
        "last_error": None,
        "last_traceback": None,
        "result": None,
        "unique_key": "order:7",
        "metadata": '{"trace_id": "abc"}',
        "tags": ["billing", "eu"],
        "lost_count": 0,
        "expires_at": None,
    }
    unknown = set(overrides) - set(values)
    assert not unknown, unknown
    values.update(overrides)
    return tuple(values.values())


def make_job(impl: ModuleType, **overrides: Any) -> Any:
    kwargs: dict[str, Any] = {
        "id": 1,
        "method": "m",
        "queue": "q",
        "payload": {"a": 1},
        "state": "enqueued",
        "priority": 0,
        "attempt": 0,
        "max_attempts": 3,
        "run_at": T0,
        "created_at": T0,
    }
    kwargs.update(overrides)
    return impl.Job(**kwargs)


# --------------------------------------------------------------------------
# Module surface
# --------------------------------------------------------------------------


def test_impl_names(pure: ModuleType, compiled: ModuleType) -> None:
    assert pure.IMPL == "python"
    assert compiled.IMPL == "c"


def test_public_names(impl: ModuleType) -> None:
    assert set(impl.__all__) == PUBLIC
    for name in PUBLIC:
        assert hasattr(impl, name)


def test_row_layout_matches_fields() -> None:
    assert len(JOB_COLUMNS) == len(FIELDS)
    assert [c.split("::")[0] for c in JOB_COLUMNS] == list(FIELDS)


@pytest.mark.parametrize("name", sorted(PUBLIC))
def test_signatures_parity(pure: ModuleType, compiled: ModuleType, name: str) -> None:
    def shape(obj: Any) -> list[tuple[str, Any, Any]]:
        return [(p.name, p.kind, p.default) for p in inspect.signature(obj).parameters.values()]

    assert shape(getattr(compiled, name)) == shape(getattr(pure, name))


# --------------------------------------------------------------------------
# Job
# --------------------------------------------------------------------------


def test_job_defaults(impl: ModuleType) -> None:
    job = make_job(impl)
    assert job.state is JobState.ENQUEUED
    assert job.metadata == {}
    assert job.tags == []
    assert job.lost_count == 0
    for name in (
        "started_at",
        "finished_at",
        "lease_owner",
        "lease_expires_at",
        "last_error",
        "last_traceback",
        "result",
        "unique_key",
        "expires_at",
    ):
        assert getattr(job, name) is None, name
    assert make_job(impl).metadata is not job.metadata  # a fresh dict per job


def test_job_positional_and_keyword(impl: ModuleType) -> None:
    values = [
        9,
        "m",
        "q",
        {"k": "v"},
        JobState.FAILED,
        -5,
        2,
        4,
        T0,
        T0,
        T0,
        T0,
        "w",
        T0,
        "boom",
        "tb",
        {"r": 1},
        "u",
        {"m": 1},
        ["t"],
        2,
        T0,
    ]
    by_position = impl.Job(*values)
    by_keyword = impl.Job(**dict(zip(FIELDS, values, strict=True)))
    assert by_position == by_keyword
    for name, value in zip(FIELDS, values, strict=True):
        assert getattr(by_position, name) is value, name


@pytest.mark.parametrize("state", [*JobState, *(s.value for s in JobState)])
def test_job_accepts_member_and_string_state(impl: ModuleType, state: Any) -> None:
    job = make_job(impl, state=state)
    assert job.state is JobState(state)
    assert type(job.state) is JobState


def test_job_rejects_unknown_state_parity(pure: ModuleType, compiled: ModuleType) -> None:
    got_py = outcome(make_job, pure, state="bogus")
    assert got_py[:3] == ("raised", ValueError, "'bogus' is not a valid JobState")
    assert outcome(make_job, compiled, state="bogus") == got_py


def test_job_is_read_only(impl: ModuleType) -> None:
    job = make_job(impl)
    with pytest.raises(AttributeError, match=r"^Job is read-only: cannot set 'id'$"):
        job.id = 2
    with pytest.raises(AttributeError, match=r"^Job is read-only: cannot set 'state'$"):
        job.state = JobState.FAILED
    with pytest.raises(AttributeError, match=r"^Job is read-only: cannot set 'other'$"):
        job.other = 1
    with pytest.raises(AttributeError, match=r"^Job is read-only: cannot delete 'payload'$"):
        del job.payload
    assert job.id == 1
    assert job.state is JobState.ENQUEUED
    assert job.payload == {"a": 1}


def test_job_equality(impl: ModuleType) -> None:
    a, b = make_job(impl), make_job(impl)
    assert a == b
    assert (a != b) is False
    assert a.__eq__(object()) is NotImplemented
    assert a != "job"
    assert a != None  # noqa: E711
    assert a == make_job(impl, state=JobState.ENQUEUED)  # string and member give equal jobs


@pytest.mark.parametrize("field", FIELDS)
def test_job_equality_compares_every_field(impl: ModuleType, field: str) -> None:
    base = make_job(impl)
    values = {f: getattr(base, f) for f in FIELDS}
    values[field] = JobState.FAILED if field == "state" else ("different", field)
    other = impl.Job(**values)
    assert base != other
    assert (base == other) is False


def test_job_is_unhashable(impl: ModuleType) -> None:
    job = make_job(impl)
    assert impl.Job.__hash__ is None
    with pytest.raises(TypeError, match="unhashable type"):
        hash(job)
    with pytest.raises(TypeError):
        {job}  # noqa: B018


def test_job_repr_parity(pure: ModuleType, compiled: ModuleType) -> None:
    kwargs: dict[str, Any] = {"id": 42, "method": "a.b", "queue": "q'1", "attempt": 2}
    expected = "<Job id=42 method='a.b' queue=\"q'1\" state=processing attempt=2/3>"
    for impl in (pure, compiled):
        assert repr(make_job(impl, state="processing", **kwargs)) == expected


def test_job_to_dict(impl: ModuleType) -> None:
    job = impl.row_to_job(make_row())
    d = job.to_dict()
    assert list(d) == list(FIELDS)
    assert d["state"] == "processing"
    assert type(d["state"]) is str
    for name in FIELDS:
        if name != "state":
            assert d[name] is getattr(job, name), name
    d["id"] = -1  # a copy: the job is unchanged
    assert job.id == 7


def test_job_to_dict_parity(pure: ModuleType, compiled: ModuleType) -> None:
    row = make_row(result='{"ok": true}', state="succeeded")
    assert compiled.row_to_job(row).to_dict() == pure.row_to_job(row).to_dict()


# --------------------------------------------------------------------------
# JSON
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "data", ['{"a": 1, "b": {"c": [1, 2.5, null]}}', b'{"x": "\xc3\xa9"}', "{}"]
)
def test_decode_payload(impl: ModuleType, data: str | bytes) -> None:
    assert impl.decode_payload(data) == orjson.loads(data)


@pytest.mark.parametrize("data", ["{", "", "{'a': 1}", '{"a": NaN}', b"\xff", "[1,]", 12])
def test_decode_payload_invalid_json_parity(
    pure: ModuleType, compiled: ModuleType, data: Any
) -> None:
    got = assert_same(pure, compiled, "decode_payload", data)
    assert got[1] is errors.InvalidPayload
    assert got[2].startswith("Invalid payload: not valid JSON (")
    assert got[4:] == (None, True)  # raised "from None"


@pytest.mark.parametrize(
    ("data", "type_name"),
    [("[]", "list"), ("1", "int"), ("1.5", "float"), ('"s"', "str"), ("null", "NoneType")],
)
def test_decode_payload_non_object_parity(
    pure: ModuleType, compiled: ModuleType, data: str, type_name: str
) -> None:
    got = assert_same(pure, compiled, "decode_payload", data)
    assert got[1:3] == (
        errors.InvalidPayload,
        f"Invalid payload: a JSON object is required, got {type_name}",
    )


@pytest.mark.parametrize("data", [None, "null", "1", '"x"', "[1, {}]", '{"a": 1}', b"true"])
def test_decode_json(impl: ModuleType, data: Any) -> None:
    assert impl.decode_json(data) == (None if data is None else orjson.loads(data))


@pytest.mark.parametrize("data", ["{", "", b"\xff", 3])
def test_decode_json_invalid_parity(pure: ModuleType, compiled: ModuleType, data: Any) -> None:
    got = assert_same(pure, compiled, "decode_json", data)
    assert got[1] is orjson.JSONDecodeError


def test_encode_payload(impl: ModuleType) -> None:
    payload = {"to": "a@b.c", "n": [1, 2, {"x": None}], "é": 1.5}
    assert impl.encode_payload(payload, 1000) == orjson.dumps(payload)
    exact = orjson.dumps(payload)
    assert impl.encode_payload(payload, len(exact)) == exact  # at the limit is fine


@pytest.mark.parametrize("payload", [[1, 2], None, "text", 3, ({"a": 1},)])
def test_encode_payload_not_a_mapping_parity(
    pure: ModuleType, compiled: ModuleType, payload: Any
) -> None:
    got = assert_same(pure, compiled, "encode_payload", payload, 100)
    assert got[1:3] == (
        errors.InvalidPayload,
        f"Invalid payload: a JSON object (dict) is required, got {type(payload).__name__}",
    )


@pytest.mark.parametrize(
    "payload",
    [
        {"a": object()},
        {"a": {1, 2}},
        {1: "int key"},
        {"a": b"bytes"},
    ],
)
def test_encode_payload_not_serialisable_parity(
    pure: ModuleType, compiled: ModuleType, payload: Any
) -> None:
    got = assert_same(pure, compiled, "encode_payload", payload, 10_000)
    assert got[1] is errors.InvalidPayload
    assert got[2].startswith("Invalid payload: not JSON-serializable (")
    assert got[4:] == (None, True)


def test_encode_payload_accepts_any_mapping(impl: ModuleType) -> None:
    # orjson serialises real dicts only; other Mappings are copied into one
    assert impl.encode_payload(MappingProxyType({"a": 1}), 100) == b'{"a":1}'


def test_encode_payload_too_large_parity(pure: ModuleType, compiled: ModuleType) -> None:
    payload = {"blob": "x" * 100}
    size = len(orjson.dumps(payload))
    got = assert_same(pure, compiled, "encode_payload", payload, size - 1)
    assert got[1] is errors.PayloadTooLarge
    assert got[2] == (
        f"Payload is {size} bytes, over the limit of {size - 1} bytes; "
        "store large data elsewhere and pass a reference, or raise the limit"
    )
    assert got[3] == {"size": size, "limit": size - 1}


def test_payload_too_large_is_invalid_payload(impl: ModuleType) -> None:
    with pytest.raises(errors.InvalidPayload) as info:
        impl.encode_payload({"a": "b"}, 3)
    assert isinstance(info.value, errors.PayloadTooLarge)
    assert isinstance(info.value, ValueError)
    assert info.value.context == {"size": 9, "limit": 3}


# --------------------------------------------------------------------------
# Rows
# --------------------------------------------------------------------------


def test_row_to_job(impl: ModuleType) -> None:
    tags = ["billing", "eu"]
    row = make_row(tags=tags, result="[1, 2]", state="succeeded")
    job = impl.row_to_job(row)
    assert isinstance(job, impl.Job)
    assert job.id == 7
    assert job.method == "emails.send"
    assert job.queue == "default"
    assert job.payload == {"to": "a@b.c", "n": [1, 2, {"x": None}]}
    assert job.state is JobState.SUCCEEDED
    assert (job.priority, job.attempt, job.max_attempts) == (3, 1, 5)
    assert job.run_at is T0
    assert job.result == [1, 2]
    assert job.metadata == {"trace_id": "abc"}
    assert job.tags == tags
    assert job.tags is not tags  # copied
    assert job.unique_key == "order:7"
    assert job.lease_owner == "worker-1:123"


def test_row_to_job_nulls(impl: ModuleType) -> None:
    job = impl.row_to_job(make_row(metadata=None, tags=None, result=None))
    assert job.metadata == {}
    assert job.tags == []
    assert job.result is None


def test_row_to_job_json_null_columns(impl: ModuleType) -> None:
    # JSON 'null' text (not SQL NULL): result is None; metadata becomes {}, as
    # Job.__init__ normalises a None metadata.
    job = impl.row_to_job(make_row(metadata="null", result="null"))
    assert job.metadata == {}
    assert job.result is None


@pytest.mark.parametrize(
    "row",
    [
        make_row(),
        make_row(tags=("a", "b")),
        make_row(payload=b'{"b": 1}', metadata=b"{}", result=b'"r"'),
        make_row(state=JobState.DELETED),
        list(make_row()),
        make_row(result='{"deep": {"er": [1, {"est": true}]}}', state="failed"),
        make_row(metadata="null", result="null"),
        make_row(metadata="[1, 2]", result="3.5"),
        make_row(tags=[]),
    ],
    ids=[
        "tuple",
        "tags-tuple",
        "bytes-json",
        "member-state",
        "list-row",
        "nested-result",
        "json-null-columns",
        "non-object-metadata",
        "empty-tags",
    ],
)
def test_row_to_job_parity(pure: ModuleType, compiled: ModuleType, row: Any) -> None:
    assert assert_same(pure, compiled, "row_to_job", row)[0] == "returned"


@pytest.mark.parametrize("state", ["bogus", "ENQUEUED", "", None, 3])
def test_row_unknown_state_parity(pure: ModuleType, compiled: ModuleType, state: Any) -> None:
    got = assert_same(pure, compiled, "row_to_job", make_row(state=state))
    assert got[1:3] == (errors.DatabaseError, f"Unknown job state {state!r} in row for job 7")


def test_row_unhashable_state_parity(pure: ModuleType, compiled: ModuleType) -> None:
    got = assert_same(pure, compiled, "row_to_job", make_row(state=["enqueued"]))
    assert got[1] is TypeError


def test_row_state_checked_before_payload_parity(pure: ModuleType, compiled: ModuleType) -> None:
    got = assert_same(pure, compiled, "row_to_job", make_row(state="bogus", payload="{"))
    assert got[1] is errors.DatabaseError


@pytest.mark.parametrize(
    ("overrides", "error"),
    [
        ({"payload": "not json"}, errors.InvalidPayload),
        ({"payload": "[1]"}, errors.InvalidPayload),
        ({"payload": None}, errors.InvalidPayload),
        ({"result": "{"}, orjson.JSONDecodeError),
        ({"metadata": "{"}, orjson.JSONDecodeError),
        ({"payload": "{", "result": "{"}, errors.InvalidPayload),  # payload decoded first
        ({"result": "{", "metadata": "{"}, orjson.JSONDecodeError),
        ({"tags": 5}, TypeError),
    ],
)
def test_row_bad_columns_parity(
    pure: ModuleType, compiled: ModuleType, overrides: dict[str, Any], error: type[Exception]
) -> None:
    got = assert_same(pure, compiled, "row_to_job", make_row(**overrides))
    assert got[1] is error


def test_row_string_tags_parity(pure: ModuleType, compiled: ModuleType) -> None:
    # Odd but defined: list("ab") -> ["a", "b"], in both.
    got = assert_same(pure, compiled, "row_to_job", make_row(tags="ab"))
    assert got[1]["tags"] == ["a", "b"]


@pytest.mark.parametrize(
    "row",
    [
        make_row()[:-1],
        (*make_row(), None),
        list(make_row())[:5],
        [*make_row(), 1, 2],
        (),
        iter(make_row()[:21]),
        iter((*make_row(), None)),
        5,
        None,
    ],
    ids=[
        "short-tuple",
        "long-tuple",
        "short-list",
        "long-list",
        "empty",
        "short-iter",
        "long-iter",
        "int",
        "none",
    ],
)
def test_row_wrong_shape_parity(pure: ModuleType, compiled: ModuleType, row: Any) -> None:
    if isinstance(row, Iterator):  # one-shot: give each implementation its own
        items = list(row)
        got_py = outcome(pure.row_to_job, iter(items))
        got_c = outcome(compiled.row_to_job, iter(items))
        assert got_c == got_py
    else:
        got_py = assert_same(pure, compiled, "row_to_job", row)
    assert got_py[1] in (ValueError, TypeError)
    assert "unpack" in got_py[2]


def test_row_from_iterator(impl: ModuleType) -> None:
    assert impl.row_to_job(iter(make_row())) == impl.row_to_job(make_row())


def make_batch() -> list[tuple[Any, ...]]:
    states = [s.value for s in JobState]
    return [
        make_row(
            id=i,
            state=states[i % len(states)],
            payload=orjson.dumps({"i": i, "nested": {"k": [i, str(i)]}}).decode(),
            result=None if i % 2 else orjson.dumps({"ok": i}).decode(),
            metadata=None if i % 3 == 0 else '{"m": 1}',
            tags=None if i % 4 == 0 else [f"t{i}"],
        )
        for i in range(1, 30)
    ]


def test_rows_to_jobs(impl: ModuleType) -> None:
    rows = make_batch()
    jobs = impl.rows_to_jobs(rows)
    assert type(jobs) is list
    assert jobs == [impl.row_to_job(row) for row in rows]
    assert [job.id for job in jobs] == list(range(1, 30))
    assert impl.rows_to_jobs([]) == []
    assert impl.rows_to_jobs(()) == []


@pytest.mark.parametrize("container", [list, tuple, iter], ids=["list", "tuple", "iterator"])
def test_rows_to_jobs_parity(
    pure: ModuleType, compiled: ModuleType, container: Callable[[Any], Any]
) -> None:
    rows = make_batch()
    got_py = outcome(pure.rows_to_jobs, container(rows))
    got_c = outcome(compiled.rows_to_jobs, container(rows))
    assert got_py[0] == "returned"
    assert got_c == got_py


@pytest.mark.parametrize(
    ("bad", "error"),
    [
        ({"state": "nope"}, errors.DatabaseError),
        ({"payload": "[]"}, errors.InvalidPayload),
        ({"metadata": "{"}, orjson.JSONDecodeError),
    ],
)
def test_rows_to_jobs_error_mid_batch_parity(
    pure: ModuleType, compiled: ModuleType, bad: dict[str, Any], error: type[Exception]
) -> None:
    rows = [*make_batch(), make_row(id=99, **bad), make_row(id=100)]
    got = assert_same(pure, compiled, "rows_to_jobs", rows)
    assert got[1] is error


# --------------------------------------------------------------------------
# State machine
# --------------------------------------------------------------------------


@pytest.mark.parametrize(("src", "dst"), ALL_PAIRS, ids=[f"{a}->{b}" for a, b in ALL_PAIRS])
def test_transitions_match_table(
    pure: ModuleType, compiled: ModuleType, src: JobState, dst: JobState
) -> None:
    expected = dst in TRANSITIONS[src]
    for impl in (pure, compiled):
        for a, b in ((src, dst), (src.value, dst.value), (src, dst.value), (src.value, dst)):
            assert impl.can_transition(a, b) is expected, (impl.IMPL, a, b)
            if expected:
                assert impl.check_transition(a, b) is None
            else:
                with pytest.raises(errors.InvalidTransition) as info:
                    impl.check_transition(a, b)
                assert str(info.value) == f"Invalid transition {src.value} -> {dst.value}"
                assert info.value.context == {"from_state": src.value, "to_state": dst.value}
        assert outcome(compiled.check_transition, src, dst) == outcome(
            pure.check_transition, src, dst
        )


def test_transition_table_is_not_trivial(impl: ModuleType) -> None:
    allowed = sum(impl.can_transition(a, b) for a, b in ALL_PAIRS)
    assert allowed == sum(len(t) for t in TRANSITIONS.values())
    assert 0 < allowed < 49
    assert not any(impl.can_transition(s, s) for s in JobState)  # no self-transitions


@pytest.mark.parametrize(
    ("src", "dst"),
    [
        ("bogus", "enqueued"),
        ("enqueued", "bogus"),
        ("ENQUEUED", "processing"),  # names, not values
        ("enqueued", "PROCESSING"),
        (" enqueued", "processing"),
        ("", ""),
        (None, "processing"),
        ("enqueued", None),
        (1, 2),
        (b"enqueued", b"processing"),
    ],
)
def test_unknown_states_rejected_parity(
    pure: ModuleType, compiled: ModuleType, src: Any, dst: Any
) -> None:
    for impl in (pure, compiled):
        assert impl.can_transition(src, dst) is False
    got = assert_same(pure, compiled, "check_transition", src, dst)
    assert got[1:4] == (
        errors.InvalidTransition,
        f"Invalid transition {src!s} -> {dst!s}",
        {"from_state": str(src), "to_state": str(dst)},
    )


def test_transition_uses_str_of_objects(impl: ModuleType) -> None:
    class Named:
        def __init__(self, name: str) -> None:
            self.name = name

        def __str__(self) -> str:
            return self.name

    assert impl.can_transition(Named("enqueued"), Named("processing")) is True
    assert impl.can_transition(Named("succeeded"), Named("enqueued")) is False

    class Loud(str):
        __slots__ = ()

        def __str__(self) -> str:
            return "enqueued"

    # A str subclass goes through str() too, exactly like the pure twin.
    assert impl.can_transition(Loud("xxx"), "processing") is True
