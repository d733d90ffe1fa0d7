# RainyModel: `make run` serves the proxy on 127.0.0.1:8000 (SQLite, no services needed); `make test` runs the suite;
# `make check` runs the checkers (ruff lint, ruff format --check, mypy; docs/development.md).
VENV := .venv
PY := $(VENV)/bin/python
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: install run test check bench profile clean

# Idempotent: the virtualenv is rebuilt only when requirements.txt changes.
install: $(VENV)/.installed

$(VENV)/.installed: requirements.txt
	@test -x $(PY) || { interpreter=$$(scripts/find-python) && "$$interpreter" -m venv $(VENV); }
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	@touch $@

# A local secret for `make run` and manage.py, made once and kept out of git; production sets SECRET_KEY.
.secret_key:
	@$(PY) -c "import secrets; print(secrets.token_urlsafe(50))" > $@

# The server's limits (header size and count, header-read deadline, connections per worker) come with the HTTP
# protocol class; the same limits apply in production through gunicorn.conf.py. See docs/security.md.
run: install .secret_key
	$(PY) manage.py migrate --noinput
	$(PY) manage.py routing load-defaults
	@echo
	@echo "RainyModel is starting on http://$(HOST):$(PORT)  (admin: /admin/, health: /health)"
	@echo "Create an API key:   $(PY) manage.py apikey create --name my-laptop"
	@echo "Create an admin:     $(PY) manage.py createsuperuser"
	@echo
	$(VENV)/bin/uvicorn rainymodel_site.asgi:application --host $(HOST) --port $(PORT) --loop uvloop \
		--http rainymodel_site.http_protocol:LimitedHttpToolsProtocol --timeout-keep-alive 5 --no-access-log

test: install
	$(PY) -m pytest $(PYTEST_ARGS)

# All three run even when one fails, so one run shows every finding; configured in pyproject.toml.
check: install
	@status=0; \
	echo "ruff check ."; $(VENV)/bin/ruff check . || status=1; \
	echo "ruff format --check ."; $(VENV)/bin/ruff format --check --output-format concise . || status=1; \
	echo "mypy"; $(VENV)/bin/mypy || status=1; \
	exit $$status

# `make bench WORKERS=2 BENCH_ARGS="--redis-url redis://127.0.0.1:6379/15"`: the production command (gunicorn) with
# 1 and 2 workers instead (bench/scaling.py); `--postgres URL` runs on PostgreSQL. docs/benchmarks.md.
bench: install
	$(PY) bench/run.py $(if $(WORKERS),--workers $(WORKERS)) $(BENCH_ARGS)

# py-spy on one worker under 32 clients (non-stream, then stream) and pyinstrument on single requests; tables and
# flame-graph files under bench/results/ (docs/benchmarks.md, "Reading a profile").
profile: install
	$(PY) bench/profile.py $(PROFILE_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache
