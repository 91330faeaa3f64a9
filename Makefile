# Paddock developer entry points. `make ci` is exactly what .ci/run runs.
CARGO ?= cargo
PLUGIN_TARGET := plugins/target/wasm32-wasip2/release
APPS := tank-level webhook daily-summary hostile

.PHONY: all plugins schemas build run demo test fmt fmt-check clippy doc bench ci clean-plugins

all: plugins build

## Build every example app for wasm32-wasip2 and copy each component next to its manifest.
plugins:
	cd plugins && $(CARGO) build --release --target-dir target
	@for app in $(APPS); do \
		f=$$(echo $$app | tr - _).wasm; \
		cp $(PLUGIN_TARGET)/$$f plugins/$$app/$$f; \
	done

## Regenerate each app's config.schema.json from its Config type.
schemas: plugins build
	@for app in tank-level webhook daily-summary; do ./target/debug/paddock schema plugins/$$app --write; done

build:
	$(CARGO) build

## Run the tank-level example against its sample event.
run: plugins build
	./target/debug/paddock invoke plugins/tank-level --event plugins/tank-level/events/reading.json \
		--state plugins/tank-level/events/state.json --config plugins/tank-level/events/config.json

## The test suite (builds the example components first: tests run them for real).
test: plugins
	$(CARGO) test --workspace

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

ci: fmt-check clippy test doc
