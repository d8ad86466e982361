# Ladder: the set-up and the everyday commands. See README.md.
#
# `make demo` and `make test` install what is missing on Debian 12 (apt-get;
# nothing is done when everything is there), build, and run.

SHELL := /bin/bash
CARGO ?= cargo
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
# Debian packages. To build: pkg-config, clang and libclang-dev (bindgen), the
# FFmpeg and x264 development files (CPU decode, scale, encode; libavformat
# only because ffmpeg-next 7.1 needs its "format" feature), nasm (rav1e's
# x86 assembly, for the AV1 rungs). To run the tests
# and the demo: ffmpeg (publishes test streams; ffprobe checks what the origin
# serves) and curl; nginx with its RTMP module (the RTMP peer of the restream,
# pull and client tests); chromium (the status page test loads it headless);
# iproute2 (tc: tests/faults.rs impairs loopback with netem where the kernel
# has it). python3 and pip: scripts/ptx.py (CUDA kernels, below). nodejs: the
# player tests (tests/players.rs) drive Chromium from node, with hls.js,
# dash.js, Shaka Player and puppeteer-core installed, pinned, by `npm ci`
# (players-deps, below; Debian's npm package is installed there when no npm is
# found: NodeSource's nodejs, if that is the one installed, bundles npm and
# conflicts with it).
DEB_PACKAGES := pkg-config clang libclang-dev libavcodec-dev libavformat-dev libavutil-dev libswscale-dev \
	libx264-dev nasm ffmpeg curl ca-certificates python3 python3-pip nginx libnginx-mod-rtmp \
	chromium iproute2 nodejs
RUST_MIN := 1.85
PYTHON ?= python3

.PHONY: all deps players-deps build release demo test bench lint fmt clean kernels test-gpu gpu-selftest-bundle check-selftest \
	pkg-deps pkg-tools pkg-assets deb rpm test-package soak fuzz fuzz-seed

all: build

deps:
	@missing=""; for p in $(DEB_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $$missing; \
	fi
	@command -v $(CARGO) >/dev/null || { echo "Rust $(RUST_MIN) or newer is needed: install it with rustup (https://rustup.rs), then run make again." >&2; exit 1; }
	@v=$$($(CARGO) --version | awk '{print $$2}'); \
	if [ "$$(printf '%s\n%s\n' $(RUST_MIN) $$v | sort -V | head -1)" != "$(RUST_MIN)" ]; then \
	  echo "Rust $$v is too old: $(RUST_MIN) or newer is needed (rustup update)." >&2; exit 1; fi

# The players of tests/players.rs, exactly as pinned by package-lock.json
# (npm ci; no install scripts: puppeteer-core downloads no browser, Debian's
# chromium is used). Runs only when package-lock.json is newer than the last
# install; node_modules is git-ignored.
PLAYERS_STAMP := tests/players/node_modules/.ladder-npm-ci
players-deps: deps $(PLAYERS_STAMP)
	@:
$(PLAYERS_STAMP): tests/players/package-lock.json tests/players/package.json
	@command -v npm >/dev/null || { $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends npm; }
	cd tests/players && npm ci --ignore-scripts --no-audit --no-fund
	touch $@

build: deps
	$(CARGO) build --locked

release: deps
	$(CARGO) build --release --locked

# Run the appliance on its embedded default (open mode) and publish a test
# pattern to it with ffmpeg. Ctrl-C stops both.
demo: release
	@bash scripts/demo.sh target/release/ladder

# CUDA kernels: compile kernels/*.cu to PTX in kernels/ptx/ (committed, and
# embedded in the binary by src/pipeline/gpu/kernels.rs) with NVRTC from the
# pinned PyPI wheel nvidia-cuda-nvrtc-cu12, fetched once into target/nvrtc/.
# No GPU or CUDA toolkit needed. Run after editing a .cu file, then commit.
kernels:
	$(PYTHON) scripts/ptx.py

# Every test that needs no GPU: the kernels compile and the committed PTX is
# not stale (scripts/ptx.py --check; under a second once NVRTC is cached),
# then unit, property, integration, and end to end with real ffmpeg and ffprobe.
# With CI=true (a throwaway machine, as root) also the package test, which
# installs the .deb system-wide and purges it.
#
# On CI (a clean clone: nothing to gain from incremental compilation) the
# incremental caches are not written, and the debug build is removed once the
# tests have passed, before the package's release build: with both builds on
# its disk a CI machine ran out of space. Each step prints the build's size.
test: deps players-deps
	$(PYTHON) scripts/ptx.py --check
	$(if $(filter true,$(CI)),CARGO_INCREMENTAL=0) $(CARGO) test --locked --all-targets
	@if [ "$$CI" = true ]; then \
	  echo "CI=true: the tests passed; removing the debug build ($$(du -sh $(TARGET_DIR)/debug | cut -f1)) before the package's release build"; \
	  rm -rf $(TARGET_DIR)/debug; \
	  df -h $(TARGET_DIR) | tail -1; \
	  $(MAKE) --no-print-directory test-package; \
	  echo "release build: $$(du -sh $(TARGET_DIR)/release | cut -f1)"; \
	else \
	  echo "make test-package skipped: it installs and purges the .deb system-wide (CI=true runs it here; or run it yourself)"; \
	fi

# The GPU self-test (docs/GPU-TESTS.md): ladder-gpu-selftest, built without FFmpeg
# (--no-default-features) so it runs on a GPU machine with only the NVIDIA driver.
# The bundle (git-ignored): the binary, README, and yuv/ (libavcodec's decode of each
# fixture, for a PSNR on mismatch; md5 references and fixtures are embedded).
GPU_BUNDLE := target/gpu-selftest
SELFTEST_BIN = $${CARGO_TARGET_DIR:-target}/release/ladder-gpu-selftest

check-selftest:
	$(CARGO) build --locked --release --no-default-features --bin ladder-gpu-selftest

gpu-selftest-bundle: deps check-selftest
	rm -rf $(GPU_BUNDLE) && mkdir -p $(GPU_BUNDLE)/yuv
	LADDER_GPU_YUV_DIR=$(CURDIR)/$(GPU_BUNDLE)/yuv $(CARGO) test --locked --lib gpu_references
	cp $(SELFTEST_BIN) $(GPU_BUNDLE)/
	# without debug info the bundle fits the device tool's 64 MiB carry limit
	strip --strip-debug $(GPU_BUNDLE)/ladder-gpu-selftest
	# libx264 (the hybrid check encodes with it) travels beside the binary;
	# it needs only libc and libm
	cp -L "$$(ldd $(SELFTEST_BIN) | awk '/libx264/ {print $$3}')" $(GPU_BUNDLE)/
	printf '#!/bin/sh\n# the GPU self-test with the libx264 carried beside it\ncd "$$(dirname "$$0")" && LD_LIBRARY_PATH=. exec ./ladder-gpu-selftest "$$@"\n' > $(GPU_BUNDLE)/run
	chmod +x $(GPU_BUNDLE)/run
	cp docs/GPU-TESTS.md $(GPU_BUNDLE)/README.md
	@echo "bundle: $(GPU_BUNDLE) (carry it to a GPU machine and run ./run there)"

# Runs the self-test where libcuda.so.1 loads; elsewhere says the GPU tests were
# skipped and why. Exit status: the self-test's (1 when a check failed).
test-gpu: gpu-selftest-bundle
	@if $(PYTHON) -c 'import ctypes; ctypes.CDLL("libcuda.so.1")' 2>/dev/null; then \
	  $(GPU_BUNDLE)/ladder-gpu-selftest; \
	else \
	  echo "GPU tests skipped: libcuda.so.1 cannot be loaded here (no NVIDIA driver)."; \
	  echo "The self-test says the same per check:"; \
	  $(GPU_BUNDLE)/ladder-gpu-selftest; \
	fi

# Packages: make deb, make rpm (README.md "Install"). The release binary,
# and from it the man page and the shell completions (`ladder generate`), in
# $(PKG_ASSETS); cargo-deb and cargo-generate-rpm are installed into
# ~/.cargo/bin when missing (built in a temporary directory, not
# CARGO_TARGET_DIR). Output: $(PKG_OUT)/.
#   dpkg-dev: dpkg-shlibdeps, for the .deb's library dependencies;
#   systemd: systemd-analyze and systemd-sysusers (the package test installs
#   the .deb); rpm: rpm -qlp lists the .rpm.
PKG_DEB_PACKAGES := dpkg-dev systemd rpm binutils
CARGO_DEB_VERSION := 3.8.0
CARGO_GENERATE_RPM_VERSION := 0.21.1
TARGET_DIR := $(or $(CARGO_TARGET_DIR),target)
PKG_ASSETS := $(TARGET_DIR)/release/pkg
PKG_OUT := $(TARGET_DIR)/packages
PKG_VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
DEB_FILE = $(PKG_OUT)/ladder_$(PKG_VERSION)-1_$(shell dpkg --print-architecture 2>/dev/null || echo amd64).deb
RPM_FILE = $(PKG_OUT)/ladder-$(PKG_VERSION)-1.$(shell uname -m).rpm

pkg-deps: deps
	@missing=""; for p in $(PKG_DEB_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $$missing; \
	fi

pkg-tools:
	@$(CARGO) deb --version >/dev/null 2>&1 || env -u CARGO_TARGET_DIR $(CARGO) install --locked cargo-deb@$(CARGO_DEB_VERSION)
	@$(CARGO) generate-rpm --version >/dev/null 2>&1 || env -u CARGO_TARGET_DIR $(CARGO) install --locked cargo-generate-rpm@$(CARGO_GENERATE_RPM_VERSION)

pkg-assets: pkg-deps release
	@set -eo pipefail; bin=$(TARGET_DIR)/release/ladder; mkdir -p $(PKG_ASSETS); \
	$$bin generate man | gzip -9n > $(PKG_ASSETS)/ladder.1.gz; \
	$$bin generate completions bash > $(PKG_ASSETS)/ladder.bash; \
	$$bin generate completions zsh > $(PKG_ASSETS)/_ladder; \
	$$bin generate completions fish > $(PKG_ASSETS)/ladder.fish; \
	strip --strip-debug -o $(PKG_ASSETS)/ladder $$bin; \
	echo "package assets: $(PKG_ASSETS)"

deb: pkg-assets pkg-tools
	@mkdir -p $(PKG_OUT)
	$(CARGO) deb --no-build --strip --no-dbgsym --output $(DEB_FILE)

# Requires: the libraries the binary links, as rpmbuild finds them (rpm's
# find-requires: direct sonames and symbol versions, not ldd's transitive list),
# and the users and groups of sysusers.d/ladder.conf (as RPM 4.19 does).
rpm: pkg-assets pkg-tools
	@mkdir -p $(PKG_OUT)
	$(CARGO) generate-rpm --auto-req find-requires --output $(RPM_FILE)

# Installs the .deb with dpkg, checks it, runs the installed binary as the
# unit does, publishes and plays, purges; lists the .rpm. Root (or sudo):
# it changes the system. packaging/test-package.sh says what it checks.
test-package: deb rpm
	$(SUDO) bash packaging/test-package.sh $(DEB_FILE) $(RPM_FILE)

# The soak (docs/RELIABILITY.md): SOAK_MINUTES (default 30) of 4 channels, each
# transcoding from a publisher SIGKILLed every 1 to 5 minutes, with LL-HLS and
# DASH viewers; memory, file descriptors, threads and tasks sampled every
# minute. Fails on a drift over 5%, a viewer protocol error or a crash.
# Output: target/soak/<time>/.
SOAK_MINUTES ?= 30
soak: release
	$(PYTHON) scripts/soak.py --minutes $(SOAK_MINUTES)

# Fuzzing (fuzz/README.md): every cargo-fuzz target for FUZZ_SECONDS (default
# 600) each, FUZZ_JOBS at a time; nightly Rust and cargo-fuzz (installed when
# missing). `make test` replays the committed corpus on stable
# (tests/fuzz_corpus.rs). fuzz-seed rebuilds the seeds from real ffmpeg and
# nginx-rtmp traffic.
fuzz: deps
	bash scripts/fuzz.sh

fuzz-seed: deps
	$(PYTHON) fuzz/seed.py --force

# Every benchmark (benches/README.md), among them `channels`: `ladder bench`
# (channels per box, or per GPU) side by side with ffmpeg doing the same ladder.
bench: deps
	$(CARGO) bench --locked

lint:
	$(CARGO) fmt --check
	$(CARGO) clippy --locked --all-targets -- -D warnings

fmt:
	$(CARGO) fmt

clean:
	$(CARGO) clean
