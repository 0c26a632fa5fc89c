# Two commands on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# The CPU build of torch (pip takes it from local disk here); a GPU node sets TORCH=torch.
TORCH ?= torch==2.13.0

.PHONY: install run test lint clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check '$(TORCH)'
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[worker,test]'
	touch $@

install: $(VENV)/.installed

run: install
	$(VENV)/bin/gradtrace serve

test: install
	$(PY) -m pytest -q

clean:
	rm -rf $(VENV) .pytest_cache
