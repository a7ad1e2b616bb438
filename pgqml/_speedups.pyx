# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Compiled twin of ``pgqml._purepy``.

Same names, same signatures, same behaviour, same errors; ``pgqml._impl``
picks one at import time and ``tests/unit/test_impl_parity.py`` runs the same
cases against both. The hot path is :func:`rows_to_jobs`, which turns a fetched
batch of rows (``pgqml.job.JOB_COLUMNS`` order) into :class:`Job` objects
without going through ``Job.__init__``.

The state machine is not re-typed here: it is read from
``pgqml.states.TRANSITIONS`` at import into a C-level 7x7 table.
"""

cimport cython
from cpython.list cimport PyList_GET_ITEM, PyList_GET_SIZE, PyList_New, PyList_SET_ITEM
from cpython.ref cimport Py_INCREF
from cpython.tuple cimport PyTuple_GET_SIZE

import sys
from collections.abc import Mapping

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

IMPL = "c"


cdef extern from "Python.h":
    # Only the two slots the unpacking error path reads.
    ctypedef struct _PyTypeObj "PyTypeObject":
        const char* tp_name
        void* tp_iter
    _PyTypeObj* _Py_TYPE "Py_TYPE"(object o)
    bint PySequence_Check(object o)


# ---------------------------------------------------------------------------
# Cached Python objects (looked up once, called as plain objects).
# ---------------------------------------------------------------------------

cdef object _loads = orjson.loads
cdef object _dumps = orjson.dumps
cdef object _JSONDecodeError = orjson.JSONDecodeError
cdef object _Mapping = Mapping
cdef object _JobState = JobState
cdef object _InvalidPayload = errors.InvalidPayload
cdef object _PayloadTooLarge = errors.PayloadTooLarge
cdef object _DatabaseError = errors.DatabaseError
cdef object _InvalidTransition = errors.InvalidTransition
cdef bint _PY314 = sys.version_info >= (3, 14)

cdef enum:
    N_COLUMNS = 22
    N_STATES = 7

#: state string -> prebuilt JobState member (row decoding).
cdef dict _STATES = {s.value: s for s in JobState}

_FIELDS = JOB_FIELDS
if len(_FIELDS) != N_COLUMNS:  # the row unpacking below is unrolled for N_COLUMNS
    raise ImportError(f"pgqml._speedups was built for {N_COLUMNS} job columns, pgqml.job has {len(_FIELDS)}: rebuild it")


# ---------------------------------------------------------------------------
# Job
# ---------------------------------------------------------------------------

@cython.auto_pickle(False)
cdef class Job:
    # The first lines are the constructor's text signature (``inspect.signature``
    # reads it from the type's docstring; Python strips it from ``__doc__``).
    """Job(id, method, queue, payload, state, priority, attempt, max_attempts, run_at, \
created_at, started_at=None, finished_at=None, lease_owner=None, lease_expires_at=None, \
last_error=None, last_traceback=None, result=None, unique_key=None, metadata=None, tags=None, \
lost_count=0, expires_at=None)
--

A snapshot of one job row, read-only.

    ``payload``, ``result`` and ``metadata`` are decoded JSON. ``attempt``
    counts claims so far (the running attempt while processing);
    ``max_attempts`` is the total number of executions allowed.
    """

    cdef readonly object id
    cdef readonly object method
    cdef readonly object queue
    cdef readonly object payload
    cdef readonly object state
    cdef readonly object priority
    cdef readonly object attempt
    cdef readonly object max_attempts
    cdef readonly object run_at
    cdef readonly object created_at
    cdef readonly object started_at
    cdef readonly object finished_at
    cdef readonly object lease_owner
    cdef readonly object lease_expires_at
    cdef readonly object last_error
    cdef readonly object last_traceback
    cdef readonly object result
    cdef readonly object unique_key
    cdef readonly object metadata
    cdef readonly object tags
    cdef readonly object lost_count
    cdef readonly object expires_at

    def __init__(
        self,
        id,
        method,
        queue,
        payload,
        state,
        priority,
        attempt,
        max_attempts,
        run_at,
        created_at,
        started_at=None,
        finished_at=None,
        lease_owner=None,
        lease_expires_at=None,
        last_error=None,
        last_traceback=None,
        result=None,
        unique_key=None,
        metadata=None,
        tags=None,
        lost_count=0,
        expires_at=None,
    ):
        self.id = id
        self.method = method
        self.queue = queue
        self.payload = payload
        self.state = _JobState(state)
        self.priority = priority
        self.attempt = attempt
        self.max_attempts = max_attempts
        self.run_at = run_at
        self.created_at = created_at
        self.started_at = started_at
        self.finished_at = finished_at
        self.lease_owner = lease_owner
        self.lease_expires_at = lease_expires_at
        self.last_error = last_error
        self.last_traceback = last_traceback
        self.result = result
        self.unique_key = unique_key
        self.metadata = {} if metadata is None else metadata
        self.tags = [] if tags is None else tags
        self.lost_count = lost_count
        self.expires_at = expires_at

    def __setattr__(self, name, value):
        raise AttributeError(f"Job is read-only: cannot set {name!r}")

    def __delattr__(self, name):
        raise AttributeError(f"Job is read-only: cannot delete {name!r}")

    cdef tuple _astuple(self):
        return (
            self.id,
            self.method,
            self.queue,
            self.payload,
            self.state,
            self.priority,
            self.attempt,
            self.max_attempts,
            self.run_at,
            self.created_at,
            self.started_at,
            self.finished_at,
            self.lease_owner,
            self.lease_expires_at,
            self.last_error,
            self.last_traceback,
            self.result,
            self.unique_key,
            self.metadata,
            self.tags,
            self.lost_count,
            self.expires_at,
        )

    def __eq__(self, other):
        if not isinstance(other, Job):
            return NotImplemented
        return self._astuple() == (<Job>other)._astuple()

    __hash__ = None

    def __repr__(self):
        return (
            f"<Job id={self.id} method={self.method!r} queue={self.queue!r} "
            f"state={self.state.value} attempt={self.attempt}/{self.max_attempts}>"
        )

    def to_dict(self):
        """All fields as a dict (``state`` as its string value)."""
        d = dict(zip(_FIELDS, self._astuple()))
        d["state"] = self.state.value
        return d


cdef Job _make_job(
    object id_,
    object method,
    object queue,
    object payload,
    object state,
    object priority,
    object attempt,
    object max_attempts,
    object run_at,
    object created_at,
    object started_at,
    object finished_at,
    object lease_owner,
    object lease_expires_at,
    object last_error,
    object last_traceback,
    object result,
    object unique_key,
    object metadata,
    object tags,
    object lost_count,
    object expires_at,
):
    """Build a Job without ``__init__``: every field is set as given.

    The caller passes ``state`` as a JobState member and non-None ``metadata``
    and ``tags`` (what ``__init__`` would otherwise normalise).
    """
    cdef Job job = Job.__new__(Job)
    job.id = id_
    job.method = method
    job.queue = queue
    job.payload = payload
    job.state = state
    job.priority = priority
    job.attempt = attempt
    job.max_attempts = max_attempts
    job.run_at = run_at
    job.created_at = created_at
    job.started_at = started_at
    job.finished_at = finished_at
    job.lease_owner = lease_owner
    job.lease_expires_at = lease_expires_at
    job.last_error = last_error
    job.last_traceback = last_traceback
    job.result = result
    job.unique_key = unique_key
    job.metadata = metadata
    job.tags = tags
    job.lost_count = lost_count
    job.expires_at = expires_at
    return job


# ---------------------------------------------------------------------------
# JSON
# ---------------------------------------------------------------------------

cdef inline object _decode_payload(object data):
    try:
        value = _loads(data)
    except _JSONDecodeError as exc:
        raise _InvalidPayload(f"Invalid payload: not valid JSON ({exc})") from None
    if type(value) is not dict:
        raise _InvalidPayload(
            f"Invalid payload: a JSON object is required, got {type(value).__name__}"
        )
    return value


def decode_payload(data):
    """Decode a JSON payload; it must be a JSON object."""
    return _decode_payload(data)


def decode_json(data):
    """Decode any JSON value; ``None`` (SQL NULL) stays ``None``."""
    if data is None:
        return None
    return _loads(data)


def encode_payload(payload, max_bytes):
    """Encode a payload to JSON bytes, checking type and size."""
    if not isinstance(payload, _Mapping):
        raise _InvalidPayload(
            f"Invalid payload: a JSON object (dict) is required, got {type(payload).__name__}"
        )
    if type(payload) is not dict:
        payload = dict(payload)  # orjson serialises real dicts only
    try:
        data = _dumps(payload)
    except TypeError as exc:
        raise _InvalidPayload(f"Invalid payload: not JSON-serializable ({exc})") from None
    if len(data) > max_bytes:
        raise _PayloadTooLarge(
            f"Payload is {len(data)} bytes, over the limit of {max_bytes} bytes; "
            "store large data elsewhere and pass a reference, or raise the limit",
            size=len(data),
            limit=max_bytes,
        )
    return data


# ---------------------------------------------------------------------------
# Rows
# ---------------------------------------------------------------------------

cdef tuple _unpack_row(object row):
    """A row as a 22-tuple, failing exactly like Python's ``a, b, ... = row``.

    Rows from psycopg are exact tuples and never get here.
    """
    cdef Py_ssize_t n
    cdef type tp = type(row)
    if tp is tuple or tp is list:
        n = len(row)
        if n == N_COLUMNS:
            return tuple(row)
        if n < N_COLUMNS:
            raise ValueError(f"not enough values to unpack (expected {N_COLUMNS}, got {n})")
        if _PY314:
            raise ValueError(f"too many values to unpack (expected {N_COLUMNS}, got {n})")
        raise ValueError(f"too many values to unpack (expected {N_COLUMNS})")
    try:
        it = iter(row)
    except TypeError:
        if _Py_TYPE(row).tp_iter != NULL or PySequence_Check(row):
            raise
        it = None
    if it is None:
        # Raised outside the except block: no __context__, as in CPython.
        name = (<bytes>_Py_TYPE(row).tp_name).decode("utf-8", "replace")
        raise TypeError(f"cannot unpack non-iterable {name} object")
    items = []
    for item in it:
        if len(items) == N_COLUMNS:
            if _PY314 and tp is dict and len(row) > N_COLUMNS:
                raise ValueError(
                    f"too many values to unpack (expected {N_COLUMNS}, got {len(row)})"
                )
            raise ValueError(f"too many values to unpack (expected {N_COLUMNS})")
        items.append(item)
    if len(items) < N_COLUMNS:
        raise ValueError(
            f"not enough values to unpack (expected {N_COLUMNS}, got {len(items)})"
        )
    return tuple(items)


cdef Job _row_to_job(object row):
    cdef tuple t
    if type(row) is tuple and PyTuple_GET_SIZE(row) == N_COLUMNS:
        t = <tuple>row
    else:
        t = _unpack_row(row)

    state = t[4]
    job_state = _STATES.get(state)
    if job_state is None:
        raise _DatabaseError(f"Unknown job state {state!r} in row for job {t[0]}")

    # Same decoding order as the pure twin, so the same error wins.
    payload = _decode_payload(t[3])
    raw = t[16]
    result = None if raw is None else _loads(raw)
    raw = t[18]
    metadata = None if raw is None else _loads(raw)
    if metadata is None:
        # SQL NULL, or JSON 'null' (which Job.__init__ turns into {} too).
        metadata = {}
    raw = t[19]
    tags = [] if raw is None else list(raw)

    return _make_job(
        t[0],
        t[1],
        t[2],
        payload,
        job_state,
        t[5],
        t[6],
        t[7],
        t[8],
        t[9],
        t[10],
        t[11],
        t[12],
        t[13],
        t[14],
        t[15],
        result,
        t[17],
        metadata,
        tags,
        t[20],
        t[21],
    )


def row_to_job(row):
    """Build a :class:`Job` from one row in ``JOB_COLUMNS`` order."""
    return _row_to_job(row)


def rows_to_jobs(rows):
    """Convert a fetched batch of rows (``JOB_COLUMNS`` order) to jobs."""
    cdef Py_ssize_t i, n
    cdef list out
    cdef tuple trows
    cdef list lrows
    cdef Job job
    if type(rows) is tuple:
        trows = <tuple>rows
        n = PyTuple_GET_SIZE(trows)
        out = PyList_New(n)
        for i in range(n):
            job = _row_to_job(trows[i])
            Py_INCREF(job)
            PyList_SET_ITEM(out, i, job)
        return out
    out = []
    if type(rows) is list:
        # Re-read the size each step, as list iteration does: a row's ``tags``
        # iterable could in principle mutate the batch.
        lrows = <list>rows
        i = 0
        while i < PyList_GET_SIZE(lrows):
            row = <object>PyList_GET_ITEM(lrows, i)
            out.append(_row_to_job(row))
            i += 1
        return out
    for row in rows:
        out.append(_row_to_job(row))
    return out


# ---------------------------------------------------------------------------
# State machine
# ---------------------------------------------------------------------------

cdef bint _TABLE[N_STATES][N_STATES]
#: state string -> index into _TABLE
cdef dict _STATE_INDEX = {}
#: JobState member -> index into _TABLE (the same index ``str(member)`` maps to)
cdef dict _MEMBER_INDEX = {}


cdef void _build_table() except *:
    cdef Py_ssize_t i, j
    members = list(JobState)
    if len(members) != N_STATES:
        raise ImportError(
            f"pgqml._speedups is built for {N_STATES} job states, "
            f"pgqml.states.JobState has {len(members)}: rebuild the extension"
        )
    for i in range(N_STATES):
        for j in range(N_STATES):
            _TABLE[i][j] = False
    for i, member in enumerate(members):
        _STATE_INDEX[member.value] = i
    for member in members:
        _MEMBER_INDEX[member] = _STATE_INDEX.get(str(member), -1)
    for src, targets in TRANSITIONS.items():
        i = _STATE_INDEX[src.value]
        for dst in targets:
            _TABLE[i][<Py_ssize_t>_STATE_INDEX[dst.value]] = True


_build_table()


cdef Py_ssize_t _state_index(object state) except -2:
    """Index of ``str(state)`` in the table, or -1 for an unknown name."""
    if type(state) is str:
        idx = _STATE_INDEX.get(state)
    elif type(state) is _JobState:
        idx = _MEMBER_INDEX.get(state)
    else:
        idx = _STATE_INDEX.get(str(state))
    if idx is None:
        return -1
    return <Py_ssize_t>idx


cdef bint _allowed(object from_state, object to_state) except -1:
    cdef Py_ssize_t a = _state_index(from_state)
    cdef Py_ssize_t b = _state_index(to_state)
    if a < 0 or b < 0:
        return False
    return _TABLE[a][b]


def can_transition(from_state, to_state):
    """Is ``from_state -> to_state`` allowed? Unknown state names are not."""
    return _allowed(from_state, to_state)


def check_transition(from_state, to_state):
    """Raise :class:`pgqml.errors.InvalidTransition` unless the transition is allowed."""
    if not _allowed(from_state, to_state):
        raise _InvalidTransition(
            f"Invalid transition {from_state!s} -> {to_state!s}",
            from_state=str(from_state),
            to_state=str(to_state),
        )
