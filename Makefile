# The two commands a newcomer needs: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

# DEBUG defaults to off (production-safe); the demo, the tests and the benchmark are
# development: DEBUG on, and keys nobody configured are generated into .dev-secrets/.
DEV := DEBUG=true

.PHONY: demo test lint venv bench clean

$(STAMP): requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	touch $(STAMP)

venv: $(STAMP)

lint: $(STAMP)
	$(VENV)/bin/ruff check .

test: lint
	$(DEV) $(PY) -m pytest $(PYTEST_ARGS)

demo: $(STAMP)
	$(DEV) $(PY) manage.py demo $(DEMO_ARGS)

bench: $(STAMP)
	$(DEV) $(PY) bench/bench_sync.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) db.sqlite3* test_db.sqlite3* .dev-secrets .pytest_cache .ruff_cache
