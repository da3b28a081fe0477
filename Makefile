# Every target builds what it needs from nothing: .venv (and .venv-bench for `make bench`),
# Kafka and Apicurio jars (fetched with Maven into ~/.m2 and ~/.cache/driftline on first use).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
BENCH_VENV  := .venv-bench
BENCH_STAMP := $(BENCH_VENV)/.installed

.PHONY: demo test bench venv system-deps kafka-up kafka-down kafka-status clean

venv: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/driftline demo $(ARGS)

test: $(STAMP) system-deps
	$(BIN)/python -m pytest -q --durations=25 $(PYTEST_ARGS)

# The report test renders the HTML report in headless Chromium (Debian's package); the compose
# test runs `docker compose config` (plugin built from the Go module proxy when missing). Java 17
# and Maven, for the Kafka and Apicurio tests, come with the machine; their absence fails those tests.
system-deps:
	@bash infra/compose-cli.sh
	@command -v chromium >/dev/null || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq chromium >/dev/null; \
	  else echo "chromium is missing: sudo apt-get install chromium (the report test needs it)"; fi; }

# Benchmarks run in their own environment: Evidently, the PSI baseline, needs pandas < 3.
$(BENCH_STAMP): pyproject.toml constraints.txt bench/requirements.txt
	test -x $(BENCH_VENV)/bin/python || $(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/python -m pip install --quiet --upgrade pip
	grep -v '^pandas==' constraints.txt > $(BENCH_VENV)/constraints.txt
	$(BENCH_VENV)/bin/python -m pip install --quiet -c $(BENCH_VENV)/constraints.txt -e . -r bench/requirements.txt
	touch $(BENCH_STAMP)

bench: $(BENCH_STAMP)
	$(BENCH_VENV)/bin/python -m bench $(ARGS)

kafka-up: $(STAMP)
	$(BIN)/python -m driftline.testing.kafka up

kafka-down: $(STAMP)
	$(BIN)/python -m driftline.testing.kafka down

kafka-status: $(STAMP)
	$(BIN)/python -m driftline.testing.kafka status

clean:
	rm -rf $(VENV) $(BENCH_VENV) .driftline infra/.run
