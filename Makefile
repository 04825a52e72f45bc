# shelfsight: the two commands are `make demo` and `make test`.
PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
DEMO_OUT ?= demo-out
# A device install beside the full one: .[edge] alone, numpy 2 (tests/test_edge_install.py runs it)
EDGE_VENV ?= .venv-edge
EDGE_STAMP := $(EDGE_VENV)/.installed
export TF_USE_LEGACY_KERAS := 1

.PHONY: install edge-venv demo demo-sync test test-fast peers clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt -e ".[edge,annoy,plots,server,s3,kiosk,train,onnx,dev]"
	# tflite-support: its metadata schema only; tf2onnx: the benchmark's onnxruntime comparison.
	# Both declare protobuf 3.20, which clashes with onnx2tf's pin; what they use runs on 4.25 (see README).
	$(BIN)/python -m pip install -q --no-deps -c constraints.txt tflite-support tf2onnx
	# [onnx] pulls OpenCV's GUI build beside the core's headless one; both provide cv2, the last
	# installed owns it: the GUI build, so `run --show` works on a developer's machine.
	$(BIN)/python -m pip install -q --no-deps --force-reinstall -c constraints.txt opencv-python
	touch $(STAMP)

install: $(STAMP)

# not editable (a device install is a copy): rebuilt when the code changes too
EDGE_SRC := $(shell find shelfsight edge tools -name '*.py' -o -name '*.sql' -o -path '*/static/*' -type f)
$(EDGE_STAMP): pyproject.toml constraints-edge.txt $(EDGE_SRC)
	rm -rf $(EDGE_VENV) && $(PYTHON) -m venv $(EDGE_VENV)
	$(EDGE_VENV)/bin/python -m pip install -q -c constraints-edge.txt ".[edge]"
	touch $(EDGE_STAMP)

edge-venv: $(EDGE_STAMP)

demo: $(STAMP)
	$(BIN)/shelfsight demo --out $(DEMO_OUT)

# The demo, then its events sent through a durable outbox to the reference sync server on loopback.
demo-sync: $(STAMP)
	$(BIN)/shelfsight demo --out $(DEMO_OUT) --sync

test: $(STAMP) $(EDGE_STAMP)
	$(BIN)/python -m pytest -q -p no:cacheprovider

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow"

# Peer runtimes for `shelfsight bench --compare` (MediaPipe needs numpy 2: its own venv).
peers:
	bash tools/peers/setup_env.sh

clean:
	rm -rf $(DEMO_OUT) .pytest_cache
