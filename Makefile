# Two entry points for a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PLUGIN_PROJECTS := $(wildcard plugins/*/pyproject.toml)
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: demo test install clean

install: $(VENV)/.editable

# Third-party packages: re-installed only when the lock file changes.
$(VENV)/.locked: requirements.lock
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps -r requirements.lock
	touch $@

# The core and every first-party plugin, editable, each from its own pyproject.toml.
$(VENV)/.editable: $(VENV)/.locked pyproject.toml $(PLUGIN_PROJECTS)
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation \
		-e . $(foreach p,$(PLUGIN_PROJECTS),-e $(dir $(p)))
	touch $@

demo: install
	$(PY) examples/demo.py

# lint-imports: the import contracts of pyproject.toml [tool.importlinter] (plugins use the SDK, ...)
# pytest-xdist, one test file per worker at a time (module fixtures are built once): much of the suite
# waits on subprocesses and imports, so 2 workers on 2 cores (AMD EPYC, AVX2) take ~9-10 min instead
# of ~16-20. Each worker gets its share of the CPUs as torch / OpenMP threads (conftest.py).
# TEST_WORKERS=0 runs it serially.
TEST_WORKERS ?= 2
test: install
	$(VENV)/bin/lint-imports
	$(PY) -m pytest -q --durations=25 -n $(TEST_WORKERS) --dist loadfile

clean:
	rm -rf $(VENV) .pytest_cache
