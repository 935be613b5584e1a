# vipkeeper — see README.md.
GO       ?= go
VERSION  ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS  := -s -w -X main.version=$(VERSION)
BINARIES := vipkeeper-agent vipkeeper-hostsync vipctl

.PHONY: all build deps test vet lint unit bench demo clean

all: build

build:
	@mkdir -p bin
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o bin/ $(addprefix ./cmd/,$(BINARIES))

# Everything the tests call, so that `make test` on a fresh Debian runs
# them all: iputils-ping (the topology test), rpm and cloud-init (the
# packaging checks), debootstrap and systemd-container (the systemd lab,
# which builds its root file system with debootstrap and boots it with
# systemd-nspawn), prometheus for its promtool (the alerting rules'
# checks and unit tests, and `promtool check metrics` of the daemons'
# /metrics; deps.sh keeps its server from starting). scripts/deps.sh
# always adds keepalived, nftables, iproute2 and nginx (the namespace lab).
TEST_DEPS = iputils-ping rpm cloud-init debootstrap systemd-container prometheus

deps:
	@./scripts/deps.sh $(TEST_DEPS)

vet:
	$(GO) vet ./...

# staticcheck, then import grouping: goimports with the project's prefix
# (standard library, third-party, then github.com/vipkeeper/vipkeeper, as
# the tree groups them); any file it would change fails the target.
LOCAL := github.com/vipkeeper/vipkeeper

lint:
	$(GO) tool staticcheck ./...
	@out=$$($(GO) tool goimports -l -local $(LOCAL) .); \
	if [ -n "$$out" ]; then \
		echo "goimports -local $(LOCAL): imports not grouped (fix with: go tool goimports -w -local $(LOCAL) FILE):"; \
		echo "$$out"; exit 1; \
	fi

# The README's test command: set-up, vet, lint, then every test with -race.
# Privileged tests (network namespaces, keepalived, nftables) run when root.
test: deps vet lint
	$(GO) test -race -count=1 -timeout 25m ./...

unit:
	$(GO) test -count=1 -short ./...

# Component benchmarks (200 iterations each; hostsync's start-up with
# 10,000 groups 3 times), then the namespace lab's
# (needs root): 20 failovers per profile, the seed's hand-written
# keepalived.conf against vipkeeper's seed and fast profiles, same lab and
# same fault (bench/results/failover.json; the etcd lab's in
# failover-etcd.json), and 20 live group changes until keepalived is
# reloaded with the new revision (bench/results/metadata-apply.json).
bench: deps build
	$(GO) test -run '^$$' -bench . -skip HostsyncScale -benchtime 200x -count 1 $$($(GO) list ./... | grep -v /harness/lab)
	$(GO) test -run '^$$' -bench HostsyncScale -benchtime 3x -count 1 ./hostsync/
	VIPKEEPER_LAB_BIN=$(CURDIR)/bin $(GO) test -run '^$$' -bench 'Failover|MetadataApply' -benchtime 20x -count 1 -timeout 40m ./harness/lab/

# The main job: the seed's nginx scenario in the namespace lab, with the
# measured failover timeline at the end (needs root).
demo: deps build
	$(GO) build -o bin/ ./harness/lab/cmd/vipkeeper-lab
	./bin/vipkeeper-lab demo --bin bin

clean:
	rm -rf bin dist

# .deb and .rpm of vipkeeper-agent and vipkeeper-hostsync for amd64 and
# arm64 into dist/, built with nfpm (pinned in go.mod's tool block); prints
# each package's size. The packaging tests (make test) build them too.
.PHONY: packages
packages:
	GO='$(GO)' VERSION='$(VERSION)' LDFLAGS='$(LDFLAGS)' DIST=dist ./scripts/packages.sh

# The systemd lab (harness/sdlab) alone: the packages installed with dpkg
# and apt in booted systemd containers, the agent's unit, keepalived's
# D-Bus reload, the watchdog, upgrade and removal, the seed's failover.
# Needs root; `make test` runs it too. `make rootfs` only builds (or finds)
# the cached root file system (VIPKEEPER_SDLAB_CACHE, default
# /var/cache/vipkeeper-sdlab).
.PHONY: rootfs test-systemd
rootfs:
	@./scripts/deps.sh debootstrap systemd-container
	./scripts/rootfs.sh

test-systemd:
	@./scripts/deps.sh debootstrap systemd-container prometheus
	$(GO) test -race -count=1 -timeout 20m -v ./harness/sdlab/
