# The README's two commands: `make demo` and `make test`. Both create .venv and
# install what is missing on a fresh machine with only Python 3.11+.
PYTHON ?= $(shell command -v python3.11 || command -v python3.12 || command -v python3.13 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# the demo needs only the runtime dependencies, not the dev tools
RUNTIME := $(VENV)/.runtime

.PHONY: bench-peers-setup bench-domain demo kafka test test-cluster test-long test-unit test-integration browser lint format bench bench-api bench-model bench-stream bench-webhooks soak soak-cluster clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Python 3.11+ is required"'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

$(RUNTIME): pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Python 3.11+ is required"'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e .
	touch $(RUNTIME)

demo: $(RUNTIME) kafka
	$(BIN)/mastery dev

# The broker-fault tests on a 3-node Kafka cluster (~5-7 minutes) and the
# long Faust-correction scenarios (marker "long") have their own targets;
# .ci/run runs test-long after test.
test: $(STAMP) browser kafka
	$(BIN)/python -m pytest -q -m "not cluster and not long"

test-cluster: $(STAMP) kafka
	$(BIN)/python -m pytest -q -rP --durations=3 -m cluster tests/reliability/test_cluster_faults.py

test-long: $(STAMP) kafka
	$(BIN)/python -m pytest -q -rP --durations=5 -m "cluster or long"

# Apache Kafka, the broker the demo, the tests and the benchmarks run: fetched
# once by mvn (app/devstack/kafka-pom.xml) into ~/.cache/mastery, offline after that.
# Needs Java 17+ and Maven; says what to install when either is missing.
kafka: $(RUNTIME)
	@$(BIN)/python -m app.devstack.embedded_kafka fetch

# The dashboard's browser tests drive Debian's chromium and chromedriver with
# Selenium; installed here when missing (as root, or through sudo), never
# downloaded at run time.
browser:
	@command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1 || { \
	  echo "installing chromium and chromium-driver (apt-get) for the browser tests"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium chromium-driver >/dev/null; }

test-unit: $(STAMP)
	$(BIN)/python -m pytest -q tests/unit

test-integration: $(STAMP)
	$(BIN)/python -m pytest -q tests/integration

lint: $(STAMP)
	$(BIN)/ruff check app processors api schemas infra tests bench
	$(BIN)/ruff format --check app processors api schemas infra tests bench
	$(BIN)/mypy

format: $(STAMP)
	$(BIN)/ruff format app processors api schemas infra tests bench
	$(BIN)/ruff check --fix app processors api schemas infra tests bench

bench: $(STAMP)
	$(BIN)/python -m bench.pipeline --out docs/benchmarks.md
	$(BIN)/python -m bench.api --out docs/benchmarks.md
	$(BIN)/python -m bench.webhooks --rate 1000 --seconds 60 --out docs/benchmarks.md

# The read path alone (valkey + mastery api + wrk): needs wrk (Debian package).
bench-api: $(STAMP)
	$(BIN)/python -m bench.api --out docs/benchmarks.md

bench-stream: $(STAMP)
	$(BIN)/python -m bench.streams --out docs/benchmarks.md

# Issue 21, point 1: status changes from the event to a webhook receiver (~2 min).
bench-webhooks: $(STAMP)
	$(BIN)/python -m bench.webhooks --rate 1000 --seconds 60 --out docs/benchmarks.md

soak: $(STAMP)
	$(BIN)/python -m bench.crash_soak --seeds 1-12

# The same soak on a 3-broker Apache Kafka cluster (RF 3, min.insync.replicas=2).
soak-cluster: $(STAMP)
	$(BIN)/python -m bench.crash_soak --seeds 1-12 --cluster

# The Quix Streams peer for `make bench`'s side-by-side run (../shared/peers).
bench-peers-setup:
	test -x quixvenv/bin/python || $(PYTHON) -m venv quixvenv
	quixvenv/bin/pip install --quiet quixstreams==3.28.1 redis

bench-domain: $(STAMP)
	$(BIN)/python -m bench.domain

.PHONY: bench-forecast
bench-forecast: $(STAMP)
	$(BIN)/python -m bench.forecast --out docs/benchmarks.md

bench-model: $(STAMP)
	$(BIN)/python -m bench.model_calibration --learners 1000 --seed 7 --out docs/model-calibration.md

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
