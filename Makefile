# berth — the two set-up commands are `make run` and `make test`.
#   make         build berth (release) and the guests
#   make run     boot configs/default.toml with the probe guest
#   make test    every test: lint, unit, integration (real KVM), golden plans
#   make check   rustfmt + clippy -D warnings
#   make golden  rewrite configs/golden/*.plan from the current code
#   make bench   start-up benchmarks (see benches/README.md)

CARGO ?= cargo
BERTH := target/release/berth

.PHONY: all guests berth run test check golden clean

all: guests berth

guests:
	$(MAKE) -C guests

berth:
	$(CARGO) build --release

run: all
	$(BERTH) run configs/default.toml; status=$$?; \
	  echo "berth exited with status $$status (1 = the probe wrote 0 to debug-exit)"; \
	  test $$status -eq 1

check:
	$(CARGO) fmt --check
	$(CARGO) clippy --all-targets -- -D warnings

test: guests check
	$(CARGO) test --all-targets

golden: guests
	BERTH_BLESS=1 $(CARGO) test --test golden

clean:
	$(MAKE) -C guests clean
	$(CARGO) clean
