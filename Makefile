# Two commands take a fresh Debian machine (as root) to a working midid:
#   make demo   - install everything, import sample data into a throw-away library, show it
#   make test   - install everything, run the whole test suite
# Both are idempotent: the apt and pip steps are skipped when their stamp files are newer
# than what they depend on.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
APT_PACKAGES := libsystemd-dev pkg-config udev systemd libarchive13 libarchive-tools \
	e2fsprogs exfatprogs util-linux sqlite3 mount 7zip openssl
DEMO_DIR := $(CURDIR)/.demo
SHARED_CORPUS := $(CURDIR)/../shared/corpus

.PHONY: demo test system venv bench clean

system: $(VENV)/.system-stamp
$(VENV)/.system-stamp: Makefile
	@mkdir -p $(VENV)
	@if command -v apt-get >/dev/null 2>&1; then \
		missing=$$(for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
		if [ -n "$$missing" ]; then \
			echo "installing system packages:" $$missing; \
			SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
			$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing; \
		fi; \
	else echo "apt-get not found: install $(APT_PACKAGES) with your package manager"; fi
	@touch $@

venv: $(VENV)/.install-stamp
$(VENV)/.install-stamp: pyproject.toml $(VENV)/.system-stamp
	@[ -x $(PY) ] || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	@echo "compiling the analysis and split kernels into numba's cache (once, ~10 s)"
	$(PY) -c 'from midid.tasks import warm_up; warm_up()'
	@touch $@

demo: venv
	@rm -rf $(DEMO_DIR) && mkdir -p $(DEMO_DIR)
	@printf '[library]\npath = "%s/library"\n[control]\nsocket = "%s/midid.sock"\n' "$(DEMO_DIR)" "$(DEMO_DIR)" > $(DEMO_DIR)/midid.toml
	@if [ -d "$(SHARED_CORPUS)" ]; then src="$(SHARED_CORPUS)"; else \
		$(PY) -m midid.sample $(DEMO_DIR)/samples && src=$(DEMO_DIR)/samples; fi; \
	echo "importing $$src into a throw-away library in $(DEMO_DIR)"; \
	$(VENV)/bin/midictl --config $(DEMO_DIR)/midid.toml import "$$src"
	$(VENV)/bin/midictl --config $(DEMO_DIR)/midid.toml stats
	$(VENV)/bin/midictl --config $(DEMO_DIR)/midid.toml find --category Drums --limit 5
	$(VENV)/bin/midictl --config $(DEMO_DIR)/midid.toml find --key Am --limit 5

# Two test processes, each taking whole files (module fixtures such as the export-repeat
# daemon are made once; tests in a file never race each other): most of the slow tests wait on
# Ray, udev or a daemon rather than compute, so this halves the suite on two cores.
# TEST_WORKERS=0 runs it in one process.
TEST_WORKERS ?= 2

test: venv
	$(PY) -m pytest -q -ra -n $(TEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

bench: venv
	$(PY) -m pip install -q -e '.[bench]'
	$(PY) benchmarks/import.py
	$(PY) benchmarks/analyze.py
	$(PY) benchmarks/pipeline.py

clean:
	rm -rf $(DEMO_DIR) .pytest_cache
