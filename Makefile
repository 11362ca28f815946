# Flywheel: two commands on a fresh machine.
#   make demo   - install what is missing, bring the local stack up, run the main job
#   make test   - install what is missing, run the test suite against the real stack
# Both are idempotent and quick once installed.

PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.flywheel-installed

.PHONY: setup venv system demo test test-unit lint bench stack-up stack-down clean

setup: venv system
	$(BIN)/flywheel stack prepare

# Reinstall only when the dependency lists change.
$(STAMP): pyproject.toml deploy/constraints.txt
	@test -x $(BIN)/python || { $(PYTHON) deploy/local/check_disk.py $(VENV) && $(PYTHON) -m venv $(VENV); }
	$(BIN)/python -m pip install -q --upgrade pip setuptools wheel
	$(BIN)/python -m pip install -q -c deploy/constraints.txt -e '.[dev]'
	@touch $@

venv: $(STAMP)

# Debian packages the stack runs (Prometheus, Alertmanager, Java and Maven for Kafka).
system:
	@deploy/local/install-system-packages.sh

demo: setup
	$(BIN)/flywheel demo

test: setup
	@$(BIN)/python -m pytest; rc=$$?; if [ $$rc -eq 5 ]; then echo "no tests collected"; exit 0; fi; exit $$rc

test-unit: venv
	$(BIN)/python -m pytest -m "not integration and not e2e and not slow"

lint: venv
	$(BIN)/ruff check schemas streams trainer inference monitoring deploy tests bench
	$(BIN)/mypy

bench: setup
	$(BIN)/python -m bench

stack-up: setup
	$(BIN)/flywheel stack up

stack-down: venv
	$(BIN)/flywheel stack down

clean: stack-down
	rm -rf .flywheel
