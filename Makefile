# Two commands on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# The CPU build of torch (pip takes it from local disk here); a GPU node sets TORCH=torch.
TORCH ?= torch==2.13.0

.PHONY: install system run test lint clean

# Debian packages the tests drive: chromium for the dashboard's browser test (Playwright never
# downloads a browser here), docker-compose to validate docker-compose.yml without an engine.
SYSTEM_PACKAGES := chromium chromium-driver docker-compose
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check '$(TORCH)'
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[worker,test]'
	touch $@

install: $(VENV)/.installed

system:
	@if [ ! -x /usr/bin/chromium ] || ! command -v docker-compose >/dev/null; then \
		$(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $(SYSTEM_PACKAGES) >/dev/null; \
	fi

run: install
	$(VENV)/bin/gradtrace serve

test: install system
	$(PY) -m pytest -q

clean:
	rm -rf $(VENV) .pytest_cache
