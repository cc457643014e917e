/*
 * bench.S - minimal 32-bit benchmark guests for berth (and QEMU, to compare).
 *
 * One source, eight modes chosen at compile time (exactly one of
 * -DBENCH_MODE_EXIT, _LINE, _PIO, _MMIO, _IDLE, _SNAP, _TICK, _DIRTY), each linked twice (see
 * guests/bench/bench.mk):
 *   bench-<mode>-pvh.elf  PVH: a XEN_ELFNOTE_PHYS32_ENTRY note (type 18,
 *                         name "Xen", 4-byte entry _start), no multiboot
 *                         header (bench/pvh.ld)
 *   bench-<mode>-mb.elf   multiboot v1: header first in .text (file offset
 *                         0x1000, inside the first 8 KiB), no PVH note
 *                         (bench/mb.ld)
 * The code is identical in both; nothing depends on the boot protocol and
 * the command line is never read.
 *
 * IMAGES. ELF32 i386 (QEMU's -kernel multiboot loader refuses ELF64
 * without the a.out kludge). PT_LOAD segments at physical 0x100000 (1 MiB)
 * with p_vaddr == p_paddr: R+X .text + .rodata (+ the note), then R+W .bss
 * (p_filesz 0: the 256-byte stack). The multiboot header's flags are 0: no
 * requirements and no address fields, so berth (src/boot/multiboot.rs) and
 * QEMU both load the ELF program headers and enter at e_entry (_start).
 *
 * ENTRY CONTRACT (both protocols): 32-bit protected mode, flat 4 GiB
 * CS/DS/ES/SS, paging off, interrupts off. PVH: %ebx = hvm_start_info;
 * multiboot: %eax = 0x2badb002, %ebx = multiboot_info; both ignored. The
 * incoming %esp is undefined (neither protocol gives a stack): except in
 * exit mode, _start loads %esp with the top of its own 256-byte .bss stack,
 * although nothing is ever pushed. No GDT/IDT is loaded; flat DS from the
 * loader is used for the stores. Nothing relies on .bss being zeroed.
 *
 * MODES (every one but idle, tick and dirty ends through isa-debug-exit with value 0: `outl`
 * of 0 to port 0xf4, VMM exit status (0 << 1) | 1 = 1; should the VMM keep
 * running, `cli; hlt` forever):
 *   exit  the very first instructions are `xor %eax, %eax; outl %eax, $0xf4`
 *         (time from VMM start to the first guest instruction).
 *   line  prints exactly "bench: first line\n" on COM1 (8250 at 0x3f8),
 *         polling LSR (0x3fd) for THR empty (bit 5) at most UART_POLL_LIMIT
 *         times per byte and not at all after the first timeout (like
 *         guests/test/lib.S), then `movb $123, 0xd0000000` (Firecracker's
 *         boot-timer convention: one 1-byte MMIO write of 123 to
 *         BENCH_BOOT_TIMER), then exits.
 *   pio   BENCH_N iterations of `outb %al, $0x80` (the no-op POST port),
 *         loop: out/dec/jnz, then exits.
 *   mmio  BENCH_N iterations of a 1-byte store `movb %al, (%edi)` to
 *         BENCH_MMIO (default 0xd0001000, unclaimed MMIO), loop:
 *         mov/dec/jnz, then exits.
 *   snap  like line mode with two lines, "bench: ready\n" then
 *         "bench: resumed\n": the snapshot benchmark snapshots berth at the
 *         first (--snapshot-at) and times a restore to the second.
 *   idle  prints exactly "bench: idle\n" on COM1 like line mode (the sign
 *         that it runs), then `cli; hlt` forever without exiting: the
 *         density benchmark's idle VM, stopped by signalling the VMM.
 *   tick  for ever: print "t <8 hex digits>\n" (a counter from 0), then
 *         busy-wait BENCH_TICK_DELAY iterations: the migration benchmark's
 *         idle guest (the host timestamps each line; the longest gap around
 *         the switch is the guest-visible downtime).
 *   dirty tick, and before each line write the counter into the first
 *         dword of BENCH_DIRTY_PER_TICK pages, round-robin over
 *         BENCH_DIRTY_MIB MiB from 16 MiB: the busy guest.
 * Build-time knobs: -DBENCH_N=N (default 100000, >= 1), -DBENCH_MMIO=ADDR
 * (make BENCH_N=... BENCH_MMIO=..., with -B to rebuild).
 *
 * Host cost model: on a PVM host every guest CPL0 instruction may be
 * emulated (~1 us each), so the hot paths are three instructions and there
 * is no other work. Plain integer instructions, in/out, cli, hlt only: no
 * SSE/MMX/x87, no string instructions, no iret.
 */

#define DEBUG_EXIT_PORT     0xf4
#define COM1_THR            0x3f8
#define COM1_LSR            0x3fd
#define LSR_THR_EMPTY       0x20
#define UART_POLL_LIMIT     100
#define POST_PORT           0x80
#define BENCH_BOOT_TIMER    0xd0000000
#define BOOT_TIMER_VALUE    123
#define STACK_SIZE          256

#define MB_HEADER_MAGIC     0x1badb002
#define MB_HEADER_FLAGS     0                   /* no requirements, ELF load */
#define XEN_ELFNOTE_PHYS32_ENTRY 18

#ifndef BENCH_N
#define BENCH_N             100000
#endif
#ifndef BENCH_MMIO
#define BENCH_MMIO          0xd0001000
#endif

#ifndef BENCH_TICK_DELAY
#define BENCH_TICK_DELAY    300
#endif
#ifndef BENCH_DIRTY_PER_TICK
#define BENCH_DIRTY_PER_TICK 256
#endif
#ifndef BENCH_DIRTY_MIB
#define BENCH_DIRTY_MIB     32
#endif
#define DIRTY_BASE          0x1000000

#if defined(BENCH_MODE_EXIT) + defined(BENCH_MODE_LINE) + \
    defined(BENCH_MODE_PIO) + defined(BENCH_MODE_MMIO) + \
    defined(BENCH_MODE_IDLE) + defined(BENCH_MODE_SNAP) + defined(BENCH_MODE_TICK) + \
    defined(BENCH_MODE_DIRTY) != 1
#error "define exactly one of BENCH_MODE_EXIT, _LINE, _PIO, _MMIO, _IDLE, _SNAP, _TICK, _DIRTY"
#endif
#if BENCH_N < 1
#error "BENCH_N must be at least 1"
#endif

    .code32
    .section .text.start, "ax", @progbits
    .globl _start
    .type _start, @function
_start:
#if defined(BENCH_MODE_EXIT)
    xor     %eax, %eax
    outl    %eax, $DEBUG_EXIT_PORT
    jmp     halt_forever
#else
    cli
    mov     $stack_top, %esp

#if defined(BENCH_MODE_LINE) || defined(BENCH_MODE_IDLE) || defined(BENCH_MODE_SNAP)
    mov     $line, %esi
    mov     $UART_POLL_LIMIT, %ebx      /* polls per byte; 0 after a timeout */
next_byte:
    movb    (%esi), %cl
    test    %cl, %cl
    jz      line_done
    mov     %ebx, %edi
    test    %edi, %edi
    jz      send
    mov     $COM1_LSR, %edx
poll:
    inb     %dx, %al
    test    $LSR_THR_EMPTY, %al
    jnz     send
    dec     %edi
    jnz     poll
    xor     %ebx, %ebx                  /* never ready: stop polling */
send:
    mov     $COM1_THR, %edx
    mov     %cl, %al
    outb    %al, %dx
    inc     %esi
    jmp     next_byte
line_done:
#if defined(BENCH_MODE_IDLE)
    jmp     halt_forever
#else
    movb    $BOOT_TIMER_VALUE, BENCH_BOOT_TIMER
#endif

#elif defined(BENCH_MODE_PIO)
    mov     $BENCH_N, %ecx
1:  outb    %al, $POST_PORT
    dec     %ecx
    jnz     1b

#elif defined(BENCH_MODE_MMIO)
    mov     $BENCH_N, %ecx
    mov     $BENCH_MMIO, %edi
1:  movb    %al, (%edi)
    dec     %ecx
    jnz     1b

#elif defined(BENCH_MODE_TICK) || defined(BENCH_MODE_DIRTY)
    xor     %ebp, %ebp                  /* the counter */
    mov     $DIRTY_BASE, %edi           /* next page to dirty */
tick:
#if defined(BENCH_MODE_DIRTY)
    mov     $BENCH_DIRTY_PER_TICK, %ecx
1:  mov     %ebp, (%edi)
    add     $0x1000, %edi
    cmp     $(DIRTY_BASE + (BENCH_DIRTY_MIB << 20)), %edi
    jb      2f
    mov     $DIRTY_BASE, %edi
2:  dec     %ecx
    jnz     1b
#endif
    mov     $'t', %cl
    call    putc
    mov     $' ', %cl
    call    putc
    mov     %ebp, %eax
    mov     $8, %esi
3:  rol     $4, %eax
    mov     %eax, %ebx
    and     $15, %ebx
    movb    hexdigits(%ebx), %cl
    call    putc
    dec     %esi
    jnz     3b
    mov     $'\n', %cl
    call    putc
    mov     $BENCH_TICK_DELAY, %ecx
4:  dec     %ecx
    jnz     4b
    inc     %ebp
    jmp     tick
#endif

    xor     %eax, %eax
    outl    %eax, $DEBUG_EXIT_PORT
#endif /* !BENCH_MODE_EXIT */
halt_forever:
    cli
    hlt
    jmp     halt_forever
    .size _start, . - _start

#if defined(BENCH_MODE_TICK) || defined(BENCH_MODE_DIRTY)
/* putc: %cl -> COM1 after polling LSR (bounded); preserves all but flags. */
putc:
    push    %eax
    push    %ebx
    push    %edx
    mov     $UART_POLL_LIMIT, %ebx
    mov     $COM1_LSR, %edx
1:  inb     %dx, %al
    test    $LSR_THR_EMPTY, %al
    jnz     2f
    dec     %ebx
    jnz     1b
2:  mov     $COM1_THR, %edx
    mov     %cl, %al
    outb    %al, %dx
    pop     %edx
    pop     %ebx
    pop     %eax
    ret

    .section .rodata, "a", @progbits
hexdigits:
    .ascii  "0123456789abcdef"
#endif

#if defined(BENCH_MODE_LINE)
    .section .rodata, "a", @progbits
line:
    .asciz  "bench: first line\n"
#elif defined(BENCH_MODE_IDLE)
    .section .rodata, "a", @progbits
line:
    .asciz  "bench: idle\n"
#elif defined(BENCH_MODE_SNAP)
    .section .rodata, "a", @progbits
line:
    .asciz  "bench: ready\nbench: resumed\n"
#endif

/* Multiboot v1 header (kept by bench/mb.ld only). */
    .section .multiboot, "a", @progbits
    .balign 4
    .long   MB_HEADER_MAGIC
    .long   MB_HEADER_FLAGS
    .long   -(MB_HEADER_MAGIC + MB_HEADER_FLAGS)

/* PVH: XEN_ELFNOTE_PHYS32_ENTRY, name "Xen", 4-byte physical entry (kept by
 * bench/pvh.ld only). */
    .section .note.Xen, "a", @note
    .balign 4
    .long   4                                   /* namesz */
    .long   4                                   /* descsz */
    .long   XEN_ELFNOTE_PHYS32_ENTRY
    .asciz  "Xen"
    .long   _start

    .section .bss, "aw", @nobits
    .balign 16
    .skip   STACK_SIZE
stack_top:

    .section .note.GNU-stack, "", @progbits
