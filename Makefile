# Postbus: `make run` starts the whole system on loopback, `make test` runs the suite.
# Started as root, the roles run as mail_owner, which must be able to run the
# interpreter: the system's Python, not one under /root (pyenv) that only root reaches.
PYTHON ?= $(firstword $(wildcard /usr/bin/python3) python3)
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-$(subst /,_,$(PYTHON))
RUNDIR := $(CURDIR)/var
CONF   := $(RUNDIR)/etc
# mail_owner of etc/postbus/main.cf: the user the roles run as when started as root
MAIL_OWNER := postbus
# make test's parallel pytest workers (pytest-xdist): most tests wait on servers and
# timers, not the CPU; each test file stays on one worker (its module fixtures start
# Postfix, Dovecot, ... once). WORKERS=0 runs the suite in this process, serially.
WORKERS ?= 3

.PHONY: help install mail-owner run stop status test test-unit fuzz lint docs bench clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | column -t -s '	'

$(STAMP): pyproject.toml
	$(PYTHON) -m venv --clear $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)  ## create .venv and install Postbus with its tools

$(CONF)/main.cf: etc/postbus/main.cf etc/postbus/master.cf etc/postbus/local_users
	mkdir -p $(CONF)
	cp etc/postbus/master.cf $(CONF)/master.cf
	cp etc/postbus/local_users $(CONF)/local_users
	cp etc/postbus/main.cf $(CONF)/main.cf
	printf '\n# set by make run: keep state in this checkout; data_directory (which\n# mail_owner owns when run as root) holds neither this file nor the mailboxes\ndata_directory = %s/lib\nmail_spool_directory = %s/mail/\nmaillog_file = %s/maillog\n' \
		'$(RUNDIR)' '$(RUNDIR)' '$(RUNDIR)' >> $(CONF)/main.cf

mail-owner:  ## as root: create the system user the roles run as (mail_owner), if missing
	@if [ "$$(id -u)" = 0 ] && ! id -u $(MAIL_OWNER) >/dev/null 2>&1; then \
		echo "useradd --system $(MAIL_OWNER)"; \
		useradd --system --user-group --no-create-home --home-dir /nonexistent \
			--shell /usr/sbin/nologin $(MAIL_OWNER); \
	fi

run: $(STAMP) $(CONF)/main.cf mail-owner  ## start NATS, Redis and every service (SMTP on 127.0.0.1:2525)
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

fuzz: $(STAMP)  ## the fuzzers of tests/fuzz with many more examples and random seeds (minutes)
	HYPOTHESIS_PROFILE=fuzz $(VENV)/bin/pytest -q --timeout=0 tests/fuzz $(FUZZ_ARGS)

test: $(STAMP) mail-owner  ## the whole suite: lint, unit, integration, end to end, fuzzers (fixed seed)
	$(MAKE) lint
	$(VENV)/bin/pytest -q -n $(WORKERS) --dist loadfile tests

bench: $(STAMP)  ## throughput and latency through the whole system (and Postfix when installed)
	$(PY) bench/run.py $(BENCH_ARGS)
	$(PY) bench/maps_bench.py
	$(PY) bench/queue_bench.py
	$(PY) bench/starttls_bench.py
	$(PY) bench/policy_bench.py
	$(PY) bench/delivery_bench.py
	$(PY) bench/ingress_bench.py
	$(PY) bench/deferred_bench.py

clean:  ## remove run state (not the venv)
	rm -rf $(RUNDIR)
