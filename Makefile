# Two commands set everything up from a fresh clone:
#   make demo   - the whole product on the embedded default (SQLite, file broker, a real worker)
#   make test   - the suite on SQLite, then on PostgreSQL + Redis started on loopback
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test test-sqlite test-postgres services-start services-stop bench lint lock clean venv

venv: $(STAMP)

$(STAMP): requirements.txt requirements-dev.txt
	@command -v $(PYTHON) >/dev/null || { echo "$(PYTHON) is required"; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt -r requirements-dev.txt
	touch $(STAMP)

demo: venv
	scripts/demo.sh

test: venv
	scripts/system-deps.sh
	scripts/test.sh

services-start:
	scripts/services.sh start

services-stop:
	scripts/services.sh stop

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports

bench: venv
	scripts/bench.sh

# Recompile the pinned requirements from requirements*.in.
lock: venv
	$(VENV)/bin/pip-compile -q --strip-extras --no-emit-index-url -o requirements.txt requirements.in
	$(VENV)/bin/pip-compile -q --strip-extras --no-emit-index-url -o requirements-dev.txt requirements-dev.in

clean:
	scripts/services.sh stop || true
	rm -rf var
