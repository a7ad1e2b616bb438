-- 0001_initial: the whole pgqml schema, designed for every part of the product
-- (enqueue, workers with leases and retries, recurring jobs, cleanup, locks,
-- server registry, dashboard).
--
-- Layout: live jobs (enqueued, scheduled, processing, awaiting_retry) sit in the
-- small hot table pgqml.jobs, which every claim reads; finished jobs (succeeded,
-- failed, deleted) are moved, id and all, to pgqml.job_history, which only grows
-- by INSERT and shrinks by TTL cleanup. However much history accumulates, the
-- claim indexes only ever hold live rows and the hot table stays small enough
-- for autovacuum to keep up with its churn. The cost is one DELETE + INSERT per
-- finished job instead of one UPDATE.
--
-- The migration runner (pgqml/migrations.py) creates the schema and the
-- bookkeeping table pgqml.migrations, holds an advisory lock, and runs each
-- migration file in one transaction.
--
-- Supported PostgreSQL: 13 or newer (nothing below needs more).

-- Error codes raised by pgqml's SQL (class PQ); pgqml/errors.py maps them to
-- Python classes:
--   PQ100 invalid job input (generic)   PQ101 queue name   PQ102 method name
--   PQ103 priority   PQ104 max_attempts   PQ105 payload   PQ106 payload too large
--   PQ107 schedule   PQ108 unique_key   PQ109 metadata/tags
--   PQ201 invalid transition   PQ202 job not found

CREATE TYPE pgqml.job_state AS ENUM (
    'enqueued',
    'scheduled',
    'processing',
    'awaiting_retry',
    'succeeded',
    'failed',
    'deleted'
);

-- One id space for both tables: a job keeps its id when it moves to history.
CREATE SEQUENCE pgqml.job_id_seq AS bigint;

CREATE TABLE pgqml.jobs (
    id               bigint PRIMARY KEY DEFAULT nextval('pgqml.job_id_seq'),
    method           text NOT NULL,
    queue            text NOT NULL DEFAULT 'default',
    payload          jsonb NOT NULL DEFAULT '{}',
    state            pgqml.job_state NOT NULL DEFAULT 'enqueued',
    priority         integer NOT NULL DEFAULT 0,
    -- number of claims so far; the running attempt while processing
    attempt          integer NOT NULL DEFAULT 0,
    -- total number of executions allowed
    max_attempts     integer NOT NULL DEFAULT 5,
    -- when the job is due: enqueue time for enqueued jobs, the scheduled time
    -- for scheduled jobs, the retry time for awaiting_retry jobs
    run_at           timestamptz NOT NULL DEFAULT now(),
    created_at       timestamptz NOT NULL DEFAULT now(),
    started_at       timestamptz,
    finished_at      timestamptz,
    -- who holds the job while processing, and until when (database clock)
    lease_owner      text,
    lease_expires_at timestamptz,
    last_error       text,
    last_traceback   text,
    result           jsonb,
    -- at most one live job per key (see jobs_unique_key_idx)
    unique_key       text,
    metadata         jsonb NOT NULL DEFAULT '{}',
    tags             text[] NOT NULL DEFAULT '{}',
    -- attempts that ended because the worker was lost (lease expired)
    lost_count       integer NOT NULL DEFAULT 0,
    -- when a finished job may be deleted by cleanup
    expires_at       timestamptz,
    CONSTRAINT jobs_method_check CHECK (
        octet_length(method) BETWEEN 1 AND 63 AND method ~ '^[A-Za-z_][A-Za-z0-9_.:-]*$'),
    CONSTRAINT jobs_queue_check CHECK (
        octet_length(queue) BETWEEN 1 AND 63 AND queue ~ '^[A-Za-z_][A-Za-z0-9_.:-]*$'),
    CONSTRAINT jobs_payload_check CHECK (jsonb_typeof(payload) = 'object'),
    CONSTRAINT jobs_priority_check CHECK (priority BETWEEN -1000 AND 1000),
    CONSTRAINT jobs_max_attempts_check CHECK (max_attempts >= 1),
    CONSTRAINT jobs_attempt_check CHECK (attempt >= 0 AND lost_count >= 0),
    CONSTRAINT jobs_unique_key_check CHECK (octet_length(unique_key) BETWEEN 1 AND 255),
    CONSTRAINT jobs_metadata_check CHECK (
        jsonb_typeof(metadata) = 'object' AND array_position(tags, NULL) IS NULL),
    CONSTRAINT jobs_state_check CHECK (
        state IN ('enqueued', 'scheduled', 'processing', 'awaiting_retry')),
    -- a processing job always has an owner and a lease; no other live job has one
    CONSTRAINT jobs_lease_check CHECK (
        (state = 'processing') = (lease_owner IS NOT NULL AND lease_expires_at IS NOT NULL))
) WITH (
    -- the hot table churns: vacuum it early and without throttling
    autovacuum_vacuum_scale_factor = 0.02,
    autovacuum_vacuum_cost_delay = 0,
    fillfactor = 90
);

-- Claim path, ready jobs: equality on queue, then the claim order. Only
-- enqueued rows are in it, so it stays as small as the ready backlog.
CREATE INDEX jobs_ready_idx ON pgqml.jobs (queue, priority DESC, run_at, id)
    WHERE state = 'enqueued';

-- Claim path, scheduled and retrying jobs: a range scan on run_at <= now()
-- reads only the due ones, however many are scheduled in the future.
CREATE INDEX jobs_due_idx ON pgqml.jobs (queue, run_at)
    WHERE state IN ('scheduled', 'awaiting_retry');

-- Lease rescue: expired leases of processing jobs.
CREATE INDEX jobs_lease_idx ON pgqml.jobs (lease_expires_at)
    WHERE state = 'processing';

-- Unique jobs: at most one live job per key. Finished jobs have left this
-- table, so a finished job never blocks a new one with the same key.
CREATE UNIQUE INDEX jobs_unique_key_idx ON pgqml.jobs (unique_key)
    WHERE unique_key IS NOT NULL;

CREATE TABLE pgqml.job_history (
    id               bigint PRIMARY KEY,
    method           text NOT NULL,
    queue            text NOT NULL,
    payload          jsonb NOT NULL,
    state            pgqml.job_state NOT NULL,
    priority         integer NOT NULL,
    attempt          integer NOT NULL,
    max_attempts     integer NOT NULL,
    run_at           timestamptz NOT NULL,
    created_at       timestamptz NOT NULL,
    started_at       timestamptz,
    finished_at      timestamptz NOT NULL DEFAULT now(),
    lease_owner      text,
    lease_expires_at timestamptz,
    last_error       text,
    last_traceback   text,
    result           jsonb,
    unique_key       text,
    metadata         jsonb NOT NULL DEFAULT '{}',
    tags             text[] NOT NULL DEFAULT '{}',
    lost_count       integer NOT NULL DEFAULT 0,
    expires_at       timestamptz,
    CONSTRAINT job_history_state_check CHECK (state IN ('succeeded', 'failed', 'deleted'))
);

-- TTL cleanup deletes by expires_at.
CREATE INDEX job_history_expires_idx ON pgqml.job_history (expires_at)
    WHERE expires_at IS NOT NULL;
-- Dashboard: recent finished jobs by state.
CREATE INDEX job_history_state_finished_idx ON pgqml.job_history (state, finished_at DESC);

-- Every job, live or finished, with the same columns.
CREATE VIEW pgqml.all_jobs AS
    SELECT * FROM pgqml.jobs
    UNION ALL
    SELECT * FROM pgqml.job_history;

-- Recurring (cron) templates.
CREATE TABLE pgqml.recurring_jobs (
    id            text PRIMARY KEY CHECK (octet_length(id) BETWEEN 1 AND 255),
    cron          text NOT NULL,
    timezone      text NOT NULL DEFAULT 'UTC',
    method        text NOT NULL CHECK (
        octet_length(method) BETWEEN 1 AND 63 AND method ~ '^[A-Za-z_][A-Za-z0-9_.:-]*$'),
    queue         text NOT NULL DEFAULT 'default' CHECK (
        octet_length(queue) BETWEEN 1 AND 63 AND queue ~ '^[A-Za-z_][A-Za-z0-9_.:-]*$'),
    payload       jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(payload) = 'object'),
    priority      integer NOT NULL DEFAULT 0 CHECK (priority BETWEEN -1000 AND 1000),
    max_attempts  integer NOT NULL DEFAULT 5 CHECK (max_attempts >= 1),
    enabled       boolean NOT NULL DEFAULT true,
    next_run_at   timestamptz NOT NULL,
    last_run_at   timestamptz,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX recurring_jobs_due_idx ON pgqml.recurring_jobs (next_run_at) WHERE enabled;

-- One row per fired cron tick: the primary key lets any number of servers try
-- to fire a tick and exactly one succeed, without a leader and without
-- depending on how long the spawned job is retained.
CREATE TABLE pgqml.recurring_runs (
    recurring_id  text NOT NULL REFERENCES pgqml.recurring_jobs (id) ON DELETE CASCADE,
    tick_at       timestamptz NOT NULL,
    job_id        bigint,
    fired_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (recurring_id, tick_at)
);

-- Server registry: one row per running server, kept alive by heartbeats.
CREATE TABLE pgqml.servers (
    id                text PRIMARY KEY,
    name              text NOT NULL,
    host              text NOT NULL,
    pid               integer NOT NULL,
    queues            text[] NOT NULL DEFAULT '{}',
    concurrency       integer NOT NULL CHECK (concurrency >= 1),
    metadata          jsonb NOT NULL DEFAULT '{}',
    started_at        timestamptz NOT NULL DEFAULT now(),
    last_heartbeat_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX servers_heartbeat_idx ON pgqml.servers (last_heartbeat_at);

-- Named locks with an expiry (a user-facing utility; also used by maintenance).
CREATE TABLE pgqml.locks (
    name        text PRIMARY KEY CHECK (octet_length(name) BETWEEN 1 AND 255),
    owner       text NOT NULL,
    acquired_at timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL
);
CREATE INDEX locks_expires_idx ON pgqml.locks (expires_at);

-- ---------------------------------------------------------------------------
-- The state machine. Mirrors pgqml/states.py TRANSITIONS; a test checks all 49
-- pairs. A plain SQL CASE so the planner inlines it where it is used.
CREATE FUNCTION pgqml.transition_allowed(from_state pgqml.job_state, to_state pgqml.job_state)
RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
    SELECT CASE from_state
        WHEN 'enqueued' THEN to_state IN ('processing', 'failed', 'deleted', 'scheduled')
        WHEN 'processing' THEN
            to_state IN ('succeeded', 'failed', 'deleted', 'awaiting_retry', 'enqueued')
        WHEN 'scheduled' THEN to_state IN ('enqueued', 'processing', 'deleted')
        WHEN 'awaiting_retry' THEN to_state IN ('enqueued', 'processing', 'deleted')
        WHEN 'failed' THEN to_state IN ('enqueued', 'deleted', 'awaiting_retry')
        WHEN 'succeeded' THEN to_state IN ('deleted')
        ELSE false
    END
$$;

-- Raises PQ201 unless from_state -> to_state is allowed. For procedures that
-- move jobs between the hot and history tables.
CREATE FUNCTION pgqml.check_transition(from_state pgqml.job_state, to_state pgqml.job_state)
RETURNS void
LANGUAGE plpgsql IMMUTABLE
AS $$
BEGIN
    IF from_state IS NULL OR to_state IS NULL
       OR NOT pgqml.transition_allowed(from_state, to_state) THEN
        RAISE EXCEPTION 'Invalid transition % -> %', from_state, to_state
            USING ERRCODE = 'PQ201',
                  HINT = 'See pgqml.transition_allowed() for the allowed transitions.';
    END IF;
END
$$;

CREATE FUNCTION pgqml.reject_invalid_transition()
RETURNS trigger
LANGUAGE plpgsql
AS $$
BEGIN
    RAISE EXCEPTION 'Invalid transition % -> % for job %', OLD.state, NEW.state, OLD.id
        USING ERRCODE = 'PQ201',
              HINT = 'See pgqml.transition_allowed() for the allowed transitions.';
END
$$;

-- Guards direct UPDATEs of the hot table. The WHEN clause is evaluated inline,
-- so the trigger function runs only for a forbidden transition: valid updates
-- (every claim) pay no PL/pgSQL call.
CREATE TRIGGER jobs_state_guard
    BEFORE UPDATE OF state ON pgqml.jobs
    FOR EACH ROW
    WHEN (OLD.state IS DISTINCT FROM NEW.state
          AND NOT pgqml.transition_allowed(OLD.state, NEW.state))
    EXECUTE FUNCTION pgqml.reject_invalid_transition();

-- ---------------------------------------------------------------------------
-- Wakeup. One NOTIFY per INSERT statement and ready queue, never one per row
-- (NOTIFY takes a global lock at commit and de-duplicates per transaction, so
-- per-row notifies serialise bulk inserts). The payload is the queue name only.
-- Jobs scheduled for later do not notify: workers find them when due.
-- Notifications are a hint; workers also poll.
CREATE FUNCTION pgqml.notify_jobs_inserted()
RETURNS trigger
LANGUAGE plpgsql
AS $$
DECLARE
    v_queue text;
BEGIN
    FOR v_queue IN
        SELECT DISTINCT n.queue FROM new_jobs n WHERE n.state = 'enqueued'
    LOOP
        PERFORM pg_notify('pgqml_jobs', v_queue);
    END LOOP;
    RETURN NULL;
END
$$;

CREATE TRIGGER jobs_notify_insert
    AFTER INSERT ON pgqml.jobs
    REFERENCING NEW TABLE AS new_jobs
    FOR EACH STATEMENT
    EXECUTE FUNCTION pgqml.notify_jobs_inserted();

-- ---------------------------------------------------------------------------
-- Input validation shared by the enqueue functions.

-- The payload size limit in bytes (of the stored jsonb value):
-- SET pgqml.max_payload_bytes, e.g. ALTER DATABASE app SET pgqml.max_payload_bytes = 4194304.
CREATE FUNCTION pgqml.max_payload_bytes()
RETURNS integer
LANGUAGE sql STABLE PARALLEL SAFE
AS $$
    SELECT coalesce(nullif(current_setting('pgqml.max_payload_bytes', true), '')::integer,
                    1048576)
$$;

-- NULL when the job input is valid, else {sqlstate, message}. Plain SQL so that
-- the bulk path evaluates it inline, row by row, without a PL/pgSQL call.
CREATE FUNCTION pgqml.job_input_error_v1(
    p_method text,
    p_queue text,
    p_payload jsonb,
    p_priority integer,
    p_max_attempts integer,
    p_unique_key text,
    p_metadata jsonb,
    p_tags text[],
    p_max_payload_bytes integer
)
RETURNS text[]
-- STABLE, not IMMUTABLE: format() and pg_column_size() are stable, and a body
-- more volatile than its declaration would stop the planner from inlining it.
LANGUAGE sql STABLE PARALLEL SAFE
AS $$
    SELECT CASE
        WHEN p_method IS NULL OR octet_length(p_method) NOT BETWEEN 1 AND 63
             OR p_method !~ '^[A-Za-z_][A-Za-z0-9_.:-]*$' THEN
            ARRAY['PQ102', format('Invalid method name %L: 1 to 63 bytes of letters, digits and'
                                  ' _ . : -, starting with a letter or _', p_method)]
        WHEN p_queue IS NULL OR octet_length(p_queue) NOT BETWEEN 1 AND 63
             OR p_queue !~ '^[A-Za-z_][A-Za-z0-9_.:-]*$' THEN
            ARRAY['PQ101', format('Invalid queue name %L: 1 to 63 bytes of letters, digits and'
                                  ' _ . : -, starting with a letter or _', p_queue)]
        WHEN p_payload IS NULL OR jsonb_typeof(p_payload) <> 'object' THEN
            ARRAY['PQ105', format('Invalid payload: a JSON object is required, got %s',
                                  coalesce(jsonb_typeof(p_payload), 'NULL'))]
        WHEN pg_column_size(p_payload) > p_max_payload_bytes THEN
            ARRAY['PQ106', format('Payload is %s bytes, over the limit of %s bytes'
                                  ' (pgqml.max_payload_bytes)',
                                  pg_column_size(p_payload), p_max_payload_bytes)]
        WHEN p_priority IS NULL OR p_priority NOT BETWEEN -1000 AND 1000 THEN
            ARRAY['PQ103', format('Invalid priority %s: an integer from -1000 to 1000'
                                  ' is required', coalesce(p_priority::text, 'NULL'))]
        WHEN p_max_attempts IS NULL OR p_max_attempts < 1 THEN
            ARRAY['PQ104', format('Invalid max_attempts %s: an integer of at least 1'
                                  ' is required', coalesce(p_max_attempts::text, 'NULL'))]
        WHEN p_unique_key IS NOT NULL AND octet_length(p_unique_key) NOT BETWEEN 1 AND 255 THEN
            ARRAY['PQ108', 'Invalid unique_key: 1 to 255 bytes of text']
        WHEN p_metadata IS NULL OR jsonb_typeof(p_metadata) <> 'object' THEN
            ARRAY['PQ109', 'Invalid metadata: a JSON object is required']
        WHEN p_tags IS NULL OR array_position(p_tags, NULL) IS NOT NULL THEN
            ARRAY['PQ109', 'Invalid tags: an array of non-null strings is required']
    END
$$;

CREATE FUNCTION pgqml.raise_input_error_v1(p_error text[], p_context text DEFAULT NULL)
RETURNS boolean
LANGUAGE plpgsql IMMUTABLE
AS $$
BEGIN
    IF p_error IS NULL THEN
        RETURN true;
    END IF;
    RAISE EXCEPTION '%', coalesce(p_context || ': ', '') || p_error[2]
        USING ERRCODE = p_error[1];
END
$$;

-- ---------------------------------------------------------------------------
-- Enqueue, one job. Returns the new job's id, or the id of the live job that
-- already holds unique_key. run_at, when given, wins over delay; both default
-- to now (the database clock). A job due later is 'scheduled', else 'enqueued'.
CREATE FUNCTION pgqml.enqueue_v1(
    p_method text,
    p_payload jsonb,
    p_queue text,
    p_priority integer,
    p_run_at timestamptz,
    p_delay interval,
    p_max_attempts integer,
    p_unique_key text,
    p_metadata jsonb,
    p_tags text[]
)
RETURNS bigint
LANGUAGE plpgsql
AS $$
DECLARE
    v_id bigint;
    v_run_at timestamptz;
    v_error text[];
BEGIN
    v_error := pgqml.job_input_error_v1(
        p_method, p_queue, p_payload, p_priority, p_max_attempts, p_unique_key,
        p_metadata, p_tags, pgqml.max_payload_bytes());
    IF v_error IS NOT NULL THEN
        RAISE EXCEPTION '%', v_error[2] USING ERRCODE = v_error[1];
    END IF;
    IF p_delay < interval '0' THEN
        RAISE EXCEPTION 'Invalid delay %: it must not be negative', p_delay
            USING ERRCODE = 'PQ107';
    END IF;
    IF p_run_at = 'infinity'::timestamptz OR p_run_at = '-infinity'::timestamptz THEN
        RAISE EXCEPTION 'Invalid run_at %: a finite time is required', p_run_at
            USING ERRCODE = 'PQ107';
    END IF;
    v_run_at := coalesce(p_run_at, now() + coalesce(p_delay, interval '0'));

    LOOP
        INSERT INTO pgqml.jobs AS j (
            method, queue, payload, state, priority, run_at, max_attempts,
            unique_key, metadata, tags)
        VALUES (
            p_method, p_queue, p_payload,
            CASE WHEN v_run_at > now() THEN 'scheduled' ELSE 'enqueued' END::pgqml.job_state,
            p_priority, v_run_at, p_max_attempts, p_unique_key, p_metadata, p_tags)
        ON CONFLICT (unique_key) WHERE unique_key IS NOT NULL DO NOTHING
        RETURNING j.id INTO v_id;
        IF v_id IS NOT NULL THEN
            RETURN v_id;
        END IF;
        -- The key belongs to a live job: return it. Each statement sees the
        -- latest committed data, so if that job finished in between, the next
        -- INSERT succeeds.
        SELECT j.id INTO v_id FROM pgqml.jobs j WHERE j.unique_key = p_unique_key;
        IF v_id IS NOT NULL THEN
            RETURN v_id;
        END IF;
    END LOOP;
END
$$;

-- The public, stable SQL entry point:
--   SELECT pgqml.enqueue('send_email', '{"to": "a@b.c"}', queue => 'emails');
CREATE FUNCTION pgqml.enqueue(
    method text,
    payload jsonb DEFAULT '{}',
    queue text DEFAULT 'default',
    priority integer DEFAULT 0,
    run_at timestamptz DEFAULT NULL,
    delay interval DEFAULT NULL,
    max_attempts integer DEFAULT 5,
    unique_key text DEFAULT NULL,
    metadata jsonb DEFAULT '{}',
    tags text[] DEFAULT '{}'
)
RETURNS bigint
LANGUAGE sql
AS $$
    SELECT pgqml.enqueue_v1(method, payload, queue, priority, run_at, delay, max_attempts,
                            unique_key, metadata, tags)
$$;

-- ---------------------------------------------------------------------------
-- Enqueue many jobs in one statement. p_jobs is a JSON array of objects with
-- the keys method (required), payload, queue, priority, run_at (ISO 8601 with an
-- offset), delay (seconds), max_attempts, unique_key, metadata and tags. Returns
-- one id per input element, in input order (the existing job's id for a
-- unique_key that is taken, also within the batch). One NOTIFY per queue.
CREATE FUNCTION pgqml.enqueue_many_v1(p_jobs jsonb)
RETURNS SETOF bigint
LANGUAGE plpgsql
AS $$
DECLARE
    v_ids bigint[];
    v_inserted boolean[];
    v_keys text[];
    v_limit integer := pgqml.max_payload_bytes();
    v_job jsonb;
    v_id bigint;
    i integer;
BEGIN
    IF p_jobs IS NULL OR jsonb_typeof(p_jobs) <> 'array' THEN
        RAISE EXCEPTION 'Invalid jobs: a JSON array of job objects is required'
            USING ERRCODE = 'PQ100';
    END IF;
    IF jsonb_array_length(p_jobs) = 0 THEN
        RETURN;
    END IF;

    BEGIN
        WITH input AS MATERIALIZED (
            SELECT t.ord,
                   nextval('pgqml.job_id_seq') AS id,
                   r.method,
                   coalesce(r.queue, 'default') AS queue,
                   coalesce(r.payload, '{}') AS payload,
                   coalesce(r.priority, 0) AS priority,
                   coalesce(r.run_at, now() + make_interval(secs => coalesce(r.delay, 0)))
                       AS run_at,
                   r.delay,
                   coalesce(r.max_attempts, 5) AS max_attempts,
                   r.unique_key,
                   coalesce(r.metadata, '{}') AS metadata,
                   coalesce(r.tags, '{}') AS tags,
                   jsonb_typeof(t.e) AS element_type
            FROM jsonb_array_elements(p_jobs) WITH ORDINALITY AS t(e, ord)
            CROSS JOIN LATERAL jsonb_to_record(
                CASE WHEN jsonb_typeof(t.e) = 'object' THEN t.e ELSE '{}' END) AS r(
                    method text, queue text, payload jsonb, priority integer,
                    run_at timestamptz, delay double precision, max_attempts integer,
                    unique_key text, metadata jsonb, tags text[])
        ),
        validated AS MATERIALIZED (
            SELECT i.*,
                   CASE
                       WHEN i.element_type <> 'object' THEN
                           ARRAY['PQ100', 'a JSON object is required, got ' || i.element_type]
                       WHEN i.delay < 0 THEN
                           ARRAY['PQ107', 'Invalid delay ' || i.delay
                                          || ': it must not be negative']
                       WHEN i.run_at IN ('infinity', '-infinity') THEN
                           ARRAY['PQ107', 'Invalid run_at: a finite time is required']
                       ELSE pgqml.job_input_error_v1(
                           i.method, i.queue, i.payload, i.priority, i.max_attempts,
                           i.unique_key, i.metadata, i.tags, v_limit)
                   END AS error
            FROM input i
        ),
        -- The PL/pgSQL raise runs only for an invalid row (OR evaluates left to
        -- right), so valid rows cost no function call.
        checked AS (
            SELECT v.*
            FROM validated v
            WHERE v.error IS NULL
               OR pgqml.raise_input_error_v1(v.error, 'job ' || (v.ord - 1))
        ),
        ins AS (
            INSERT INTO pgqml.jobs AS j (
                id, method, queue, payload, state, priority, run_at, max_attempts,
                unique_key, metadata, tags)
            SELECT c.id, c.method, c.queue, c.payload,
                   CASE WHEN c.run_at > now() THEN 'scheduled' ELSE 'enqueued'
                   END::pgqml.job_state,
                   c.priority, c.run_at, c.max_attempts, c.unique_key, c.metadata, c.tags
            FROM checked c
            ORDER BY c.ord
            ON CONFLICT (unique_key) WHERE unique_key IS NOT NULL DO NOTHING
            RETURNING j.id
        )
        SELECT array_agg(i.id ORDER BY i.ord),
               array_agg(ins.id IS NOT NULL ORDER BY i.ord),
               array_agg(i.unique_key ORDER BY i.ord)
        INTO v_ids, v_inserted, v_keys
        FROM input i LEFT JOIN ins ON ins.id = i.id;
    EXCEPTION
        WHEN invalid_text_representation OR invalid_datetime_format
             OR datetime_field_overflow OR numeric_value_out_of_range
             OR invalid_parameter_value OR array_subscript_error
             OR invalid_binary_representation THEN
            RAISE EXCEPTION 'Invalid job in bulk input: %', SQLERRM
                USING ERRCODE = 'PQ100',
                      HINT = 'Each job is an object with method, payload, queue, priority,'
                             ' run_at, delay, max_attempts, unique_key, metadata, tags.';
    END;

    -- Jobs whose unique_key was taken: return the holder's id.
    FOR i IN 1 .. array_length(v_ids, 1) LOOP
        CONTINUE WHEN v_inserted[i];
        v_id := NULL;
        SELECT j.id INTO v_id FROM pgqml.jobs j WHERE j.unique_key = v_keys[i];
        v_ids[i] := v_id;
        IF v_id IS NULL THEN
            -- The holder finished since the INSERT: enqueue this one on its own.
            v_job := p_jobs -> (i - 1);
            v_ids[i] := pgqml.enqueue_v1(
                v_job ->> 'method',
                coalesce(v_job -> 'payload', '{}'),
                coalesce(v_job ->> 'queue', 'default'),
                coalesce((v_job ->> 'priority')::integer, 0),
                (v_job ->> 'run_at')::timestamptz,
                make_interval(secs => coalesce((v_job ->> 'delay')::double precision, 0)),
                coalesce((v_job ->> 'max_attempts')::integer, 5),
                v_keys[i],
                coalesce(v_job -> 'metadata', '{}'),
                coalesce(ARRAY(SELECT jsonb_array_elements_text(v_job -> 'tags')), '{}'));
        END IF;
    END LOOP;

    RETURN QUERY SELECT unnest(v_ids);
END
$$;

-- The public, stable SQL bulk entry point:
--   SELECT * FROM pgqml.enqueue_many('[{"method": "a", "payload": {"n": 1}}, ...]');
CREATE FUNCTION pgqml.enqueue_many(jobs jsonb)
RETURNS SETOF bigint
LANGUAGE sql
AS $$
    SELECT pgqml.enqueue_many_v1(jobs)
$$;
