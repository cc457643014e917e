# test.mk - berth integration-test guests (guests/test/*.S -> guests/<name>.elf).
# Included by guests/Makefile (paths relative to guests/, i.e. make -C guests).
# It adds variables, pattern rules and the explicit rules of the guests linked
# without a script; .DEFAULT_GOAL keeps the Makefile's `all` the default goal. Each guest links its own <name>.o with the shared lib.o using
# the probe's linker script (entry _start at 0x100000, p_vaddr == p_paddr).
#
#   make -C guests                               -> all guests incl. these
#   make -C guests -B flood.elf FLOOD_BYTES=N    -> flood with N bytes
#                                                   (default 512 KiB)

TEST_GUESTS := gdb gdbirq spin halt triple cmpxchg16b ports flood apspin testdev memread bell strio msiflood s3 s3nowake s3never s3novec rtc pages resample counter counter-hot
TEST_ELFS   := $(addsuffix .elf,$(TEST_GUESTS))
TEST_LIB    := test/lib.o
TEST_OBJS   := $(addprefix test/,$(addsuffix .o,$(TEST_GUESTS))) $(TEST_LIB)
TEST_LD     := probe/probe.ld

# Optional build-time knobs, passed to the preprocessor only when set.
TEST_CPPFLAGS := $(if $(FLOOD_BYTES),-DFLOOD_BYTES=$(FLOOD_BYTES)) \
                 $(if $(APSPIN_LOOPS),-DAPSPIN_LOOPS=$(APSPIN_LOOPS))

TEST_ASFLAGS := -c -m64 -ffreestanding -fno-pic -fno-asynchronous-unwind-tables \
                -Wall -Werror
TEST_LDFLAGS := -nostdlib -static -no-pie -Wl,--build-id=none -Wl,-T,$(TEST_LD)

test/%.o: test/%.S test/lib.h test/test.mk test/s3.S ap_trampoline.inc
	$(CC) $(TEST_ASFLAGS) $(TEST_CPPFLAGS) -o $@ $<

%.elf: test/%.o $(TEST_LIB) $(TEST_LD)
	$(CC) $(TEST_LDFLAGS) -o $@ $< $(TEST_LIB)

# The guests that take interrupts also link apic.o (I/O APIC and LAPIC
# mapping, IDT gates); the others keep the layout they had without it.
APIC_GUESTS := rtc resample gdbirq
TEST_OBJS   += test/apic.o
$(addsuffix .elf,$(APIC_GUESTS)): %.elf: test/%.o test/apic.o $(TEST_LIB) $(TEST_LD)
	$(CC) $(TEST_LDFLAGS) -o $@ $< test/apic.o $(TEST_LIB)

# The gdb stub's guest carries debug info (tests/gdb.rs: `break`, `x`, `watch` by symbol).
test/gdb.o test/gdbirq.o: TEST_ASFLAGS += -g

# Keep the objects (make would otherwise delete them as intermediates).
.SECONDARY: $(TEST_OBJS)

# Guests linked without a linker script, the way issue 10's users link them
# (GNU ld then adds a header-only PT_LOAD below the text):
#   pvh-gcc.elf  PVH ELF64, text at 0x100000, header-only segment at 0xff000
#   mb-low.elf   multiboot ELF32 at 0x8000 (realmode.flat's address), header-only
#                segment at 0x7000
#   mb-acpi.elf  the same at 0xe8000, over the ACPI tables: berth refuses it
# counter-hot: counter.S whose AP dirties 4096 pages (16 MiB) a pass, faster
# than a bandwidth-limited migration can send them; it counts to 10000.
test/counter-hot.o: test/counter.S test/lib.h test/test.mk ap_trampoline.inc
	$(CC) $(TEST_ASFLAGS) $(TEST_CPPFLAGS) -DCOUNTER_AP_PAGES=4096 -DCOUNTER_N=10000 -o $@ $<

.DEFAULT_GOAL := all
PLAIN_ELFS := pvh-gcc.elf mb-low.elf mb-acpi.elf
TEST_ELFS  += $(PLAIN_ELFS)

pvh-gcc.elf: test/pvh-gcc.S test/test.mk
	$(CC) -m64 -nostdlib -static -Wl,-Ttext=0x100000 -o $@ $<

mb-low.elf: test/mb-low.S test/test.mk
	$(CC) -m32 -nostdlib -static -Wl,--build-id=none -Wl,-Ttext=0x8000 -o $@ $<

mb-acpi.elf: test/mb-low.S test/test.mk
	$(CC) -m32 -nostdlib -static -Wl,--build-id=none -Wl,-Ttext=0xe8000 -o $@ $<
