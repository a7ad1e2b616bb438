.PHONY: help test test-pure lint bench ci

help:  ## list targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

test:  ## run the test suite (PGQML_TEST_DSN, else testcontainers, else embedded Postgres)
	pytest

test-pure:  ## unit tests under the pure-Python implementation
	PGQML_IMPL=python pytest tests/unit

lint:  ## ruff and mypy
	ruff check . && ruff format --check . && mypy

bench:  ## enqueue and decode benchmarks against $$PGQML_DSN
	python bench/decode_speed.py
	python bench/enqueue_throughput.py --dsn "$${PGQML_DSN:?set PGQML_DSN}"

ci:  ## what CI runs
	bash .ci/run
