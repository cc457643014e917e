# test.mk - berth integration-test guests (guests/test/*.S -> guests/<name>.elf).
# Included by guests/Makefile (paths relative to guests/, i.e. make -C guests).
# It only adds variables and pattern rules, so the Makefile's `all` stays the
# default goal. Each guest links its own <name>.o with the shared lib.o using
# the probe's linker script (entry _start at 0x100000, p_vaddr == p_paddr).
#
#   make -C guests                               -> all guests incl. these
#   make -C guests -B flood.elf FLOOD_BYTES=N    -> flood with N bytes
#                                                   (default 512 KiB)

TEST_GUESTS := spin halt triple cmpxchg16b ports flood apspin memread
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

test/%.o: test/%.S test/lib.h test/test.mk
	$(CC) $(TEST_ASFLAGS) $(TEST_CPPFLAGS) -o $@ $<

%.elf: test/%.o $(TEST_LIB) $(TEST_LD)
	$(CC) $(TEST_LDFLAGS) -o $@ $< $(TEST_LIB)

# Keep the objects (make would otherwise delete them as intermediates).
.SECONDARY: $(TEST_OBJS)
