# The only entry points: people, pre-commit and CI call these targets.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)
DEMO_DB ?= syncd-demo.db

.PHONY: run test system-packages lint fmt typecheck bench bench-sources soak clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
		{ echo "syncd needs Python >= 3.11 (found $$($(PYTHON) --version))"; exit 2; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	rm -f $(VENV)/.installed-*
	touch $@

## run: set up and start the daemon against the built-in simulator (no credentials needed)
run: $(STAMP)
	$(BIN)/syncd run --simulate --database $(DEMO_DB)

## test: set up and run the whole suite
test: $(STAMP) system-packages
	$(BIN)/python -m pytest -n 2 -q

# systemd-analyze checks the shipped unit in the tests, and the publishing tests run a real
# redis-server; installs Debian's systemd and redis-server packages if missing.
system-packages:
	@sh scripts/ensure-system-packages.sh

lint: $(STAMP)
	$(BIN)/ruff check syncd tests bench
	$(BIN)/ruff format --check syncd tests bench
	$(BIN)/mypy
	$(BIN)/lint-imports

fmt: $(STAMP)
	$(BIN)/ruff format syncd tests bench
	$(BIN)/ruff check --fix syncd tests bench

typecheck: $(STAMP)
	$(BIN)/mypy

## bench: every benchmark, each printing its figures (sync, webhook ingest, jobs, Redis publish, outbound webhooks, snapshot, CLI cold start,
## catalog, an idle pass's CPU, many sources at a quick, compressed scale)
bench: $(STAMP) system-packages
	$(BIN)/python bench/sync_throughput.py
	$(BIN)/python bench/sync_throughput.py --whole-process
	$(BIN)/python bench/webhook_ingest.py
	$(BIN)/python bench/jobs.py
	$(BIN)/python bench/publish.py
	$(BIN)/python bench/outbound.py
	$(BIN)/python bench/snapshot.py
	$(BIN)/python bench/cold_start.py
	$(BIN)/python bench/catalog.py
	$(BIN)/python bench/idle_pass.py
	$(BIN)/python bench/many_sources.py --quick

## bench-sources: issue 11's figures at full scale: 1, 20 and 200 sources x 2,000 counts, 1 change per
## source per minute, one source answering 500s for a minute (about 15 minutes)
bench-sources: $(STAMP)
	$(BIN)/python bench/many_sources.py --sources 200 --counts 2000

## soak: the long proofs of issue 6 (SIGKILL rounds, chaos against the daemon, a webhook fuzz run, a
## million-count sync under readers, hypothesis at 2,000 examples); prints the summary table.
## SYNCD_SOAK_SEED=N replays a run's plan; SYNCD_SOAK_ROUNDS, SYNCD_SOAK_CHAOS_SECONDS size it.
SOAK_REPORT ?= .soak/report.jsonl
soak: $(STAMP)
	@mkdir -p $(dir $(SOAK_REPORT)) && rm -f $(SOAK_REPORT)
	SYNCD_SOAK_REPORT=$(SOAK_REPORT) SYNCD_HYPOTHESIS_PROFILE=soak \
		$(BIN)/python -m pytest -m "soak or property" --timeout 1800 -q -p no:cacheprovider

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache $(DEMO_DB) $(DEMO_DB)-wal $(DEMO_DB)-shm
