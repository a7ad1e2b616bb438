-- Named statements of the worker engine (pgqml/worker/server.py). Each calls
-- a versioned stored procedure of sql/migrations/0002_worker.sql.

-- name: fetch_jobs
-- Claim up to `limit` due jobs of these queues and methods, leased to `owner`.
-- The job columns come first (row_to_job reads them), the previous state last.
SELECT {job_columns}, previous_state::text
FROM pgqml.fetch_jobs_v1(%(owner)s, %(queues)s, %(methods)s, %(limit)s, %(lease)s)

-- name: complete_jobs
-- Write many attempts' outcomes at once, fenced on (id, attempt, owner).
SELECT id, state::text
FROM pgqml.complete_jobs_v1(%(owner)s, %(ids)s::bigint[], %(attempts)s::int[],
                            %(outcomes)s::text[], %(results)s::jsonb[],
                            %(errors)s::text[], %(tracebacks)s::text[],
                            %(run_at)s::timestamptz[], %(delays)s::float8[],
                            make_interval(secs => %(succeeded_ttl)s),
                            make_interval(secs => %(failed_ttl)s))

-- name: heartbeat
-- Mark the server alive and renew the leases of its running attempts.
SELECT server_known, renewed
FROM pgqml.heartbeat_v1(%(server_id)s, %(ids)s::bigint[], %(attempts)s::int[], %(lease)s)

-- name: release_jobs
-- Give claimed jobs back to the queue, attempt not charged (graceful shutdown).
SELECT pgqml.release_jobs_v1(%(owner)s, %(ids)s::bigint[], %(attempts)s::int[])

-- name: rescue_jobs
-- Re-enqueue (or fail) attempts whose lease expired.
SELECT id, state::text FROM pgqml.rescue_jobs_v1(%(limit)s, make_interval(secs => %(failed_ttl)s))

-- name: register_server
-- Record this server in the registry.
SELECT pgqml.register_server_v1(%(id)s, %(name)s, %(host)s, %(pid)s, %(queues)s,
                                %(concurrency)s, %(metadata)s)

-- name: deregister_server
-- Remove this server from the registry on clean exit.
SELECT pgqml.deregister_server_v1(%(id)s)

-- name: prune_servers
-- Forget servers that stopped heartbeating long ago.
SELECT pgqml.prune_servers_v1(make_interval(secs => %(timeout)s))

-- name: queue_stats
-- Ready-job count and oldest ready time per queue, from index probes only.
SELECT queue, ready, exact, extract(epoch FROM now() - oldest_ready_at)
FROM pgqml.queue_stats_v1(%(queues)s, %(cap)s)

-- name: known_queues
-- Queues with waiting jobs (loose index scan), for metrics of an all-queues server.
SELECT pgqml.active_queues_v1()
