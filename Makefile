# Two environments, both inside the project:
#   .venv          the toolkit (trainer, export, CLI) with the runtime installed beside it
#   .venv-runtime  the runtime alone (onnxruntime + numpy), as on a hub: its tests prove
#                  that nothing heavier is needed or imported.
PY ?= python3.11
VENV := .venv
RVENV := .venv-runtime
PIP_FLAGS := --quiet --disable-pip-version-check
RUNTIME_SOURCES := runtime/pyproject.toml $(shell find runtime/edgecast_runtime -name '*.py' 2>/dev/null)

.PHONY: demo test lint test-runtime test-toolkit test-aarch64 bench bench-fleet bench-rollout bench-shadow bench-global bench-intervals clean

$(VENV)/.installed: pyproject.toml runtime/pyproject.toml
	$(PY) -m venv $(VENV)
	$(VENV)/bin/pip install $(PIP_FLAGS) --upgrade pip
	$(VENV)/bin/pip install $(PIP_FLAGS) -e ./runtime -e '.[dev]'
	touch $@

# Not editable: the runtime tests run against the installed wheel, as a hub would.
$(RVENV)/.installed: $(RUNTIME_SOURCES)
	$(PY) -m venv $(RVENV)
	$(RVENV)/bin/pip install $(PIP_FLAGS) --upgrade pip
	$(RVENV)/bin/pip install $(PIP_FLAGS) --force-reinstall --no-deps ./runtime
	$(RVENV)/bin/pip install $(PIP_FLAGS) './runtime[mqtt,releases]' pytest hypothesis
	touch $@

demo: $(VENV)/.installed
	$(VENV)/bin/edgecast demo

# The runtime suite and the toolkit's, in two processes (the Ray modules one after the
# other in the second), run side by side (scripts/test_suites.sh says why); test-runtime
# and test-toolkit run one alone.
test: lint $(RVENV)/.installed
	bash tests/runtime/setup.sh
	bash scripts/test_suites.sh

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .

test-runtime: $(RVENV)/.installed
	bash tests/runtime/setup.sh
	$(RVENV)/bin/python -m pytest tests/runtime -q --durations=20

test-toolkit: $(VENV)/.installed
	$(VENV)/bin/python -m pytest tests/toolkit -q --durations=20

# The runtime's suite (a stated subset) and the committed models' forecasts on 64-bit ARM:
# a Debian arm64 root under qemu-user emulation, cached in /var/cache/edgecast (needs root).
test-aarch64: $(RVENV)/.installed
	bash scripts/test_aarch64.sh

# Speed, memory and size of every backend on three model sizes (about 9 minutes):
# writes benchmarks/results.json and benchmarks/results.md. --retrain: a bundle left in
# build/bench-models by an older tree would otherwise be measured as this tree's model.
bench: $(VENV)/.installed $(RVENV)/.installed
	$(VENV)/bin/python benchmarks/run.py --retrain

# The ten shared stations on Ray with 1 and 2 workers and as a plain loop of `edgecast train`
# (about 15 minutes on 2 cores; run it on a quiet machine): writes benchmarks/fleet.json and fleet.md.
bench-fleet: $(VENV)/.installed
	$(VENV)/bin/python benchmarks/fleet.py

# Fifty `edgecast-runtime mqtt --trust` hubs on one Mosquitto (passwords, ACL, TLS) through one
# `edgecast release` with a 10 % canary, readings answered all along (about 3 minutes on 2
# busy cores): writes benchmarks/rollout.json. Not part of `make test`.
bench-rollout: $(VENV)/.installed $(RVENV)/.installed
	bash tests/runtime/setup.sh
	$(VENV)/bin/python benchmarks/rollout.py

# One hub with its champion alone and with a challenger in shadow (`edgecast release --shadow`),
# alternated over 4 fresh hub processes each, on two LSTMs trained on Changping (cached in
# /tmp/edgecast-bench-shadow-models): answer latency p99 ratio and peak RSS against the unit's
# MemoryMax (about 10 minutes from nothing): writes benchmarks/shadow.json. Not part of `make test`.
bench-shadow: $(VENV)/.installed $(RVENV)/.installed
	bash tests/runtime/setup.sh
	$(VENV)/bin/python benchmarks/shadow.py

# One global model on the ten shared stations (trainer/global_model.py) against ten local ones
# (`train` per station), each training in its own one-thread child: core-seconds of the whole
# process and of the training alone, and their ratio (about 15 minutes on 2 cores; core-seconds
# hold on a busy machine, wall time does not): writes benchmarks/global.json. Not part of `make test`.
bench-global: $(VENV)/.installed
	$(VENV)/bin/python benchmarks/global_cost.py

# The same LSTM exported with and without its interval and alert probabilities (issue 23):
# the graph's latency and a `stream --state` hub's answer latency, peak RSS and state size,
# side by side in fresh runtime-only processes: writes benchmarks/intervals.json and .md.
# Not part of `make test`.
bench-intervals: $(VENV)/.installed $(RVENV)/.installed
	$(VENV)/bin/python benchmarks/intervals_cost.py

clean:
	rm -rf $(VENV) $(RVENV) build *.egg-info runtime/build runtime/*.egg-info
