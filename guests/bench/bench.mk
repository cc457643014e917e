# bench.mk - berth benchmark guests (guests/bench/bench.S -> guests/bench-*.elf).
# Included by guests/Makefile (paths relative to guests/, i.e. make -C guests).
# It only adds variables and pattern rules, so the Makefile's `all` stays the
# default goal. bench.S is assembled once per mode (ELF32, -m32) and each
# object is linked twice: with bench/pvh.ld (PVH note) and with
# bench/mb.ld (multiboot v1 header). 16 images:
#   bench-{exit,line,pio,mmio,idle,snap,tick,dirty}-{pvh,mb}.elf
#
#   make -C guests                                   -> all guests incl. these
#   make -C guests -B bench-pio-pvh.elf BENCH_N=N    -> pio/mmio loop count
#                                                       (default 100000)
#   make -C guests -B bench-mmio-mb.elf BENCH_MMIO=0xADDR
#                                                    -> mmio store target
#                                                       (default 0xd0001000)

BENCH_MODES    := exit line pio mmio idle snap tick dirty
BENCH_PVH_ELFS := $(addprefix bench-,$(addsuffix -pvh.elf,$(BENCH_MODES)))
BENCH_MB_ELFS  := $(addprefix bench-,$(addsuffix -mb.elf,$(BENCH_MODES)))
BENCH_ELFS     := $(BENCH_PVH_ELFS) $(BENCH_MB_ELFS)
BENCH_OBJS     := $(addprefix bench/bench-,$(addsuffix .o,$(BENCH_MODES)))
BENCH_SRC      := bench/bench.S
BENCH_PVH_LD   := bench/pvh.ld
BENCH_MB_LD    := bench/mb.ld

# Mode -> preprocessor symbol.
BENCH_DEF_exit := BENCH_MODE_EXIT
BENCH_DEF_line := BENCH_MODE_LINE
BENCH_DEF_pio  := BENCH_MODE_PIO
BENCH_DEF_mmio := BENCH_MODE_MMIO
BENCH_DEF_idle := BENCH_MODE_IDLE
BENCH_DEF_snap := BENCH_MODE_SNAP
BENCH_DEF_tick := BENCH_MODE_TICK
BENCH_DEF_dirty := BENCH_MODE_DIRTY

# Optional build-time knobs, passed to the preprocessor only when set.
BENCH_CPPFLAGS := $(if $(BENCH_N),-DBENCH_N=$(BENCH_N)) \
                  $(if $(BENCH_MMIO),-DBENCH_MMIO=$(BENCH_MMIO))

BENCH_ASFLAGS := -c -m32 -ffreestanding -fno-pic -fno-asynchronous-unwind-tables \
                 -Wall -Werror
BENCH_LDFLAGS := -m32 -nostdlib -static -no-pie -Wl,--build-id=none

# Pattern rules only (an explicit or static-pattern target here would become
# the default goal, as this file is included before `all`). The linker
# scripts are not named bench-*: make's built-in `%: %.o` rule would then
# find bench/bench-<script>.o "buildable" by the object rule.
bench/bench-%.o: $(BENCH_SRC) bench/bench.mk
	$(CC) $(BENCH_ASFLAGS) $(BENCH_CPPFLAGS) -D$(BENCH_DEF_$*) -o $@ $<

bench-%-pvh.elf: bench/bench-%.o $(BENCH_PVH_LD)
	$(CC) $(BENCH_LDFLAGS) -Wl,-T,$(BENCH_PVH_LD) -o $@ $<

bench-%-mb.elf: bench/bench-%.o $(BENCH_MB_LD)
	$(CC) $(BENCH_LDFLAGS) -Wl,-T,$(BENCH_MB_LD) -o $@ $<

# Keep the objects (make would otherwise delete them as intermediates).
.SECONDARY: $(BENCH_OBJS)
