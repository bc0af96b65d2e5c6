# The two set-up commands of the README: `make demo` and `make test`. Each creates or reuses .venv, builds the
# interfaces with CMake into it, installs the package, then runs. Stamps make a second run skip what is done.
SHELL := /bin/bash
VENV := .venv
VENV_ABS := $(abspath $(VENV))
PY := $(VENV)/bin/python
PYTHON ?= $(shell command -v python3.11 || command -v python3)
BUILD_DIR := build
PYTEST_ARGS ?=

# DDS discovery never leaves this machine; no model hub, ever.
export ROS_AUTOMATIC_DISCOVERY_RANGE ?= LOCALHOST
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

PACKAGE_FILES := $(shell find vila_ros launch config scripts -type f ! -name '*.pyc' ! -path '*/__pycache__/*' 2>/dev/null)

.PHONY: all venv build test demo clean
all: build

venv: $(VENV)/.stamp-venv
$(VENV)/.stamp-venv: requirements.txt requirements-ml.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	# torch first, pinned to the CPU build on local disk, so nothing later can pull another one.
	$(PY) -m pip install --quiet --disable-pip-version-check torch==2.13.0
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	touch $@

build: $(VENV)/.stamp-build
$(VENV)/.stamp-build: $(VENV)/.stamp-venv CMakeLists.txt package.xml $(wildcard msg/*.msg srv/*.srv action/*.action) $(PACKAGE_FILES)
	AMENT_PREFIX_PATH=$(VENV_ABS) cmake -S . -B $(BUILD_DIR) -DCMAKE_PREFIX_PATH=$(VENV_ABS) \
	    -DCMAKE_INSTALL_PREFIX=$(VENV_ABS) -DPython3_EXECUTABLE=$(VENV_ABS)/bin/python -DBUILD_TESTING=OFF \
	    > $(BUILD_DIR).log 2>&1 || (cat $(BUILD_DIR).log; exit 1)
	cmake --build $(BUILD_DIR) -j2 >> $(BUILD_DIR).log 2>&1 || (tail -50 $(BUILD_DIR).log; exit 1)
	cmake --install $(BUILD_DIR) >> $(BUILD_DIR).log 2>&1 || (tail -50 $(BUILD_DIR).log; exit 1)
	# Our CPU kernels compile now rather than inside the first node or test that needs them (~30 s); where they
	# cannot (no AVX-512 BF16, no compiler), everything runs on aten's kernels and this only says so.
	$(PY) -m vila_ros.kernels
	touch $@

test: build
	$(PY) -m ruff check vila_ros test
	$(PY) -m pytest $(PYTEST_ARGS)

demo: build
	$(VENV)/bin/vila-ros demo

clean:
	rm -rf $(BUILD_DIR) $(BUILD_DIR).log $(VENV)/.stamp-build
