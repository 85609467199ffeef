# Everything a newcomer or CI needs, from a fresh clone. `make dev` and `make test` do all set-up.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup binaries dev dev-reset test unit lint crd bench soak image image-test clean

# The operator and, beside it, its test bench and offline demo (testbench/, a distribution of its own).
$(STAMP): pyproject.toml testbench/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]' -e ./testbench
	touch $(STAMP)

binaries:
	@bash hack/build-binaries.sh >/dev/null

setup: $(STAMP) binaries

dev: setup  ## control plane + Hub emulator + operator, in the foreground
	$(BIN)/sandbox-testbench dev

dev-reset: $(STAMP)  ## stop what a killed `make dev` left running and remove its state (.state/dev)
	$(BIN)/sandbox-testbench dev down
	rm -rf .state/dev

lint: $(STAMP)
	$(BIN)/ruff check operator testbench tests bench conftest.py
	$(BIN)/ruff format --check operator testbench tests bench conftest.py
	$(BIN)/mypy
	$(BIN)/lint-imports
	$(BIN)/python hack/check_sizes.py operator

# Workers: the integration tests mostly wait on the operator, the API server and the Hub emulator, so
# more workers than cores pay off. Each worker starts its own shared control plane, Hub emulator and
# operator when a test first needs them; a test file stays in one worker (--dist loadfile), so module
# fixtures, e.g. a control plane of the module's own, start once. Files are handed out in the order
# tests/conftest.py sorts them, longest first (--no-loadscope-reorder: not by their number of tests).
TEST_WORKERS ?= 4

test: setup lint  ## the whole suite, integration tests included; TEST_WORKERS=<n> parallel workers; then coverage
	$(BIN)/pytest --numprocesses=$(TEST_WORKERS) --dist=loadfile --no-loadscope-reorder --durations=20 --cov
	@$(BIN)/python hack/coverage_total.py

unit: $(STAMP)
	$(BIN)/pytest tests/unit tests/hub tests/bench tests/status testbench/tests

SCENARIO ?= overhead
N ?= 10
JSON ?= bench-results.json
MINUTES ?= 5
BENCH_ARGS ?=  # more options of bench/run.py, e.g. --build-min 6 --build-max 12

bench: setup  ## SCENARIO=overhead|hub-shape N=<sessions> JSON=<file>: ours vs the reference (bench/README.md)
	$(BIN)/python -m bench.run --scenario $(SCENARIO) --sessions $(N) --json $(JSON) $(BENCH_ARGS)

soak: setup  ## MINUTES=<m> N=<sessions>: continuous spec patches; RSS slope, errors, watch stalls
	$(BIN)/python -m bench.run --scenario soak --sessions $(N) --minutes $(MINUTES) --json $(JSON) $(BENCH_ARGS)

image: $(STAMP)  ## the operator's image from the Dockerfile, with buildah (root; docs/operations.md)
	PYTHON=$(BIN)/python bash hack/image.sh

image-test: setup  ## build the image and run it as the chart does (runc): sessions, a leader hand-over
	$(BIN)/pytest --capture=tee-sys tests/image

crd: $(STAMP)  ## regenerate the CRD and the approval policy (and the chart's copies) from the Python types
	$(BIN)/sandbox-operator crd > crds/agentsessions.yaml
	cp crds/agentsessions.yaml charts/sandbox-operator/crds/agentsessions.yaml
	$(BIN)/sandbox-operator crd --pool > crds/agentsessionpools.yaml
	cp crds/agentsessionpools.yaml charts/sandbox-operator/crds/agentsessionpools.yaml
	$(BIN)/sandbox-operator approval-policy > deploy/approval-policy.yaml
	cp deploy/approval-policy.yaml charts/sandbox-operator/files/approval-policy.yaml

clean:
	rm -rf $(VENV) .state build dist
