# Countersign: `make run` starts the embedded server, `make test` runs the test suite.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install run test fuzz lint bench screenshots admin

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

install: $(BIN)/.installed

# ADDR=0.0.0.0:8000 listens on every interface (a phone on the same network; see README).
ADDR ?= 127.0.0.1:8000
run: install
	$(BIN)/python manage.py migrate --no-input -v 0
	$(BIN)/python manage.py bootstrap_demo
	$(BIN)/python manage.py runserver $(ADDR)

test: install
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# A long, randomized run of the endpoint fuzz suite (`make test` runs a short fixed one); FUZZ_EXAMPLES per endpoint.
FUZZ_EXAMPLES ?= 1000
fuzz: install
	COUNTERSIGN_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(BIN)/python -m pytest tests/security/test_fuzz.py -p no:cacheprovider $(PYTEST_ARGS)

# The first admin, non-interactively: DJANGO_SUPERUSER_PASSWORD if set, else a generated password printed once.
ADMIN_USERNAME ?= admin
ADMIN_EMAIL ?= admin@example.com
admin: install
	$(BIN)/python manage.py migrate --no-input -v 0
	@password="$${DJANGO_SUPERUSER_PASSWORD:-$$($(BIN)/python -c 'import secrets; print(secrets.token_urlsafe(12))')}"; \
	DJANGO_SUPERUSER_PASSWORD="$$password" $(BIN)/python manage.py createsuperuser --noinput \
	    --username '$(ADMIN_USERNAME)' --email '$(ADMIN_EMAIL)' && \
	echo "Sign in at http://127.0.0.1:8000/admin/ (with make run) as $(ADMIN_USERNAME)" && \
	if [ -z "$$DJANGO_SUPERUSER_PASSWORD" ]; then echo "password: $$password"; fi

# docs/screenshots/ from headless Chromium, at a fixed date and time (`make test` writes them to var/screenshots/).
screenshots: install
	COUNTERSIGN_SCREENSHOTS_DIR=docs/screenshots $(BIN)/python -m pytest tests/browser/test_screenshots.py -p no:cacheprovider

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports
	$(BIN)/mypy

bench: install
	$(BIN)/python -m bench
