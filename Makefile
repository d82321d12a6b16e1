# Two commands on a fresh machine: `make demo` and `make test`.
PY := .venv/bin/python
STAMP := .venv/.installed-stamp

.PHONY: install demo test test-avx2 bench

$(STAMP): requirements.txt requirements-nodeps.txt requirements-dev.txt pyproject.toml
	test -x $(PY) || python3 -m venv .venv
	$(PY) -m pip install -q --disable-pip-version-check -r requirements.txt -r requirements-dev.txt
	# facenet-pytorch's own pins are stale; see requirements-nodeps.txt.
	$(PY) -m pip install -q --disable-pip-version-check --no-deps -r requirements-nodeps.txt
	# The project itself, editable: `recognizer`, `gallery`, `web` and the `facetool` command.
	$(PY) -m pip install -q --disable-pip-version-check --no-deps -e .
	# MTCNN exported to ONNX and SFace converted for ONNX Runtime, into the cache directory
	# ($$FACETOOL_CACHE or ~/.cache/facetool), so no identify ever imports torch to make them.
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

bench: install
	$(PY) benchmarks/speed.py
