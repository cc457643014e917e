# berth — the two set-up commands are `make run` and `make test`.
#   make         build berth (release) and the guests
#   make run     boot configs/default.toml with the probe guest
#   make test    every test: lint, unit, integration (real KVM), doctests, golden plans,
#                the Linux smoke test (fetches Debian's kernel once, cached)
#   make linux-smoke  just the Linux smoke test
#   make fuzz    run every fuzz target for FUZZ_SECONDS (default 60) each
#   make fuzz-smoke  every fuzz target once over its checked-in corpus (in make test)
#   make check   rustfmt + clippy -D warnings
#   make golden  rewrite configs/golden/*.plan from the current code
#   make hot-functions  rewrite tools/hot/functions.txt from runs under gdb
#   make bench   berth vs QEMU: startup, first line, footprint, exit cost,
#                coalescing, churn, plan (benches/README.md; bench/results.*)
#   make kut     kvm-unit-tests' x86 suite under berth, checked against
#                tests/kut/expected.toml (in make test; KUT_SRC=tarball|dir,
#                KUT_TESTS="a b", KUT_JOBS=N; QEMU=1 also runs it under QEMU
#                and writes bench/kut.md; BERTH_KUT=skip make test opts out)

CARGO ?= cargo

# The release binary links glibc statically (crt-static): no dynamic loader
# at start and about 1 MiB less resident memory (benches/README.md). It links
# through tools/hot/cc-hot, which puts the functions of a typical run
# (tools/hot/functions.txt, `make hot-functions`) together at the start of
# .text: another 1.3 MiB less resident. Naming the host target keeps both
# flags off build scripts and proc macros, so the binary lands in
# target/<host>/release/.
HOST_TARGET := $(shell rustc -vV | sed -n 's/^host: //p')
STATIC := RUSTFLAGS="-C target-feature=+crt-static -C linker=$(CURDIR)/tools/hot/cc-hot"
RELEASE := --release --target $(HOST_TARGET)
BERTH := target/$(HOST_TARGET)/release/berth

.PHONY: all guests berth run test test-tools check golden clean linux-fetch linux-smoke bench fuzz fuzz-smoke hot-functions \
	kut kut-tool kut-test

FUZZ_SECONDS ?= 60

# The real-kernel unit tests (bzImage zero page, PVH start_info) read these;
# with BERTH_REQUIRE_INPUTS a missing input fails a test instead of skipping it.
LINUX_ENV := BERTH_REQUIRE_INPUTS=1 BERTH_LINUX_BZIMAGE=$(CURDIR)/target/linux/vmlinuz BERTH_LINUX_VMLINUX=$(CURDIR)/target/linux/vmlinux

all: guests berth

guests:
	$(MAKE) -C guests

berth:
	$(STATIC) $(CARGO) build $(RELEASE)

run: all
	$(BERTH) run configs/default.toml; status=$$?; \
	  echo "berth exited with status $$status (1 = the probe wrote 0 to debug-exit)"; \
	  test $$status -eq 1

check:
	$(CARGO) fmt --check
	$(CARGO) clippy --all-targets -- -D warnings
	$(CARGO) fmt --check --manifest-path tools/kut/Cargo.toml
	$(CARGO) clippy $(KUT_CARGO) --all-targets -- -D warnings
	RUSTDOCFLAGS="-D warnings" $(CARGO) doc --no-deps --quiet

# The tools the integration tests run: strace (tests/foundation.rs, irq.rs)
# and gdb (tests/gdb.rs), installed with apt only when missing.
test-tools:
	command -v strace >/dev/null 2>&1 || \
	  { apt-get update && apt-get install -y strace; }
	command -v gdb >/dev/null 2>&1 || \
	  { apt-get update && apt-get install -y gdb; }

test: guests berth test-tools linux-fetch check
	$(LINUX_ENV) $(CARGO) test --all-targets
	$(LINUX_ENV) $(CARGO) test --doc
	$(MAKE) fuzz-smoke
	$(MAKE) kut-test

# The functions a typical run executes, for cc-hot (tools/hot/collect).
hot-functions: all test-tools
	sh tools/hot/collect
	$(MAKE) berth

fuzz: guests
	bash fuzz/run.sh $(FUZZ_SECONDS)

fuzz-smoke: guests
	bash fuzz/run.sh --smoke

linux-fetch:
	sh tests/linux/fetch.sh

linux-smoke: guests linux-fetch
	$(LINUX_ENV) $(CARGO) test --lib real_ -- --nocapture
	$(CARGO) test --test linux -- --nocapture

# berth vs QEMU (benches/README.md): installs qemu-system-x86 and gnuplot-nox
# only when missing, then writes bench/results.{json,md,png}.
bench: all
	command -v qemu-system-x86_64 >/dev/null 2>&1 || \
	  { apt-get update && apt-get install -y qemu-system-x86; }
	command -v gnuplot >/dev/null 2>&1 || \
	  { apt-get update && apt-get install -y gnuplot-nox; }
	$(STATIC) $(CARGO) bench --bench compare --target $(HOST_TARGET)

# kvm-unit-tests under berth (tools/kut, its own Cargo package built into
# target/kut-tool; berth never links it). The source tarball is unpacked and
# built once into target/kut/build/<tarball name>/; every test gets a machine
# file in target/kut/machines/ and a log in target/kut/logs/.
KUT_SRC ?= ../shared/kvm-unit-tests-1da1819e.tar.gz
KUT_TESTS ?=
KUT_JOBS ?= 1
KUT_ARGS ?=
KUT_CARGO := --manifest-path tools/kut/Cargo.toml --target-dir target/kut-tool
KUT_TOOL := target/kut-tool/debug/berth-kut
KUT_RUN = $(KUT_TOOL) --src $(KUT_SRC) -j $(KUT_JOBS) $(KUT_ARGS)

kut-tool:
	$(CARGO) build $(KUT_CARGO)

ifeq ($(QEMU),1)
# berth's release binary (what users run) against QEMU through KUT's own
# run_tests.sh; installs qemu-system-x86 only when missing, as make bench.
kut: kut-tool berth
	command -v qemu-system-x86_64 >/dev/null 2>&1 || \
	  { apt-get update && apt-get install -y qemu-system-x86; }
	$(KUT_RUN) --berth $(BERTH) --qemu --report bench/kut.md "$(KUT_TESTS)"
else
kut: kut-tool
	$(CARGO) build --bin berth
	$(KUT_RUN) --berth target/debug/berth "$(KUT_TESTS)"
endif

# make test's hook: never passes silently without the source.
kut-test:
	@if [ "$(BERTH_KUT)" = skip ]; then \
	  if [ -e "$(KUT_SRC)" ]; then echo "kut: SKIPPED (BERTH_KUT=skip)"; \
	  else echo "kut: SKIPPED (source not found at $(KUT_SRC))"; fi; \
	elif [ ! -e "$(KUT_SRC)" ]; then \
	  echo "kut: kvm-unit-tests source not found at $(KUT_SRC): set KUT_SRC to its tarball or source directory, or opt out explicitly with BERTH_KUT=skip make test" >&2; \
	  exit 1; \
	else \
	  $(CARGO) test $(KUT_CARGO) && $(MAKE) kut; \
	fi

golden: guests linux-fetch
	BERTH_BLESS=1 $(CARGO) test --test golden

clean:
	$(MAKE) -C guests clean
	$(CARGO) clean
