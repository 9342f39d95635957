# imagestreams-backup. `make help` lists the targets.

SHELL := /usr/bin/env bash -o pipefail
.SHELLFLAGS := -ec
.DEFAULT_GOAL := help

# Versions of the tools built from the Go module proxy into bin/. Each binary's path names its
# version, so changing a version here rebuilds it and a second run rebuilds nothing.
KUBE_VERSION            ?= 1.34.2
ETCD_VERSION            ?= 3.6.16
CONTROLLER_TOOLS_VERSION ?= v0.23.0
VERSITYGW_VERSION       ?= v1.8.0
VELERO_VERSION          ?= v1.18.3
VELERO_AWS_VERSION      ?= v1.14.3
CRANE_VERSION           ?= v0.22.1
ORAS_VERSION            ?= v1.3.6
REGCTL_VERSION          ?= v0.11.7
GOLANGCI_LINT_VERSION   ?= v2.15.0

BIN          := $(CURDIR)/bin
ENVTEST_DIR  := $(BIN)/k8s/$(KUBE_VERSION)
KUBE_APISERVER := $(ENVTEST_DIR)/kube-apiserver
KUBE_CONTROLLER_MANAGER := $(ENVTEST_DIR)/kube-controller-manager
ETCD         := $(ENVTEST_DIR)/etcd
CONTROLLER_GEN := $(BIN)/controller-gen-$(CONTROLLER_TOOLS_VERSION)
VERSITYGW    := $(BIN)/versitygw-$(VERSITYGW_VERSION)
CRANE        := $(BIN)/crane-$(CRANE_VERSION)
ORAS         := $(BIN)/oras-$(ORAS_VERSION)
REGCTL       := $(BIN)/regctl-$(REGCTL_VERSION)
GOLANGCI_LINT := $(BIN)/golangci-lint-$(GOLANGCI_LINT_VERSION)
VELERO       := $(BIN)/velero-$(VELERO_VERSION)
VELERO_PLUGIN_AWS := $(BIN)/velero-plugin-for-aws-$(VELERO_AWS_VERSION)

GO_TEST_FLAGS ?= -race -count=1

# Peers the tests run for real that Debian packages: skopeo reads exported OCI layouts, and
# docker-registry is the distribution registry.
DEBIAN_PACKAGES := skopeo docker-registry iproute2
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

# What the whole stack (e2e, demo, bench-scale) needs. make expands a rule's prerequisites when
# it reads the rule, so this is defined before any rule that names it.
STACK_DEPS = build envtest-bins $(VERSITYGW) $(VELERO) $(VELERO_PLUGIN_AWS) debian-packages
# The whole stack runs in a network namespace of its own: velero's manager always listens on
# *:8080, and there only loopback exists. kube-apiserver needs a default route to pick its address.
IN_NETNS = $(SUDO) unshare --net sh -c 'ip link set lo up && ip addr add 10.255.0.1/32 dev lo && ip route add default dev lo && exec "$$0" "$$@"'
# Where modules of go.mod are in the module cache; go list -m names no directory for a module
# that is not downloaded yet, as on a fresh machine.
module-dir = $(shell go mod download $(1) && go list -m -f '{{.Dir}}' $(1))
OPENSHIFT_API_DIR = $(call module-dir,github.com/openshift/api)
VELERO_DIR = $(call module-dir,github.com/vmware-tanzu/velero)

# Tests find the tools through these.
export KUBEBUILDER_ASSETS := $(ENVTEST_DIR)
export VERSITYGW VELERO VELERO_PLUGIN_AWS
export IMAGESTREAMS_BACKUP_PLUGIN := $(BIN)/imagestreams-backup-plugin
export IMAGESTREAMS_BACKUP_WORKER := $(BIN)/imagestreams-backup-worker

##@ General

.PHONY: help
help: ## Show this help.
	@awk 'BEGIN {FS = ":.*##"; printf "Usage: make \033[36m<target>\033[0m\n"} /^[a-zA-Z0-9_-]+:.*?##/ { printf "  \033[36m%-16s\033[0m %s\n", $$1, $$2 } /^##@/ { printf "\n\033[1m%s\033[0m\n", substr($$0, 5) }' $(MAKEFILE_LIST)

##@ Try it

.PHONY: demo
demo: $(STACK_DEPS) ## Back up and restore sample imagestreams with a real velero server on this machine, and print a report.
	go build -o $(BIN)/demo ./test/demo
	$(IN_NETNS) $(BIN)/demo

##@ Development

.PHONY: generate
generate: $(CONTROLLER_GEN) ## Generate deepcopy functions for the API types.
	$(CONTROLLER_GEN) object paths=./api/...

.PHONY: manifests
manifests: $(CONTROLLER_GEN) ## Generate CRDs into deploy/crd, the worker's role into deploy/rbac, and copy the CRDs the tests install.
	$(CONTROLLER_GEN) crd paths=./api/... output:crd:dir=deploy/crd
	$(CONTROLLER_GEN) rbac:roleName=imagestreams-backup-worker paths=./internal/controller/... output:rbac:dir=deploy/rbac
	install -m 0644 $(OPENSHIFT_API_DIR)/config/v1/zz_generated.crd-manifests/0000_10_config-operator_01_images.crd.yaml \
		test/crds/config.openshift.io_images.yaml
	for crd in backups backupstoragelocations restores; do \
		install -m 0644 $(VELERO_DIR)/config/crd/v1/bases/velero.io_$$crd.yaml test/crds/velero.io_$$crd.yaml; done

.PHONY: build
build: ## Build the plugin and the worker as static binaries into bin/.
	CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o $(BIN)/imagestreams-backup-plugin ./plugin
	CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o $(BIN)/imagestreams-backup-worker ./worker

CONTAINER_TOOL ?= $(shell command -v podman || command -v docker)
PLUGIN_IMG ?= imagestreams-backup-plugin:latest
WORKER_IMG ?= imagestreams-backup-worker:latest

.PHONY: images
images: ## Build the plugin and worker images (needs podman, or docker with a running engine).
	$(CONTAINER_TOOL) build -f Dockerfile.plugin -t $(PLUGIN_IMG) .
	$(CONTAINER_TOOL) build -f Dockerfile.worker -t $(WORKER_IMG) .

.PHONY: lint
lint: $(GOLANGCI_LINT) ## Run golangci-lint with .golangci.yml.
	$(GOLANGCI_LINT) run --build-tags e2e ./...

.PHONY: fmt
fmt: ## Format the Go code.
	gofmt -w $$(git ls-files '*.go')

.PHONY: verify
verify: generate manifests $(GOLANGCI_LINT) ## Fail when generated files are stale, go.mod is untidy, or code is unformatted, vetted badly or linted badly.
	@git diff --exit-code -- api deploy test/crds || { echo "generated files are stale: run make generate manifests and commit"; exit 1; }
	@untracked=$$(git ls-files --others --exclude-standard -- api deploy test/crds); \
		[ -z "$$untracked" ] || { echo "generated files are not committed: $$untracked"; exit 1; }
	go mod tidy -diff || { echo "go.mod is untidy: run go mod tidy"; exit 1; }
	@unformatted=$$(gofmt -l $$(git ls-files '*.go')); \
		[ -z "$$unformatted" ] || { echo "not gofmt-ed: $$unformatted"; exit 1; }
	go vet ./...
	$(GOLANGCI_LINT) run --build-tags e2e ./...

##@ Test

.PHONY: test
test: verify build unit e2e ## Everything CI runs: verify, static builds, then every test against real parts.

.PHONY: unit
unit: envtest-bins $(VERSITYGW) debian-packages ## Run the Go tests (envtest uses bin/k8s).
	go test $(GO_TEST_FLAGS) ./...

.PHONY: e2e
e2e: $(STACK_DEPS) ## Run the end-to-end tests with a real velero server.
	go test -tags e2e -c -o $(BIN)/e2e.test ./test/e2e
	cd test/e2e && $(IN_NETNS) $(BIN)/e2e.test -test.v -test.count=1 -test.timeout=20m

##@ Benchmarks

.PHONY: bench
bench: $(CRANE) $(ORAS) $(REGCTL) $(VERSITYGW) debian-packages ## Measure backup and restore against crane, skopeo, oras and regctl on a local registry, to a file bucket and to S3 (versitygw), beside this machine's limits; prints a table.
	go build -o $(BIN)/bench ./test/bench
	$(BIN)/bench -crane $(CRANE) -skopeo skopeo -oras $(ORAS) -regctl $(REGCTL)

BENCH_SCALE_FLAGS ?=
.PHONY: bench-scale
bench-scale: $(STACK_DEPS) ## Back up and restore 2,000 imagestreams (20,000 images) with a real velero; prints time, memory, API writes, object sizes and the plugin's overhead.
	go build -o $(BIN)/benchscale ./test/benchscale
	CGO_ENABLED=0 go build -trimpath -o $(BIN)/noopplugin ./test/noopplugin
	$(IN_NETNS) $(BIN)/benchscale $(BENCH_SCALE_FLAGS)

##@ Tools (built from the Go module proxy, cached in bin/)

.PHONY: debian-packages
debian-packages: ## Install the Debian packages the tests use, when missing.
	@missing=$$(for p in $(DEBIAN_PACKAGES); do dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "ok installed" || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "installing $$missing"; \
		$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
		$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	fi

.PHONY: envtest-bins
envtest-bins: $(KUBE_APISERVER) $(KUBE_CONTROLLER_MANAGER) $(ETCD) ## Build kube-apiserver, kube-controller-manager and etcd for the test control plane.

# tool-build builds one tool, once per version, into bin/: it says what it builds and roughly
# how long a first build takes, keeps the build's output (a wall of "go: downloading") in
# bin/logs/, shows its tail only when the build fails, and says how long it took.
# $(1): the tool, $(2): its cold build time on 2 cores, $(3): the build's shell commands.
define tool-build
	@mkdir -p $(BIN)/logs
	@echo "building $(1) into bin/, once: about $(2) on 2 cores the first time, nothing after (log: bin/logs/$(notdir $@).log)"
	@start=$$(date +%s); \
	if ! ( $(3) ) >$(BIN)/logs/$(notdir $@).log 2>&1; then \
		tail -n 30 $(BIN)/logs/$(notdir $@).log; echo "building $(1) failed; the whole log is bin/logs/$(notdir $@).log"; exit 1; \
	fi; \
	echo "built $(1) in $$(( $$(date +%s) - start ))s"
endef

# go-install-tool is the commands that build a main package at a version ($(1)) into the target
# as its own module, so that its dependencies never touch go.mod.
go-install-tool = GOBIN=$(BIN)/.install-$(notdir $@) go install $(1) && \
	mv $(BIN)/.install-$(notdir $@)/$(notdir $(firstword $(subst @, ,$(1)))) $@ && rmdir $(BIN)/.install-$(notdir $@)

# kube-apiserver and kube-controller-manager come from one tools module (hack/tools/kube).
$(KUBE_APISERVER) $(KUBE_CONTROLLER_MANAGER):
	$(call tool-build,$(notdir $@) $(KUBE_VERSION),$(if $(filter kube-apiserver,$(notdir $@)),8 minutes,2 minutes after kube-apiserver),cd hack/tools/kube && \
		go build -trimpath -ldflags "-s -w -X k8s.io/component-base/version.gitVersion=v$(KUBE_VERSION)" -o $@.tmp k8s.io/kubernetes/cmd/$(notdir $@) && mv $@.tmp $@)

$(ETCD):
	$(call tool-build,etcd $(ETCD_VERSION),1 minute,cd hack/tools/etcd && go build -trimpath -ldflags "-s -w" -o $@.tmp . && mv $@.tmp $@)

$(CONTROLLER_GEN):
	$(call tool-build,controller-gen $(CONTROLLER_TOOLS_VERSION),2 minutes,$(call go-install-tool,sigs.k8s.io/controller-tools/cmd/controller-gen@$(CONTROLLER_TOOLS_VERSION)))

$(GOLANGCI_LINT):
	$(call tool-build,golangci-lint $(GOLANGCI_LINT_VERSION),3 minutes,$(call go-install-tool,github.com/golangci/golangci-lint/v2/cmd/golangci-lint@$(GOLANGCI_LINT_VERSION)))

# The versitygw S3 server the tests run on 127.0.0.1.
$(VERSITYGW):
	$(call tool-build,versitygw $(VERSITYGW_VERSION),2 minutes,$(call go-install-tool,github.com/versity/versitygw/cmd/versitygw@$(VERSITYGW_VERSION)))

# The velero server and CLI, from hack/tools/velero (which repeats velero's replaces).
$(VELERO):
	$(call tool-build,velero $(VELERO_VERSION),4 minutes,cd hack/tools/velero && \
		go build -trimpath -ldflags "-s -w -X github.com/vmware-tanzu/velero/pkg/buildinfo.Version=$(VELERO_VERSION)" -o $@.tmp github.com/vmware-tanzu/velero/cmd/velero && mv $@.tmp $@)

$(VELERO_PLUGIN_AWS):
	$(call tool-build,velero-plugin-for-aws $(VELERO_AWS_VERSION),3 minutes,$(call go-install-tool,github.com/vmware-tanzu/velero-plugin-for-aws/velero-plugin-for-aws@$(VELERO_AWS_VERSION)))

$(CRANE):
	$(call tool-build,crane $(CRANE_VERSION),1 minute,$(call go-install-tool,github.com/google/go-containerregistry/cmd/crane@$(CRANE_VERSION)))

$(ORAS):
	$(call tool-build,oras $(ORAS_VERSION),1 minute,$(call go-install-tool,oras.land/oras/cmd/oras@$(ORAS_VERSION)))

$(REGCTL):
	$(call tool-build,regctl $(REGCTL_VERSION),1 minute,$(call go-install-tool,github.com/regclient/regclient/cmd/regctl@$(REGCTL_VERSION)))

.PHONY: clean
clean: ## Remove built binaries but keep the cached tools.
	rm -rf $(BIN)/imagestreams-backup-*
