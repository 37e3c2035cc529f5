# Directorate's build. The two commands a newcomer needs are `make demo` and
# `make test`; both install what they need on a fresh Debian machine.
SHELL := /bin/bash
GO ?= go
BIN := bin
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -s -w -X main.version=$(VERSION)
STATICCHECK := honnef.co/go/tools/cmd/staticcheck@v0.8.2
# Unit tests: everything but the VM-driven and process-level suites.
UNIT_PKGS = $$($(GO) list ./... | grep -v '/e2e')

.PHONY: all build test unit smoke lint bench demo e2e deps clean

all: build

deps:
	@bash .ci/deps.sh

build:
	@mkdir -p $(BIN)
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/ ./cmd/clusterd ./cmd/clusterctl

unit:
	$(GO) test -race -count=1 $(UNIT_PKGS)

# smoke starts three clusterd processes on 127.0.0.x with the dry-run backend
# and drives them with clusterctl.
smoke: build
	$(GO) test -count=1 -v ./e2e/smoke/ -args -bin $(CURDIR)/$(BIN)

test: deps lint unit smoke

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	  if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(GO) run $(STATICCHECK) ./...

bench:
	$(GO) test -run '^$$' -bench . -benchmem ./fsm/ ./lvs/ ./cluster/

demo:
	@echo "make demo comes with the e2e issue: it will boot a VM with directors, real servers and a client."
	@echo "Until then, try the five-minute tour in README.md."

clean:
	rm -rf $(BIN)
