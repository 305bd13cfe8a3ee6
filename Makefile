# The verbs people type. Each is a thin wrapper over cargo and the scripts in deploy/;
# CI runs `make test`, exactly as you do.

SHELL := /usr/bin/env bash
WORKERS ?= 2

.DEFAULT_GOAL := help

.PHONY: help
help: ## List the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

.PHONY: run
run: ## Start broker, gateway and WORKERS=2 worker processes; page at http://127.0.0.1:8080/
	@WORKERS=$(WORKERS) deploy/run-local.sh

.PHONY: scale
scale: ## Change the number of local workers while `make run` runs: make scale WORKERS=3
	@deploy/scale.sh $(WORKERS)

.PHONY: test
test: deps lint manifests contract broker photos browser examples ## Lint, validate the manifests and the broker contract, then unit, end-to-end (the example workers in Python and Node included), browser and API-contract tests against real RabbitMQ, PostgreSQL and S3
	cargo build --bins
	deploy/with-test-services.sh cargo test --workspace
	cargo test -p pixmill-tests --test schemathesis -- --ignored --nocapture

.PHONY: lint
lint: deps ## cargo fmt --check and clippy with warnings as errors
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings

.PHONY: manifests
manifests: ## Validate compose, Kubernetes and KEDA manifests, alert rules, the dashboard and the Dockerfiles
	@deploy/validate-manifests.sh

.PHONY: contract
contract: ## Validate the broker contract (docs/contract/asyncapi.json) with the AsyncAPI parser
	@deploy/contract/check-asyncapi.sh

.PHONY: examples
examples: ## Install the example workers' dependencies: a Python venv (pika, Pillow, boto3) and npm ci (amqplib, sharp)
	@examples/setup.sh >/dev/null
	@examples/setup-node.sh >/dev/null

.PHONY: fmt
fmt: ## Format the code
	cargo fmt --all

.PHONY: build
build: deps ## Build release binaries into target/release
	cargo build --release --bins

.PHONY: deps
deps: ## Install the build tools the JPEG codec needs (cmake, nasm) when missing
	@deploy/deps.sh

.PHONY: bench
bench: deps broker photos ## Benchmark the engine (with quality guards) and the whole stack against the Celery peer; writes bench/results/latest.md
	@bench/baseline/setup.sh
	cargo build --release --bins
	cargo bench -p pixmill-tests --bench pixmill

.PHONY: bench-fair
bench-fair: deps broker photos ## Only the fair-share benchmark: a lone tenant behind a 1500-job backlog, fair share on and off; writes bench/results/fair.md
	cargo build --release --bins
	BENCH_ONLY=fair cargo bench -p pixmill-tests --bench pixmill

.PHONY: bench-malloc
bench-malloc: deps broker photos ## Only the allocator comparison: the stack with the shipped malloc setting and the other candidates, alternating; writes bench/results/malloc.md
	cargo build --release --bins
	BENCH_ONLY=malloc cargo bench -p pixmill-tests --bench pixmill

.PHONY: bench-variants
bench-variants: deps broker photos ## Only the variants comparison: one job with four outputs against four jobs, CPU and wall time per upload; writes bench/results/variants.md
	cargo build --release --bins
	BENCH_ONLY=variants cargo bench -p pixmill-tests --bench pixmill

.PHONY: bench-durability
bench-durability: deps broker photos ## Only what durability costs: SQLite synchronous FULL against NORMAL, and the folder store's directory sync; writes bench/results/durability.md
	cargo build --release --bins
	BENCH_ONLY=durability cargo bench -p pixmill-tests --bench pixmill

.PHONY: run-scaled
run-scaled: ## Scaled out on this machine: PostgreSQL, SeaweedFS (S3), RabbitMQ, 2 gateways, WORKERS workers
	@WORKERS=$(WORKERS) deploy/run-scaled.sh

.PHONY: broker
broker: ## Make sure a RabbitMQ broker answers at PIXMILL_AMQP_URL (start or install one)
	@deploy/rabbitmq/ensure-broker.sh

.PHONY: broker-stop
broker-stop: ## Stop the local RabbitMQ node this project started
	@deploy/rabbitmq/ensure-broker.sh stop

.PHONY: photos
photos: ## Fetch the real photographs the tests use into var/photos
	@deploy/fixtures/fetch-photos.sh

.PHONY: browser
browser: ## Install Debian's Chromium and playwright-core for the browser test (when missing)
	@deploy/browser/ensure-browser.sh

.PHONY: clean-data
clean-data: ## Delete local jobs, uploads and results (var/data)
	rm -rf var/data

.PHONY: test-faults
test-faults: deps broker photos ## Fault tests: worker kills, broker and gateway restarts, poison jobs, a 3-node cluster failover, …
	cargo build --bins --features pixmill-workers/fault-injection
	cargo test -p pixmill-tests --features faults --test faults -- --nocapture --test-threads=2
	cargo test -p pixmill-tests --features faults --test cluster -- --nocapture --test-threads=1; \
	  status=$$?; deploy/rabbitmq/cluster.sh stop; exit $$status
