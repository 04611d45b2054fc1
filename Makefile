# Postbus: `make run` starts the whole system on loopback, `make test` runs the suite.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
RUNDIR := $(CURDIR)/var
CONF   := $(RUNDIR)/etc

.PHONY: help install run stop status test test-unit lint docs bench clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | column -t -s '	'

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)  ## create .venv and install Postbus with its tools

$(CONF)/main.cf: etc/postbus/main.cf etc/postbus/master.cf
	mkdir -p $(CONF) $(RUNDIR)/mail
	cp etc/postbus/master.cf $(CONF)/master.cf
	cp etc/postbus/main.cf $(CONF)/main.cf
	printf '\n# set by make run: keep state in this checkout\ndata_directory = %s\nmail_spool_directory = %s/mail/\n' \
		'$(RUNDIR)' '$(RUNDIR)' >> $(CONF)/main.cf

run: $(STAMP) $(CONF)/main.cf  ## start NATS, Redis and every service (SMTP on 127.0.0.1:2525)
	$(VENV)/bin/postbus -c $(CONF) start

stop: $(STAMP)  ## stop what `make run` started
	-$(VENV)/bin/postbus -c $(CONF) stop

status: $(STAMP)  ## is it running?
	$(VENV)/bin/postbus -c $(CONF) status

lint: $(STAMP)  ## ruff and mypy
	$(VENV)/bin/ruff check libs services tests bench tools
	$(VENV)/bin/mypy libs/postbus services

docs: $(STAMP)  ## regenerate README.md's list of implemented parameters
	$(PY) tools/gen_docs.py

test-unit: $(STAMP)  ## unit tests only (fast)
	$(VENV)/bin/pytest -q tests/unit

test: $(STAMP)  ## the whole suite: lint, unit, integration, end to end
	$(MAKE) lint
	$(VENV)/bin/pytest -q tests

bench: $(STAMP)  ## throughput and latency through the whole system (and Postfix when installed)
	$(PY) bench/run.py $(BENCH_ARGS)
	$(PY) bench/maps_bench.py

clean:  ## remove run state (not the venv)
	rm -rf $(RUNDIR)
