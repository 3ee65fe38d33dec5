# Two commands a fresh machine needs: `make test` and `make demo`.
# The virtual environment is built once; the stamp is remade only when the
# project's metadata or the pinned versions change.
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed

.PHONY: demo test test-thorough lint gpu-check clean-venv

$(STAMP): pyproject.toml constraints.txt
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --upgrade pip
	$(VENV)/bin/python -m pip install --quiet -c constraints.txt -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/avblocks run proav_dit.demo

test: $(STAMP)
	$(VENV)/bin/python -m pytest -n 2 -q

test-thorough: $(STAMP)
	AVBLOCKS_PROFILE=thorough AVBLOCKS_SLOW=1 $(VENV)/bin/python -m pytest -n 2 -q

lint: $(STAMP)
	$(VENV)/bin/ruff check .

# Every recipe on CUDA (one GPU or all visible), FlexAttention, throughput at the 256 preset;
# says so and exits 0 without a GPU. DEVELOPERS.md: how to run it on a lent GPU machine.
gpu-check: $(STAMP)
	$(VENV)/bin/python benchmarks/gpu_check.py

clean-venv:
	rm -rf $(VENV)
