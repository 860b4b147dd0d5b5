# pyvs: two commands on a fresh machine: `make run` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
APT_TEST := curl openssl keepalived iproute2 redis-server nftables bind9-dnsutils nsd chromium snmpd snmp nghttp2-client
# Build dependencies of the C helpers: OpenSSL 3 headers for pyvs/tls/_tickets.c.
APT_BUILD := libssl-dev gcc
APT_BENCH := wrk haproxy nginx-light libnginx-mod-stream curl nftables nsd dnsperf openssl nghttp2-client

.PHONY: run test deps venv lint bench bench-dns soak clean

# setup.py builds the optional C head scanner (pyvs/http/_scan.c) in place.
$(STAMP): pyproject.toml setup.py pyvs/http/_scan.c pyvs/shared/_zone.c pyvs/runtime/_traffic.c pyvs/tls/_tickets.c
	@bash scripts/apt-ensure.sh $(APT_BUILD)
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

# System packages the tests drive for real. Installed only when missing.
deps: venv
	@bash scripts/apt-ensure.sh $(APT_TEST)

run: venv
	$(BIN)/pyvs run $(if $(CONFIG),-c $(CONFIG),)

# Integration tests run real servers on a 2-core machine: a test that fails is run once
# more (and reported as rerun) so that one scheduling hiccup does not fail the suite;
# a test that fails twice fails the run.
test: deps
	$(BIN)/python -m pytest -q -p no:cacheprovider --reruns 1 --reruns-delay 1 $(PYTEST_ARGS)

lint: venv
	$(BIN)/ruff check pyvs tests bench
	$(BIN)/mypy

bench: venv
	@bash scripts/apt-ensure.sh $(APT_BENCH)
	$(BIN)/python bench/run.py $(BENCH_ARGS)

# pyvs's DNS responder vs NSD on the same static zone: answers per CPU-second, medians of 3.
bench-dns: venv
	@bash scripts/apt-ensure.sh $(APT_BENCH)
	$(BIN)/python bench/dns.py $(BENCH_DNS_ARGS)

# Not CI: SOAK_MINUTES (default 10) of mixed traffic through pyvs while servers are
# killed and restarted; fails on a truncated-as-complete response, a checksum mismatch,
# or RSS / fd growth (bench/soak.py).
SOAK_MINUTES ?= 10
soak: venv
	SOAK_MINUTES=$(SOAK_MINUTES) $(BIN)/python bench/soak.py $(SOAK_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info
