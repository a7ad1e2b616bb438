.PHONY: help test test-pure lint bench bench-compare ci

help:  ## list targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

test:  ## run the test suite (PGQML_TEST_DSN, else testcontainers, else embedded Postgres)
	pytest

test-pure:  ## unit tests under the pure-Python implementation
	PGQML_IMPL=python pytest tests/unit

lint:  ## ruff and mypy
	ruff check . && ruff format --check . && mypy

bench:  ## enqueue, decode, drain and wakeup benchmarks against $$PGQML_DSN
	python bench/decode_speed.py
	python bench/enqueue_throughput.py --dsn "$${PGQML_DSN:?set PGQML_DSN}"
	python bench/drain_throughput.py --dsn "$${PGQML_DSN:?set PGQML_DSN}" --batch 500 --concurrency 1000 --jobs 50000
	python bench/drain_throughput.py --dsn "$${PGQML_DSN:?set PGQML_DSN}" --scale --rounds 1
	python bench/wakeup_latency.py --dsn "$${PGQML_DSN:?set PGQML_DSN}"

bench-compare:  ## pgqml, pgqueuer and procrastinate side by side (needs pip install -e ".[bench]")
	python bench/compare.py --dsn "$${PGQML_DSN:?set PGQML_DSN}"

ci:  ## what CI runs
	bash .ci/run
