# Every target installs what it needs first (system packages, a venv, the project); all idempotent.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.napari-xt-installed
# torch 2.14.1 / torchvision 0.29.1: timm imports torchvision, and the CPU-only torch wheel
# breaks it; this pair is the one that works together (and lies on this machine's disk).
TORCH := torch==2.14.1 torchvision==0.29.1

.PHONY: setup demo test napari bench bench-context bench-suite lint typecheck clean check-minimum

setup: $(STAMP)

$(STAMP): pyproject.toml scripts/install-system-deps.sh
	scripts/install-system-deps.sh
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH)
	$(PY) -m pip install -q -e '.[napari,dev,bench]' $(TORCH)
	touch $@

demo: setup
	$(VENV)/bin/xt demo --out out/demo --overwrite

test: setup
	$(PY) -m pytest

# the engine's CPU tests on the oldest versions pyproject.toml admits (Python 3.11, torch 2.4)
check-minimum:
	scripts/check-minimum.sh

napari: setup
	$(PY) -m napari_xt

bench: setup
	$(PY) benchmarks/model_zoo.py --out out/bench
	$(PY) benchmarks/readers.py --out out/bench
	$(PY) benchmarks/streaming.py --out out/bench
	$(PY) benchmarks/streaming.py --model xt_swinv2_tiny_txl --sizes 4096 --naive-max 0 --out out/bench/swinv2
	$(PY) benchmarks/throughput_breakdown.py --out out/bench
	$(PY) benchmarks/seams.py --out out/bench
	$(PY) benchmarks/tissue.py --out out/bench
	$(PY) benchmarks/batch.py --out out/bench
	$(PY) benchmarks/export_memory.py --out out/bench
	$(PY) benchmarks/fair_share.py --out out/bench
	$(PY) benchmarks/cpu_precision.py --out out/bench
	$(PY) benchmarks/feature_cache.py --out out/bench
	xvfb-run -a -s "-screen 0 1600x1000x24" $(PY) benchmarks/napari_latency.py --out out/bench

bench-context: setup
	$(PY) benchmarks/context_task.py --out out/bench

bench-suite: setup
	$(PY) benchmarks/context_suite.py --kinds none transformer_xl:bi --steps 2500 --out out/bench

lint: setup
	$(VENV)/bin/ruff check src tests benchmarks scripts

# also a gate inside `make test` (tests/xt_engine/test_quality_gates.py)
typecheck: setup
	$(VENV)/bin/mypy src

clean:
	rm -rf out artifacts .pytest_cache .ruff_cache .mypy_cache
