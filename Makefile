# webadmin — `make run` serves the console; `make test` runs the whole suite.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
FLASK := $(BIN)/flask --app webadmin
HTMX_VERSION := 2.0.11
HTMX := static/vendor/htmx/htmx.min.js

.PHONY: run test lint install assets migrate worker clean bench

run: install assets migrate ## serve the console on http://127.0.0.1:5000 with an in-process worker
	$(FLASK) serve --host 127.0.0.1 --port 5000

# Two xdist workers (the machine has two cores); the browser tests run last, as one group on one worker.
PYTEST_WORKERS ?= 2
test: install assets ## the whole suite (SQLite; PostgreSQL when WEBADMIN_TEST_DATABASE_URL is set)
	$(BIN)/pytest -n $(PYTEST_WORKERS) --dist loadgroup --no-loadscope-reorder $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check .

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

assets: $(HTMX)

# htmx comes from the npm registry at set-up (never from a CDN); the folder is git-ignored.
$(HTMX):
	@command -v npm >/dev/null || { echo "npm is needed once to fetch htmx (apt-get install npm)"; exit 1; }
	rm -rf .htmx-pack && mkdir -p .htmx-pack static/vendor/htmx
	cd .htmx-pack && npm pack --silent htmx.org@$(HTMX_VERSION) >/dev/null && tar -xzf htmx.org-$(HTMX_VERSION).tgz
	cp .htmx-pack/package/dist/htmx.min.js .htmx-pack/package/LICENSE static/vendor/htmx/
	rm -rf .htmx-pack

migrate: install
	$(FLASK) db upgrade

worker: install migrate ## a queue consumer on its own (run any number, on any machine)
	$(FLASK) worker

bench: install assets ## every benchmark in bench/ (figures go to docs/benchmarks.md by hand)
	$(BIN)/pip install --quiet -e '.[dev,bench]'
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) static/vendor .pytest_cache test-artifacts
