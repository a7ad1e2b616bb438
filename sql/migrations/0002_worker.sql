-- 0002_worker: the stored procedures of the worker engine.
--
-- Every procedure that writes to a claimed job is fenced on
-- (job id, attempt, lease owner): a worker that no longer owns the attempt it
-- is writing about (its lease expired and the job was rescued, re-claimed,
-- cancelled or released) changes nothing. All times come from the database
-- clock; workers send durations, never timestamps (except an explicit
-- retry-at chosen by user code).
--
-- New error codes:
--   PQ110 invalid worker call (owner, limit, lease, array lengths)

-- ---------------------------------------------------------------------------
-- Queues with jobs waiting (enqueued, scheduled or awaiting retry): a loose
-- index scan, one probe of jobs_ready_idx / jobs_due_idx per distinct queue,
-- not a scan of the live rows.
CREATE FUNCTION pgqml.active_queues_v1()
RETURNS text[]
LANGUAGE sql STABLE
AS $$
    SELECT ARRAY(
        WITH RECURSIVE ready(queue) AS (
            (SELECT j.queue FROM pgqml.jobs j WHERE j.state = 'enqueued'
             ORDER BY j.queue LIMIT 1)
            UNION ALL
            SELECT (SELECT j.queue FROM pgqml.jobs j
                    WHERE j.state = 'enqueued' AND j.queue > r.queue
                    ORDER BY j.queue LIMIT 1)
            FROM ready r WHERE r.queue IS NOT NULL
        ),
        due(queue) AS (
            (SELECT j.queue FROM pgqml.jobs j
             WHERE j.state IN ('scheduled', 'awaiting_retry')
             ORDER BY j.queue LIMIT 1)
            UNION ALL
            SELECT (SELECT j.queue FROM pgqml.jobs j
                    WHERE j.state IN ('scheduled', 'awaiting_retry') AND j.queue > d.queue
                    ORDER BY j.queue LIMIT 1)
            FROM due d WHERE d.queue IS NOT NULL
        )
        SELECT queue FROM ready WHERE queue IS NOT NULL
        UNION
        SELECT queue FROM due WHERE queue IS NOT NULL
        ORDER BY 1)
$$;

-- ---------------------------------------------------------------------------
-- Claim. Returns each claimed job (the columns of its new row) and the
-- state it was claimed from. Up to p_limit due jobs of the given queues (NULL: every queue) and
-- methods (NULL: every method), in priority, due time, id order; each claimed
-- job becomes 'processing', owned by p_owner, with a lease of p_lease_seconds
-- from the database clock and attempt + 1.
--
-- Why it is written this way:
-- * One index range per queue (a LATERAL per queue), so the ready-job scan
--   walks jobs_ready_idx in its own order (queue = q, priority DESC, run_at,
--   id) and stops after p_limit rows, however large the backlog; an
--   `queue = ANY(...)` predicate would make the planner sort every ready row.
-- * Scheduled and retrying jobs are claimed straight from jobs_due_idx with
--   run_at <= now(): a range scan that reads only the due rows, however many
--   are scheduled for later, and no promoter tick between due and runnable.
-- * FOR UPDATE SKIP LOCKED inside each LATERAL, so concurrent claimers split
--   the rows between them instead of queueing on the same ones.
-- * The chosen ids are a MATERIALIZED CTE: without the fence the planner may
--   run the LIMIT subquery as the inner side of a nested loop and update more
--   rows than asked for (Oban's engines/basic.ex documents the same trap).
-- * Methods the worker does not know are filtered out, never claimed, so a
--   mixed fleet or a rolling deploy never fails them.
CREATE FUNCTION pgqml.fetch_jobs_v1(
    p_owner text,
    p_queues text[],
    p_methods text[],
    p_limit integer,
    p_lease_seconds double precision
)
RETURNS TABLE (
    id bigint,
    method text,
    queue text,
    payload jsonb,
    state pgqml.job_state,
    priority integer,
    attempt integer,
    max_attempts integer,
    run_at timestamptz,
    created_at timestamptz,
    started_at timestamptz,
    finished_at timestamptz,
    lease_owner text,
    lease_expires_at timestamptz,
    last_error text,
    last_traceback text,
    result jsonb,
    unique_key text,
    metadata jsonb,
    tags text[],
    lost_count integer,
    expires_at timestamptz,
    previous_state pgqml.job_state
)
LANGUAGE plpgsql
-- Planned once per connection. Re-planning on every call cost ~0.45 ms of a
-- 1.4 ms claim, but a generic plan must not depend on the values it does not
-- know: an earlier version joined the picked ids to pgqml.jobs, and its
-- generic plan (expecting ~2,000 picked rows) hash-joined them with a
-- sequential scan of the whole table. So the claim takes its rows in two
-- steps (lock and pick; update by `id = ANY`), and sequential and bitmap
-- scans are off: every scan of pgqml.jobs is an ordered walk of an index.
SET plan_cache_mode = force_generic_plan
SET enable_seqscan = off
SET enable_bitmapscan = off
AS $$
DECLARE
    v_queues text[] := p_queues;
    v_ids bigint[];
    v_states pgqml.job_state[];
BEGIN
    IF p_owner IS NULL OR octet_length(p_owner) NOT BETWEEN 1 AND 255 THEN
        RAISE EXCEPTION 'Invalid lease owner %: 1 to 255 bytes of text', p_owner
            USING ERRCODE = 'PQ110';
    END IF;
    IF p_limit IS NULL OR p_limit NOT BETWEEN 1 AND 10000 THEN
        RAISE EXCEPTION 'Invalid claim limit %: an integer from 1 to 10000', p_limit
            USING ERRCODE = 'PQ110';
    END IF;
    IF p_lease_seconds IS NULL OR NOT p_lease_seconds > 0 THEN
        RAISE EXCEPTION 'Invalid lease %: a positive number of seconds', p_lease_seconds
            USING ERRCODE = 'PQ110';
    END IF;

    IF v_queues IS NULL THEN
        v_queues := pgqml.active_queues_v1();
    END IF;

    WITH candidates AS (
        SELECT c.id, c.priority, c.run_at, c.state
        FROM unnest(v_queues) AS q(queue)
        CROSS JOIN LATERAL (
            SELECT j.id, j.priority, j.run_at, j.state
            FROM pgqml.jobs j
            WHERE j.queue = q.queue
              AND j.state = 'enqueued'
              AND (p_methods IS NULL OR j.method = ANY (p_methods))
            ORDER BY j.priority DESC, j.run_at, j.id
            LIMIT p_limit
            FOR UPDATE SKIP LOCKED
        ) c
        UNION ALL
        SELECT c.id, c.priority, c.run_at, c.state
        FROM unnest(v_queues) AS q(queue)
        CROSS JOIN LATERAL (
            SELECT j.id, j.priority, j.run_at, j.state
            FROM pgqml.jobs j
            WHERE j.queue = q.queue
              AND j.state IN ('scheduled', 'awaiting_retry')
              AND j.run_at <= now()
              AND (p_methods IS NULL OR j.method = ANY (p_methods))
            ORDER BY j.run_at
            LIMIT p_limit
            FOR UPDATE SKIP LOCKED
        ) c
    )
    SELECT array_agg(p.id), array_agg(p.state) INTO v_ids, v_states
    FROM (SELECT c.id, c.state FROM candidates c
          ORDER BY c.priority DESC, c.run_at, c.id
          LIMIT p_limit) p;
    IF v_ids IS NULL THEN
        RETURN;
    END IF;

    -- The rows are locked (FOR UPDATE above, same transaction): update them
    -- by primary key.
    RETURN QUERY
    WITH claimed AS (
        UPDATE pgqml.jobs j
        SET state = 'processing',
            attempt = j.attempt + 1,
            lease_owner = p_owner,
            lease_expires_at = now() + make_interval(secs => p_lease_seconds),
            started_at = now()
        WHERE j.id = ANY (v_ids)
        -- Plain columns, not the whole row: a composite would be taken apart
        -- again field by field by the caller.
        RETURNING j.id, j.method, j.queue, j.payload, j.state, j.priority, j.attempt,
                  j.max_attempts, j.run_at, j.created_at, j.started_at, j.finished_at,
                  j.lease_owner, j.lease_expires_at, j.last_error, j.last_traceback,
                  j.result, j.unique_key, j.metadata, j.tags, j.lost_count, j.expires_at
    )
    SELECT c.*, p.state
    FROM claimed c JOIN unnest(v_ids, v_states) AS p(id, state) ON p.id = c.id;
END
$$;

-- Raises PQ110 unless every array has the length of the first. A NULL array
-- stands for a column that is NULL in every row (unnest pads it with NULLs).
CREATE FUNCTION pgqml.check_batch_v1(p_what text, VARIADIC p_lengths integer[])
RETURNS void
LANGUAGE plpgsql IMMUTABLE
AS $$
BEGIN
    IF p_lengths[1] IS NULL OR EXISTS (SELECT 1 FROM unnest(p_lengths) l
                                       WHERE l IS NOT NULL AND l <> p_lengths[1]) THEN
        RAISE EXCEPTION 'Invalid % batch: all arrays must have the same length, got %',
            p_what, p_lengths USING ERRCODE = 'PQ110';
    END IF;
END
$$;

-- ---------------------------------------------------------------------------
-- Record the outcome of many attempts in one statement. For each i:
--   p_outcomes[i] = 'succeeded': move to history with p_results[i];
--   'failed': move to history with the error and traceback;
--   'retry': back to awaiting_retry, due at p_run_at[i], or now() +
--            p_delays[i] seconds on the database clock.
-- Only rows still 'processing' with the same attempt and owner change; the
-- ids and new states of those rows are returned, so the caller knows which
-- writes were fenced out. Finished rows get expires_at = now() + TTL.
CREATE FUNCTION pgqml.complete_jobs_v1(
    p_owner text,
    p_ids bigint[],
    p_attempts integer[],
    p_outcomes text[],
    p_results jsonb[],
    p_errors text[],
    p_tracebacks text[],
    p_run_at timestamptz[],
    p_delays double precision[],
    p_succeeded_ttl interval DEFAULT interval '1 day',
    p_failed_ttl interval DEFAULT interval '7 days'
)
RETURNS TABLE (id bigint, state pgqml.job_state)
LANGUAGE plpgsql
-- a hash join on the primary key, whatever the statistics say (see complete_jobs_v1);
-- with nested loops and sequential scans off, the generic plan is that plan too,
-- so it is planned once per connection
SET enable_nestloop = off
SET enable_mergejoin = off
SET enable_seqscan = off
SET plan_cache_mode = force_generic_plan
AS $$
BEGIN
    PERFORM pgqml.check_batch_v1('completion',
        cardinality(p_ids), cardinality(p_attempts), cardinality(p_outcomes),
        cardinality(p_results), cardinality(p_errors), cardinality(p_tracebacks),
        cardinality(p_run_at), cardinality(p_delays));
    IF EXISTS (SELECT 1 FROM unnest(p_outcomes) o
               WHERE o IS NULL OR o NOT IN ('succeeded', 'failed', 'retry')) THEN
        RAISE EXCEPTION 'Invalid outcome in %: succeeded, failed or retry', p_outcomes
            USING ERRCODE = 'PQ110';
    END IF;

    -- Why a hash join, forced by the SET clauses of this function: joined by
    -- nested loop, the plan depends on statistics that are wrong whenever
    -- ANALYZE ran while nothing was processing (no row has a lease_owner), and
    -- the planner then walks the jobs side and re-reads the input for every
    -- row: with 15,000 jobs in flight a batch of 500 took seconds, a heartbeat
    -- of 10,000 half a minute. With nested loops off, the rows are found by
    -- primary key (`id = ANY`) and matched to the input through a hash table:
    -- the cost follows the batch, never the table. The fence reads
    -- `lease_owner = p_owner`, which jobs_lease_check makes equivalent to
    -- "still processing".
    RETURN QUERY
    WITH retried AS (
        UPDATE pgqml.jobs j
        SET state = 'awaiting_retry',
            run_at = coalesce(i.run_at,
                              now() + make_interval(secs => greatest(coalesce(i.delay, 0), 0))),
            lease_owner = NULL,
            lease_expires_at = NULL,
            last_error = i.error,
            last_traceback = i.traceback
        FROM unnest(p_ids, p_attempts, p_outcomes, p_errors, p_tracebacks, p_run_at, p_delays)
            AS i(id, attempt, outcome, error, traceback, run_at, delay)
        WHERE i.outcome = 'retry'
          AND j.id = ANY (p_ids) AND j.id = i.id AND j.attempt = i.attempt
          AND j.lease_owner = p_owner
        RETURNING j.id, j.state
    ),
    finished AS (
        DELETE FROM pgqml.jobs j
        USING unnest(p_ids, p_attempts, p_outcomes, p_results, p_errors, p_tracebacks)
            AS i(id, attempt, outcome, result, error, traceback)
        WHERE i.outcome IN ('succeeded', 'failed')
          AND j.id = ANY (p_ids) AND j.id = i.id AND j.attempt = i.attempt
          AND j.lease_owner = p_owner
        RETURNING j.*, i.outcome, i.result AS new_result, i.error, i.traceback
    ),
    moved AS (
        INSERT INTO pgqml.job_history AS h (
            id, method, queue, payload, state, priority, attempt, max_attempts, run_at,
            created_at, started_at, finished_at, lease_owner, lease_expires_at, last_error,
            last_traceback, result, unique_key, metadata, tags, lost_count, expires_at)
        SELECT f.id, f.method, f.queue, f.payload, f.outcome::pgqml.job_state, f.priority,
               f.attempt, f.max_attempts, f.run_at, f.created_at, f.started_at, now(),
               f.lease_owner, NULL,
               CASE WHEN f.outcome = 'failed' THEN f.error ELSE f.last_error END,
               CASE WHEN f.outcome = 'failed' THEN f.traceback ELSE f.last_traceback END,
               f.new_result, f.unique_key, f.metadata, f.tags, f.lost_count,
               now() + CASE WHEN f.outcome = 'failed' THEN p_failed_ttl
                            ELSE p_succeeded_ttl END
        FROM finished f
        RETURNING h.id, h.state
    )
    SELECT r.id, r.state FROM retried r
    UNION ALL
    SELECT m.id, m.state FROM moved m;
END
$$;

-- ---------------------------------------------------------------------------
-- Heartbeat: mark the server alive and extend the leases of the attempts it
-- still runs. Returns whether the server row exists (a server that was
-- pruned while paused registers again) and the ids whose lease was renewed;
-- an id missing from that list was rescued, cancelled or finished elsewhere,
-- and its worker must stop acting on it.
CREATE FUNCTION pgqml.heartbeat_v1(
    p_server_id text,
    p_ids bigint[],
    p_attempts integer[],
    p_lease_seconds double precision
)
RETURNS TABLE (server_known boolean, renewed bigint[])
LANGUAGE plpgsql
-- a hash join on the primary key, whatever the statistics say (see complete_jobs_v1);
-- with nested loops and sequential scans off, the generic plan is that plan too,
-- so it is planned once per connection
SET enable_nestloop = off
SET enable_mergejoin = off
SET enable_seqscan = off
SET plan_cache_mode = force_generic_plan
AS $$
DECLARE
    v_known boolean;
    v_renewed bigint[];
BEGIN
    PERFORM pgqml.check_batch_v1('heartbeat', cardinality(p_ids), cardinality(p_attempts));
    IF p_lease_seconds IS NULL OR NOT p_lease_seconds > 0 THEN
        RAISE EXCEPTION 'Invalid lease %: a positive number of seconds', p_lease_seconds
            USING ERRCODE = 'PQ110';
    END IF;
    UPDATE pgqml.servers s SET last_heartbeat_at = now() WHERE s.id = p_server_id;
    v_known := FOUND;
    WITH renewed AS (
        UPDATE pgqml.jobs j
        SET lease_expires_at = now() + make_interval(secs => p_lease_seconds)
        FROM unnest(p_ids, p_attempts) AS t(id, attempt)
        WHERE j.id = ANY (p_ids) AND j.id = t.id AND j.attempt = t.attempt
          AND j.lease_owner = p_server_id
        RETURNING j.id
    )
    SELECT coalesce(array_agg(r.id), '{}') INTO v_renewed FROM renewed r;
    RETURN QUERY SELECT v_known, v_renewed;
END
$$;

-- ---------------------------------------------------------------------------
-- Give claimed jobs back (graceful shutdown): 'enqueued' again, at their old
-- place in the queue, the attempt not charged. Fenced like every write. One
-- NOTIFY per queue so idle workers take them at once.
CREATE FUNCTION pgqml.release_jobs_v1(p_owner text, p_ids bigint[], p_attempts integer[])
RETURNS SETOF bigint
LANGUAGE plpgsql
-- a hash join on the primary key, whatever the statistics say (see complete_jobs_v1);
-- with nested loops and sequential scans off, the generic plan is that plan too,
-- so it is planned once per connection
SET enable_nestloop = off
SET enable_mergejoin = off
SET enable_seqscan = off
SET plan_cache_mode = force_generic_plan
AS $$
DECLARE
    v_ids bigint[];
    v_queues text[];
    v_queue text;
BEGIN
    PERFORM pgqml.check_batch_v1('release', cardinality(p_ids), cardinality(p_attempts));
    WITH released AS (
        UPDATE pgqml.jobs j
        SET state = 'enqueued',
            attempt = j.attempt - 1,
            lease_owner = NULL,
            lease_expires_at = NULL
        FROM unnest(p_ids, p_attempts) AS t(id, attempt)
        WHERE j.id = ANY (p_ids) AND j.id = t.id AND j.attempt = t.attempt
          AND j.lease_owner = p_owner
        RETURNING j.id, j.queue
    )
    SELECT coalesce(array_agg(r.id), '{}'), coalesce(array_agg(DISTINCT r.queue), '{}')
    INTO v_ids, v_queues FROM released r;
    FOREACH v_queue IN ARRAY v_queues LOOP
        PERFORM pg_notify('pgqml_jobs', v_queue);
    END LOOP;
    RETURN QUERY SELECT unnest(v_ids);
END
$$;

-- ---------------------------------------------------------------------------
-- Rescue attempts whose lease expired (the worker was killed, its machine
-- vanished, or it was paused past the lease). Any live server may call it;
-- SKIP LOCKED lets several do so at once. The lost attempt stays counted,
-- lost_count goes up and "worker lost" is recorded as its error. A job with
-- attempts left is enqueued again (and its queue notified); one without is
-- moved to history as failed. Returns the rescued ids and their new states.
-- The UPDATE and DELETE re-check the lease, so a job whose owner completed
-- or renewed it after the scan is left alone (River #1302).
CREATE FUNCTION pgqml.rescue_jobs_v1(
    p_limit integer DEFAULT 1000,
    p_failed_ttl interval DEFAULT interval '7 days'
)
RETURNS TABLE (id bigint, state pgqml.job_state)
LANGUAGE plpgsql
AS $$
DECLARE
    v_ids bigint[];
    v_states pgqml.job_state[];
    v_queues text[];
    v_queue text;
BEGIN
    WITH expired AS MATERIALIZED (
        SELECT j.id
        FROM pgqml.jobs j
        WHERE j.state = 'processing' AND j.lease_expires_at < now()
        ORDER BY j.lease_expires_at
        LIMIT p_limit
        FOR UPDATE SKIP LOCKED
    ),
    retried AS (
        UPDATE pgqml.jobs j
        SET state = 'enqueued',
            run_at = now(),
            lost_count = j.lost_count + 1,
            last_error = format('worker lost: %s stopped renewing its lease, which expired at %s',
                                j.lease_owner, j.lease_expires_at),
            last_traceback = NULL,
            lease_owner = NULL,
            lease_expires_at = NULL
        FROM expired e
        WHERE j.id = e.id AND j.state = 'processing' AND j.lease_expires_at < now()
          AND j.attempt < j.max_attempts
        RETURNING j.id, j.queue, j.state
    ),
    dead AS (
        DELETE FROM pgqml.jobs j
        USING expired e
        WHERE j.id = e.id AND j.state = 'processing' AND j.lease_expires_at < now()
          AND j.attempt >= j.max_attempts
        RETURNING j.*
    ),
    moved AS (
        INSERT INTO pgqml.job_history AS h (
            id, method, queue, payload, state, priority, attempt, max_attempts, run_at,
            created_at, started_at, finished_at, lease_owner, lease_expires_at, last_error,
            last_traceback, result, unique_key, metadata, tags, lost_count, expires_at)
        SELECT d.id, d.method, d.queue, d.payload, 'failed', d.priority, d.attempt,
               d.max_attempts, d.run_at, d.created_at, d.started_at, now(), d.lease_owner,
               NULL,
               format('worker lost: %s stopped renewing its lease, which expired at %s;'
                      ' no attempts left (%s of %s)',
                      d.lease_owner, d.lease_expires_at, d.attempt, d.max_attempts),
               NULL, NULL, d.unique_key, d.metadata, d.tags, d.lost_count + 1,
               now() + p_failed_ttl
        FROM dead d
        RETURNING h.id, h.queue, h.state
    )
    SELECT coalesce(array_agg(x.id), '{}'), coalesce(array_agg(x.state), '{}'),
           coalesce(array_agg(DISTINCT x.queue) FILTER (WHERE x.state = 'enqueued'), '{}')
    INTO v_ids, v_states, v_queues
    FROM (SELECT r.id, r.queue, r.state FROM retried r
          UNION ALL
          SELECT m.id, m.queue, m.state FROM moved m) x;

    FOREACH v_queue IN ARRAY v_queues LOOP
        PERFORM pg_notify('pgqml_jobs', v_queue);
    END LOOP;
    RETURN QUERY SELECT * FROM unnest(v_ids, v_states);
END
$$;

-- ---------------------------------------------------------------------------
-- Server registry.

-- Record (or refresh) a running server.
CREATE FUNCTION pgqml.register_server_v1(
    p_id text,
    p_name text,
    p_host text,
    p_pid integer,
    p_queues text[],
    p_concurrency integer,
    p_metadata jsonb DEFAULT '{}'
)
RETURNS void
LANGUAGE sql
AS $$
    INSERT INTO pgqml.servers AS s (id, name, host, pid, queues, concurrency, metadata)
    VALUES (p_id, p_name, p_host, p_pid, coalesce(p_queues, '{}'), p_concurrency,
            coalesce(p_metadata, '{}'))
    ON CONFLICT (id) DO UPDATE
    SET name = excluded.name, host = excluded.host, pid = excluded.pid,
        queues = excluded.queues, concurrency = excluded.concurrency,
        metadata = excluded.metadata, last_heartbeat_at = now()
$$;

-- Remove a server on clean exit.
CREATE FUNCTION pgqml.deregister_server_v1(p_id text)
RETURNS boolean
LANGUAGE sql
AS $$
    WITH gone AS (DELETE FROM pgqml.servers s WHERE s.id = p_id RETURNING 1)
    SELECT EXISTS (SELECT 1 FROM gone)
$$;

-- Forget servers silent for longer than p_timeout. Their jobs need no help
-- from here: rescue goes by job lease, not by server row, so pruning a row
-- can never hide a job (procrastinate #1518).
CREATE FUNCTION pgqml.prune_servers_v1(p_timeout interval)
RETURNS integer
LANGUAGE sql
AS $$
    WITH gone AS (
        DELETE FROM pgqml.servers s WHERE s.last_heartbeat_at < now() - p_timeout RETURNING 1)
    SELECT count(*)::integer FROM gone
$$;

-- ---------------------------------------------------------------------------
-- Per-queue backlog for metrics, cheap at any table size: ready jobs are
-- counted exactly up to p_cap (an index-only range), beyond that the
-- planner's estimate is used; the oldest ready job is found with one index
-- probe per distinct priority (a loose index scan) plus one probe of the due
-- range. No count(*) over the whole table.
CREATE FUNCTION pgqml.queue_stats_v1(p_queues text[], p_cap integer DEFAULT 10000)
RETURNS TABLE (queue text, ready bigint, exact boolean, oldest_ready_at timestamptz)
LANGUAGE plpgsql
AS $$
DECLARE
    v_queue text;
    v_ready bigint;
    v_due bigint;
    v_oldest timestamptz;
    v_oldest_due timestamptz;
    v_plan json;
BEGIN
    FOREACH v_queue IN ARRAY coalesce(p_queues, '{}') LOOP
        SELECT count(*) INTO v_ready FROM (
            SELECT 1 FROM pgqml.jobs j
            WHERE j.queue = v_queue AND j.state = 'enqueued' LIMIT p_cap + 1) s;
        SELECT count(*) INTO v_due FROM (
            SELECT 1 FROM pgqml.jobs j
            WHERE j.queue = v_queue AND j.state IN ('scheduled', 'awaiting_retry')
              AND j.run_at <= now() LIMIT p_cap + 1) s;
        exact := v_ready <= p_cap AND v_due <= p_cap;
        IF v_ready > p_cap THEN
            EXECUTE format('EXPLAIN (FORMAT JSON) SELECT 1 FROM pgqml.jobs'
                           ' WHERE queue = %L AND state = %L', v_queue, 'enqueued')
                INTO v_plan;
            v_ready := greatest(v_ready, (v_plan -> 0 -> 'Plan' ->> 'Plan Rows')::bigint);
        END IF;
        WITH RECURSIVE prio(priority) AS (
            (SELECT j.priority FROM pgqml.jobs j
             WHERE j.queue = v_queue AND j.state = 'enqueued'
             ORDER BY j.priority DESC LIMIT 1)
            UNION ALL
            SELECT (SELECT j.priority FROM pgqml.jobs j
                    WHERE j.queue = v_queue AND j.state = 'enqueued' AND j.priority < p.priority
                    ORDER BY j.priority DESC LIMIT 1)
            FROM prio p WHERE p.priority IS NOT NULL
        )
        SELECT min((SELECT j.run_at FROM pgqml.jobs j
                    WHERE j.queue = v_queue AND j.state = 'enqueued'
                      AND j.priority = p.priority
                    ORDER BY j.priority DESC, j.run_at LIMIT 1))
        INTO v_oldest
        FROM prio p WHERE p.priority IS NOT NULL;
        SELECT j.run_at INTO v_oldest_due FROM pgqml.jobs j
        WHERE j.queue = v_queue AND j.state IN ('scheduled', 'awaiting_retry')
          AND j.run_at <= now()
        ORDER BY j.run_at LIMIT 1;
        queue := v_queue;
        ready := v_ready + v_due;
        oldest_ready_at := CASE WHEN v_oldest IS NULL THEN v_oldest_due
                                WHEN v_oldest_due IS NULL THEN v_oldest
                                ELSE least(v_oldest, v_oldest_due) END;
        RETURN NEXT;
    END LOOP;
END
$$;
