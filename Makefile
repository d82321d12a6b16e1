# Two commands on a fresh machine: `make demo` and `make test`.
PY := .venv/bin/python
STAMP := .venv/.installed-stamp

.PHONY: install demo test bench

$(STAMP): requirements.txt requirements-nodeps.txt requirements-dev.txt pyproject.toml
	test -x $(PY) || python3 -m venv .venv
	$(PY) -m pip install -q --disable-pip-version-check -r requirements.txt -r requirements-dev.txt
	# facenet-pytorch's own pins are stale; see requirements-nodeps.txt.
	$(PY) -m pip install -q --disable-pip-version-check --no-deps -r requirements-nodeps.txt
	# The project itself, editable: `recognizer`, `gallery`, `web` and the `facetool` command.
	$(PY) -m pip install -q --disable-pip-version-check --no-deps -e .
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(PY) demo.py

test: install
	$(PY) -m pytest -q -p no:cacheprovider tests

bench: install
	$(PY) benchmarks/speed.py
