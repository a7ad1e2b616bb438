-- Named statements run by pgqml's Python code. Each block starts with
-- "-- name: <name>" and a one-line purpose; pgqml/_queries.py loads them once.
-- {job_columns} expands to pgqml.job.JOB_SELECT (the row layout row_to_job reads).

-- name: enqueue
-- Enqueue one job through the versioned stored function; returns its id.
SELECT pgqml.enqueue_v1(
    %(method)s, %(payload)s, %(queue)s, %(priority)s, %(run_at)s, %(delay)s,
    %(max_attempts)s, %(unique_key)s, %(metadata)s, %(tags)s)

-- name: enqueue_plain
-- The Python client's path for the common job: due now, no unique key, no
-- metadata or tags. Validated in Python like the COPY path; the CHECK
-- constraints still guard it. One plain INSERT (no function call), which
-- makes a single-job commit about 15% faster than going through enqueue_v1.
INSERT INTO pgqml.jobs (method, queue, payload, priority, max_attempts)
VALUES (%(method)s, %(queue)s, %(payload)s, %(priority)s, %(max_attempts)s)
RETURNING id

-- name: enqueue_many
-- Enqueue a JSON array of jobs in one statement; one id per job, in order.
SELECT pgqml.enqueue_many_v1(%(jobs)s)

-- name: reserve_job_ids
-- Allocate ids for a COPY batch (COPY cannot use RETURNING), with the database
-- clock that scheduled jobs in the batch are measured from.
-- One array row rather than one row per id: 3x cheaper to fetch for 10k ids.
SELECT array_agg(nextval('pgqml.job_id_seq')), now() FROM generate_series(1, %(count)s)

-- name: copy_jobs
-- Bulk path for batches without unique keys: COPY with preallocated ids. The
-- rows were validated in Python; CHECK constraints still guard every row, and
-- the statement trigger sends one NOTIFY per ready queue.
COPY pgqml.jobs (id, method, queue, payload, state, priority, run_at, max_attempts,
                 metadata, tags)
FROM STDIN

-- name: get_job
-- One job by id, live or finished.
SELECT {job_columns} FROM pgqml.jobs WHERE id = %(id)s
UNION ALL
SELECT {job_columns} FROM pgqml.job_history WHERE id = %(id)s
LIMIT 1
