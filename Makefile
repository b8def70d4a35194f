# imbridge: every target installs the pinned tools it needs into .tools/bin (nothing global).
SHELL := /bin/bash
TOOLS := $(CURDIR)/.tools/bin
export PATH := $(TOOLS):$(PATH)

BUF_VERSION                := v1.75.0
PROTOC_GEN_GO_VERSION      := v1.36.12
PROTOC_GEN_GO_GRPC_VERSION := v1.6.2
GRPC_GATEWAY_VERSION       := v2.32.0

BIN := bin/imbridge

.PHONY: all build run test bench fuzz generate check-generated lint tools clean docker check-deploy check-disk-full check-cluster soak

all: build

# VERSION is what `imbridge --version` and /healthz report.
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)

build:
	go build -ldflags "-X main.version=$(VERSION)" -o $(BIN) ./cmd/imbridge

## run: the bridge with embedded defaults (HTTP :8080, gRPC :9090, event log in ./data).
run: build
	./$(BIN) serve

## test: every test, with the race detector.
test:
	go test -race -count=1 ./...

## bench: the bridge against a bare net/http baseline, in one run (BENCHFLAGS for longer runs,
## e.g. BENCHFLAGS="--duration 30s --backlog 500000"). Writes bench/results/latest.json.
BENCHFLAGS ?=
bench: build
	go build -o bin/imbridge-bench ./cmd/imbridge-bench
	./bin/imbridge-bench --bridge $(BIN) $(BENCHFLAGS)

## fuzz: run every fuzz target of every package for FUZZTIME each (default 30s; CI runs 10s).
## A crasher is written under the package's testdata/fuzz: commit it, it is a regression seed.
FUZZTIME ?= 30s
fuzz:
	@set -e; for pkg in $$(go list ./...); do \
	  list=$$(go test -list '^Fuzz' $$pkg); \
	  for target in $$(echo "$$list" | grep '^Fuzz' || true); do \
	    echo "== $$pkg $$target ($(FUZZTIME))"; \
	    go test $$pkg -run '^$$' -fuzz "^$$target$$" -fuzztime $(FUZZTIME); \
	  done; \
	done

## docker: the container image (Dockerfile), for those who have Docker.
IMAGE ?= imbridge:$(VERSION)
docker:
	docker build --build-arg VERSION=$(VERSION) -t $(IMAGE) .

## check-deploy: the release binary built as the Dockerfile builds it (deploy/build.sh) starts and
## passes its own healthcheck; the manifests parse (also in make test).
check-deploy:
	IMBRIDGE_DEPLOY_CHECK=1 go test -count=1 -run 'TestDeployBuild|TestDeployManifests' -v ./cmd/imbridge

## check-disk-full: the bridge on a small tmpfs that fills up (503s, /readyz) and recovers when space
## returns (needs unshare: user and mount namespaces; skipped where they are not allowed).
check-disk-full:
	IMBRIDGE_DISKFULL_CHECK=1 go test -count=1 -run 'TestDiskFull' -v ./cmd/imbridge

## check-cluster: two bridges on a 3-node JetStream cluster (in process, loopback): R3 stream, a
## decider on one instance deciding for the other, a conflicting join refused, the stream leader
## killed under load (no callback answered OK lost, every answer OK or 503 within the budget).
check-cluster:
	IMBRIDGE_CLUSTER=1 go test -race -count=1 -run 'TestCluster' -v -timeout 5m ./e2e

## soak: posters, three groups whose members ack, nack, crash and reconnect, and two SIGKILLs of the
## bridge; every callback answered OK must reach every group or its dead letters
## (IMBRIDGE_SOAK_DURATION=3m by default).
soak:
	IMBRIDGE_SOAK=1 go test -count=1 -run 'TestSoak' -v -timeout 20m ./cmd/imbridge

## generate: gen/ from proto/ with buf and local plugins.
generate: $(TOOLS)/buf $(TOOLS)/protoc-gen-go $(TOOLS)/protoc-gen-go-grpc $(TOOLS)/protoc-gen-grpc-gateway $(TOOLS)/protoc-gen-openapiv2
	rm -rf gen/imbridge gen/gateway gen/openapiv2/*.json
	buf generate

## check-generated: fail when gen/ differs from what `make generate` writes.
check-generated: generate
	@git diff --exit-code --stat -- gen || { echo "gen/ is stale: run make generate and commit"; exit 1; }
	@test -z "$$(git status --porcelain -- gen)" || { git status --porcelain -- gen; echo "gen/ has untracked files: run make generate and commit"; exit 1; }

## lint: buf lint and format, go vet, gofmt.
lint: $(TOOLS)/buf
	buf lint
	buf format -d --exit-code
	go vet ./...
	@test -z "$$(gofmt -l $$(git ls-files '*.go' | grep -v '^gen/'))" || { gofmt -l $$(git ls-files '*.go' | grep -v '^gen/'); exit 1; }

tools: $(TOOLS)/buf $(TOOLS)/protoc-gen-go $(TOOLS)/protoc-gen-go-grpc $(TOOLS)/protoc-gen-grpc-gateway $(TOOLS)/protoc-gen-openapiv2

$(TOOLS)/buf:
	GOBIN=$(TOOLS) go install github.com/bufbuild/buf/cmd/buf@$(BUF_VERSION)
$(TOOLS)/protoc-gen-go:
	GOBIN=$(TOOLS) go install google.golang.org/protobuf/cmd/protoc-gen-go@$(PROTOC_GEN_GO_VERSION)
$(TOOLS)/protoc-gen-go-grpc:
	GOBIN=$(TOOLS) go install google.golang.org/grpc/cmd/protoc-gen-go-grpc@$(PROTOC_GEN_GO_GRPC_VERSION)
$(TOOLS)/protoc-gen-grpc-gateway:
	GOBIN=$(TOOLS) go install github.com/grpc-ecosystem/grpc-gateway/v2/protoc-gen-grpc-gateway@$(GRPC_GATEWAY_VERSION)
$(TOOLS)/protoc-gen-openapiv2:
	GOBIN=$(TOOLS) go install github.com/grpc-ecosystem/grpc-gateway/v2/protoc-gen-openapiv2@$(GRPC_GATEWAY_VERSION)

clean:
	rm -rf bin
