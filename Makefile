# Two commands on a fresh machine: `make demo` and `make test` (both install everything: the core
# and every extra). `make test-core` builds a core-only venv outside the checkout (no torch, Ray,
# Milvus, pandas or pyarrow) and runs there every test that needs no extra; CI runs all three.
PY := .venv/bin/python
STAMP := .venv/.installed-stamp
PIP := -m pip install -q --disable-pip-version-check
# The core-only venv: outside the checkout, so nothing in it can be picked up by the full one.
CORE_VENV ?= $(or $(TMPDIR),/tmp)/facetool-core-venv
EXTRA_MARKERS := not (train or milvus or ray)

.PHONY: install demo test test-avx2 test-core core-venv bench

$(STAMP): requirements.txt requirements-train.txt requirements-milvus.txt requirements-ray.txt requirements-nodeps.txt requirements-dev.txt pyproject.toml
	test -x $(PY) || python3 -m venv .venv
	# The project itself, editable, with every extra ([all]: train, milvus, ray) and the test tools.
	$(PY) $(PIP) -e '.[all]' -r requirements-dev.txt
	# facenet-pytorch's own pins are stale; see requirements-nodeps.txt.
	$(PY) $(PIP) --no-deps -r requirements-nodeps.txt
	# MTCNN's and SFace's ONNX files, into the cache directory ($$FACETOOL_CACHE or
	# ~/.cache/facetool), so no identify has to build them (neither step imports torch).
	$(PY) -m recognizer.detection.networks
	$(PY) -m recognizer.embedding.sface_onnx
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(PY) demo.py

test: install
	$(PY) -m pytest -q -p no:cacheprovider tests

# torch picks its CPU kernels at start-up (AVX-512 where the CPU has it, else AVX2), and their
# float sums differ; the numeric tests compare exactly within one run, so on an AVX-512 machine
# run them a second time on the AVX2 kernels that most users' CPUs get.
NUMERIC_TESTS := tests/test_determinism.py tests/test_detection_recall.py tests/test_detect_embed.py tests/test_facenet.py
test-avx2: install
	ATEN_CPU_CAPABILITY=avx2 $(PY) -m pytest -q -p no:cacheprovider $(NUMERIC_TESTS)

# A fresh core-only venv: `pip install .` (what a user gets), its size and install time printed;
# then the test tools (not part of the measured size).
core-venv:
	rm -rf $(CORE_VENV)
	python3 -m venv $(CORE_VENV)
	@start=$$(date +%s); $(CORE_VENV)/bin/python $(PIP) . && \
	  echo "core install: $$(( $$(date +%s) - start )) s, $$(du -sh $(CORE_VENV) | cut -f1) ($(CORE_VENV))"
	@! $(CORE_VENV)/bin/python -c "import torch" 2>/dev/null || { echo "torch is importable in the core venv"; exit 1; }
	$(CORE_VENV)/bin/python $(PIP) -r requirements-dev.txt

# Every test that needs no extra, in the core venv, on the checkout's code, with the extras truly
# absent: an import of an optional package on the default path fails here.
test-core: core-venv
	FACETOOL_CACHE=$(CORE_VENV)/cache $(CORE_VENV)/bin/python -m pytest -q -p no:cacheprovider -m "$(EXTRA_MARKERS)" tests

bench: install
	$(PY) benchmarks/speed.py
