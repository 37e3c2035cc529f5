# Directorate's build. The two commands a newcomer needs are `make demo` and
# `make test`; both install what they need on a fresh Debian machine.
SHELL := /bin/bash
GO ?= go
BIN := bin
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -s -w -X main.version=$(VERSION)
STATICCHECK := honnef.co/go/tools/cmd/staticcheck@v0.8.2
# go.mod's toolchain line asks for a Go with the standard library's security
# fixes (govulncheck in `make lint` fails without them); `auto` lets the go
# command fetch it through the module proxy when the installed Go is older,
# which Debian's and this project's machines set to `local` in go.env.
export GOTOOLCHAIN ?= auto
# Unit tests: everything but the process-level smoke suite, which needs the
# built binaries.
UNIT_PKGS = $$($(GO) list ./... | grep -v '/e2e/smoke')
VM_TIMEOUT ?= 15m

.PHONY: all build test unit smoke kernel-test vm-deps lint vulncheck fuzz bench bench-kernel demo deps clean

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

# vm-deps installs qemu and fetches Debian's stock kernel (once, into .cache/).
vm-deps:
	@bash e2e/vm/ensure-deps.sh >/dev/null

$(BIN)/vmrun: $(shell find e2e/vm e2e/cmd/vmrun -name '*.go' -o -name '*.sh' 2>/dev/null)
	@mkdir -p $(BIN)
	$(GO) build -o $@ ./e2e/cmd/vmrun

# kernel-test runs the IPVS backend against a real kernel: the stock kernel
# booted under qemu, since the build machines' kernels have no IPVS.
kernel-test: vm-deps $(BIN)/vmrun
	CGO_ENABLED=0 $(GO) test -c -o $(BIN)/lvs.test ./lvs
	$(BIN)/vmrun -timeout $(VM_TIMEOUT) -e DIRECTORATE_IPVS_TEST=1 -- \
	  $(CURDIR)/$(BIN)/lvs.test -test.v -test.count=1 -test.run 'Kernel'

test: deps lint unit fuzz smoke netns kernel-test e2e

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	  if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(GO) run $(STATICCHECK) ./...
	@$(MAKE) --no-print-directory vulncheck

# vulncheck runs govulncheck; see .ci/govulncheck.sh for where its database
# comes from on machines that reach only the Go module proxy.
vulncheck:
	GO=$(GO) bash .ci/govulncheck.sh

# fuzz runs every native fuzzer for FUZZTIME each (their committed seed
# corpora, under testdata/fuzz, also run in `make unit`). One worker each
# keeps a shared machine usable; .ci/fuzz.sh explains the one failure it
# ignores, a Go coordinator race.
FUZZTIME ?= 10s
FUZZERS = ./fsm:FuzzApply ./cmd/clusterd:FuzzParseConfig ./cmd/clusterd:FuzzAPIRequest \
	./vip:FuzzParseARP ./vip:FuzzParseNA
fuzz:
	@GO=$(GO) bash .ci/fuzz.sh $(FUZZTIME) $(FUZZERS)

bench: bench-checks
	$(GO) test -run '^$$' -bench . -benchmem ./fsm/ ./lvs/ ./cluster/

# bench-checks runs the health-check scheduler against 10,000 loopback
# servers checked every second (TCP; HTTP at 2,500), then the kernel's own
# cost of one loopback TCP check for comparison. About two minutes.
.PHONY: bench-checks
bench-checks:
	$(GO) test -run '^$$' -bench 'Checks10k' -benchtime 1x ./probes/
	$(GO) test -run '^$$' -bench 'TCPConnectFloor|TCPCheck$$|SchedulerAttempt' -benchmem -benchtime 3s ./probes/


# e2e-bins: the static binaries the e2e VM runs, and the scenario suite
# compiled on the host (the guest runs host binaries over 9p).
.PHONY: e2e e2e-bins
E2E_TIMEOUT ?= 20m
E2E_RUN ?= .
e2e-bins:
	@mkdir -p $(BIN)
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/ ./cmd/clusterd ./cmd/clusterctl ./e2e/cmd/realserver ./e2e/cmd/demo
	CGO_ENABLED=0 $(GO) test -c -o $(BIN)/scenarios.test ./e2e/scenarios

# e2e runs the end-to-end scenarios (real traffic through real kernel IPVS,
# nodes as containers) in the throwaway VM; E2E_RUN selects scenarios.
# DIRECTORATE_VM_KVM=1 asks for KVM.
e2e: vm-deps e2e-bins $(BIN)/vmrun
	$(BIN)/vmrun -timeout $(E2E_TIMEOUT) -- $(CURDIR)/$(BIN)/scenarios.test \
	  -test.v -test.count=1 -test.timeout $(E2E_TIMEOUT) -test.run '$(E2E_RUN)' -bin $(CURDIR)/$(BIN)

# demo boots the VM and narrates three directors serving, and failing over.
demo: vm-deps e2e-bins $(BIN)/vmrun
	$(BIN)/vmrun -timeout 10m -- $(CURDIR)/$(BIN)/demo -bin $(CURDIR)/$(BIN)

clean:
	rm -rf $(BIN)

# bench-kernel runs the IPVS backend's scale benchmarks (10,000 services x 10
# real servers) against the stock kernel in the VM, next to ipvsadm-restore.
# Under emulation this takes several minutes.
bench-kernel: vm-deps $(BIN)/vmrun
	CGO_ENABLED=0 $(GO) test -c -o $(BIN)/lvs.test ./lvs
	$(BIN)/vmrun -timeout 60m -mem 4096 -e DIRECTORATE_IPVS_TEST=1 -- \
	  $(CURDIR)/$(BIN)/lvs.test -test.run '^$$' -test.bench 'Kernel' -test.benchtime 1x -test.v

# netns: HA integration tests in network namespaces on the host kernel (root).
.PHONY: netns bench-failover
netns: build
	$(GO) test -count=1 -v ./e2e/netns/ -args -bin $(CURDIR)/$(BIN)
bench-failover: build
	$(GO) test -run '^$$' -bench Failover -benchtime 1x ./e2e/netns/ -args -bin $(CURDIR)/$(BIN)
