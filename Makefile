# Sessionvault build and test entry points. `make help` lists them.
SHELL := /bin/bash
GO ?= go
WASM := build/vault.wasm
# Size budget of the wasm module (the budgets in README.md, "What it costs"), decimal bytes.
WASM_MAX_RAW := 2900000
WASM_MAX_BROTLI := 700000
WASM_FLAGS := GOOS=wasip1 GOARCH=wasm CGO_ENABLED=0
WASM_BUILD := $(GO) build -buildmode=c-shared -trimpath -ldflags="-s -w"

.PHONY: help wasm test test-go test-js deps check size bench bench-browser fuzz dev clean

help:
	@echo "make dev    run the demo on 127.0.0.1:8080 (embedded bbolt store)"
	@echo "make test   everything: deps, wasm, Go tests (wazero, stores, server), JS tests"
	@echo "make check  gofmt, go vet, go mod tidy, wasm size budget"
	@echo "make bench  benchmarks (native, wazero, peers)"
	@echo "make bench-browser  signed vs plain fetch, worker start-up, revocation latency (one and two nodes) in Chromium (~90s)"
	@echo "make fuzz   each fuzz target for FUZZTIME (default 20s)"
	@echo "make wasm   build $(WASM)"

# The wasm module: reproducible (-trimpath, no build ID differences), rebuilt when any Go file
# it is made from changes.
WASM_SRC := $(shell find internal/protocol internal/vault wasm/worker -name '*.go' ! -name '*_test.go' 2>/dev/null) go.mod
$(WASM): $(WASM_SRC)
	@mkdir -p build
	$(WASM_FLAGS) $(WASM_BUILD) -o $@ ./wasm/worker

wasm: $(WASM)

# deps installs what the tests need where it can (root on Debian), else names what is missing.
deps:
	@./scripts/deps.sh

test: deps wasm test-go test-js

# The libraries under the race detector (their tests drive many goroutines: the hub, the stores,
# concurrent verification); the browser, devserver and module tests as they are (their
# concurrency is Chromium's and wazero's, and -race would only slow them).
RACE_PKGS := ./internal/... ./server/...
test-go: $(WASM)
	CGO_ENABLED=1 SV_WASM=$(CURDIR)/$(WASM) $(GO) test -race -count=1 -timeout 20m $(RACE_PKGS)
	SV_WASM=$(CURDIR)/$(WASM) $(GO) test -count=1 -timeout 20m $$($(GO) list ./... | grep -v -e /internal/ -e /server)

test-js: $(WASM)
	cd js && SV_WASM=$(CURDIR)/$(WASM) node --test test/*.test.js

size: $(WASM)
	@raw=$$(stat -c %s $(WASM)); br=$$(brotli -c -q 11 $(WASM) | wc -c); \
	echo "wasm size: raw $$raw bytes (budget $(WASM_MAX_RAW)), brotli $$br bytes (budget $(WASM_MAX_BROTLI))"; \
	test $$raw -le $(WASM_MAX_RAW) || { echo "FAIL: raw size over budget"; exit 1; }; \
	test $$br -le $(WASM_MAX_BROTLI) || { echo "FAIL: brotli size over budget"; exit 1; }

check: size
	@out=$$(gofmt -l .); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(WASM_FLAGS) $(GO) vet ./wasm/worker
	@tmp=$$(mktemp -d); cp go.mod go.sum $$tmp/; $(GO) mod tidy; \
	if ! cmp -s go.mod $$tmp/go.mod || ! cmp -s go.sum $$tmp/go.sum; then \
		echo "go mod tidy is not clean; it changed:"; diff -u $$tmp/go.mod go.mod; diff -u $$tmp/go.sum go.sum; \
		cp $$tmp/go.mod $$tmp/go.sum .; rm -rf $$tmp; exit 1; fi; rm -rf $$tmp
	@echo "check: ok"

BENCHTIME ?= 1s
bench: $(WASM)
	SV_WASM=$(CURDIR)/$(WASM) $(GO) test -run '^$$' -bench . -benchmem -benchtime $(BENCHTIME) ./internal/... ./wasm/... ./server/...

# The browser figures of the budgets in README.md, "What it costs" (e2e/bench_test.go): reported, not asserted.
bench-browser: $(WASM)
	SV_BENCH=1 SV_WASM=$(CURDIR)/$(WASM) $(GO) test -count=1 -run '^(TestBrowserBench|TestRevocationLatency|TestTwoNodesRevocationLatency)$$' -v ./e2e/

FUZZTIME ?= 20s
# Every fuzz target of every package (go test -fuzz takes one target of one package at a time).
fuzz: $(WASM)
	@for pkg in $$(grep -rl --include='*_test.go' '^func Fuzz' . | xargs -n1 dirname | sort -u); do \
		for t in $$(grep -h '^func Fuzz' $$pkg/*_test.go | sed 's/^func \(Fuzz[A-Za-z0-9_]*\).*/\1/'); do \
			echo "fuzz $$pkg $$t"; \
			SV_WASM=$(CURDIR)/$(WASM) $(GO) test -run '^$$' -fuzz "^$$t$$" -fuzztime $(FUZZTIME) $$pkg || exit 1; \
		done; done

# DEV_FLAGS: more devserver flags, e.g. make dev DEV_FLAGS="-addr 127.0.0.1:8181" (go run ./cmd/devserver -h).
dev: $(WASM)
	$(GO) run ./cmd/devserver -wasm $(WASM) $(DEV_FLAGS)

clean:
	rm -rf build
