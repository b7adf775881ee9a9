# Helm chart, kustomize manifests and container images (issue 5). Included by the top Makefile.
# checkov pins old boto3/packaging, so it lives in its own venv, built here for `make test`.
CHECKOV_VENV ?= .venv-checkov
CHECKOV_STAMP := $(CHECKOV_VENV)/.installed-stamp
CHECKOV_VERSION ?= 3.3.30
TEST_DEPS += $(CHECKOV_STAMP)

.PHONY: checkov manifests helm-test

$(CHECKOV_STAMP): mk/helm.mk
	test -x $(CHECKOV_VENV)/bin/python || $(PYTHON) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/python -m pip install -q --upgrade pip
	$(CHECKOV_VENV)/bin/python -m pip install -q checkov==$(CHECKOV_VERSION)
	$(CHECKOV_VENV)/bin/checkov --version
	touch $(CHECKOV_STAMP)

checkov: $(CHECKOV_STAMP)

# Render manifests/ (kustomize base + overlays) from helm/alignpipe; commit the result.
manifests: $(STAMP)
	$(PY) scripts/render_manifests.py

# The chart's own tests (the slow pip-install proof of the image is marked `slow`).
helm-test: $(STAMP) $(CHECKOV_STAMP)
	$(PY) -m pytest tests/helm -q
