# Paddock developer entry points. `make ci` is exactly what .ci/run runs.
CARGO ?= cargo
PLUGIN_TARGET := plugins/target/wasm32-wasip2/release
APPS := tank-level webhook daily-summary hostile counter fetch

.PHONY: all toolchain plugins pyenv browser schemas build run invoke-example test fmt fmt-check clippy doc bench bench-smoke bench-engine bench-ingest fuzz ci

all: plugins build

## The wasm target guests build for (idempotent; quick when present).
toolchain:
	@rustup target list --installed | grep -qx wasm32-wasip2 || rustup target add wasm32-wasip2

## Build every example app for wasm32-wasip2 and copy each component next to its manifest.
plugins: toolchain
	cd plugins && $(CARGO) build --release --target-dir target
	@for app in $(APPS); do \
		f=$$(echo $$app | tr - _).wasm; \
		cp $(PLUGIN_TARGET)/$$f plugins/$$app/$$f; \
	done

PADDOCK := $(CARGO) run --quiet --bin paddock --

## Regenerate each app's config.schema.json from its Config type.
schemas: plugins
	@for app in tank-level webhook daily-summary; do $(PADDOCK) schema plugins/$$app --write; done

build:
	$(CARGO) build

## The demo: paddock serve with the example apps, a demo organisation and a
## reading simulator (demo/run.sh). Runs until Ctrl-C.
run: plugins build
	demo/run.sh

## Run the tank-level example against its sample event, without a server.
invoke-example: plugins
	$(PADDOCK) invoke plugins/tank-level --event plugins/tank-level/events/reading.json \
		--state plugins/tank-level/events/state.json --config plugins/tank-level/events/config.json

## The real Python clients the monitor tests drive (python-devicecloud,
## standardwebhooks), in a virtualenv kept between runs; rebuilt when
## tests/python/requirements.txt changes.
PYENV ?= $(HOME)/.cache/paddock/pyenv
PYTHON ?= $(shell command -v python3.11 || command -v python3)
pyenv: $(PYENV)/.installed
$(PYENV)/.installed: tests/python/requirements.txt
	rm -rf $(PYENV)
	$(PYTHON) -m venv $(PYENV)
	$(PYENV)/bin/pip install --quiet --disable-pip-version-check -r tests/python/requirements.txt
	touch $@

## Debian's Chromium and ChromeDriver for the console's browser tests
## (installed with apt-get when missing; needs root, as in CI).
browser:
	@command -v chromedriver >/dev/null && test -x /usr/bin/chromium || { \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; }

## The test suite (builds the example components, the Python clients and
## the browser first: tests run them for real).
test: plugins pyenv browser
	PADDOCK_TEST_PYTHON=$(PYENV)/bin/python $(CARGO) test --workspace

fmt:
	$(CARGO) fmt --all
	cd guest-sdk && $(CARGO) fmt
	cd plugins && $(CARGO) fmt --all

fmt-check:
	$(CARGO) fmt --all -- --check
	cd guest-sdk && $(CARGO) fmt -- --check
	cd plugins && $(CARGO) fmt --all -- --check

clippy: plugins
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	cd plugins && $(CARGO) clippy --release --target-dir target -- -D warnings

doc:
	RUSTDOCFLAGS="-D warnings" $(CARGO) doc --workspace --no-deps
	cd plugins && RUSTDOCFLAGS="-D warnings" $(CARGO) doc --release --target-dir target --no-deps -p paddock-sdk

## Per-event benchmark (release build; prints medians and p99).
bench: plugins
	$(CARGO) bench -p paddock --bench per_event

## The per-event benchmark in a short, unoptimised run: CI checks that it
## runs (its numbers mean nothing there).
bench-smoke: plugins
	PADDOCK_BENCH_ITERS=60 $(CARGO) test -p paddock --bench per_event

## Durable delivery: throughput and latency by scale, and tenant fairness.
bench-engine: plugins
	$(CARGO) bench -p paddock --bench engine

## Property-based fuzzing of the parsers: a million cases per target, in
## release, outside CI (which runs a few thousand each within `make test`).
FUZZ_CASES ?= 1000000
fuzz:
	PADDOCK_FUZZ_CASES=$(FUZZ_CASES) $(CARGO) test --release -p paddock --lib fuzz_ -- --test-threads=2 --nocapture

## HTTP ingestion under wrk, against `wasmtime serve` on a hello-world component.
bench-ingest: plugins
	bench/ingest.sh

ci: fmt-check clippy test bench-smoke doc
