/*
 * lib.h - shared definitions for the berth integration-test guests
 * (guests/test/<name>.S). Included through the C preprocessor (the .S files are
 * assembled with `cc -c`), so it holds only #defines.
 *
 * Entry contract (same as guests/probe/probe.S): ELF64 loaded at 0x100000
 * with p_vaddr == p_paddr, entered at _start in 64-bit long mode, paging on
 * with the first 1 GiB identity mapped by 2 MiB pages (PML4 0x9000, PDPT
 * 0xa000, PD 0xb000), CS = 0x8, data selector 0x10, GDT at 0x500, interrupts
 * off, IDT base 0x520 limit 7 (unusable), %rsi = boot_params (0x7000).
 *
 * Routines in lib.S (each preserves every register it does not return in;
 * flags are clobbered):
 *   putc        %al -> COM1, polling LSR.THRE (bounded, see lib.S)
 *   putc_raw    %al -> COM1, no polling at all
 *   newline     "\n"
 *   puts        NUL-terminated string at %rsi
 *   put_dec     %rax as unsigned decimal
 *   put_hex     low %ecx nibbles of %rax as lowercase hex (no prefix)
 *   put_hex64   %rax as 16 lowercase hex digits (no prefix)
 * In apic.S (linked into rtc and resample only):
 *   apic_setup  maps the I/O APIC and LAPIC (3..4 GiB, uncached), masks the
 *               8259s, loads an IDT of 256 absent gates, enables the LAPIC
 *   idt_gate    64-bit interrupt gate to the handler at %rax for vector %ecx
 *   debug_exit  writes %eax (32-bit outl) to the isa-debug-exit port; if the
 *               VMM keeps running it loops on `cli; hlt`. Never returns.
 *   stack_top   (symbol) top of a 16 KiB stack in .bss.
 */
#ifndef BERTH_TEST_LIB_H
#define BERTH_TEST_LIB_H

#define COM1_THR            0x3f8
#define COM1_LSR            0x3fd
#define LSR_THR_EMPTY       0x20
#define UART_POLL_LIMIT     1000
#define DEBUG_EXIT_PORT     0xf4

#define STACK_SIZE          16384

/* Print the NUL-terminated string at label `str`. */
#define PUTS(str)       lea str(%rip), %rsi; call puts

/* Leave through isa-debug-exit with 32-bit value `v` (never returns). */
#define EXIT(v)         mov $(v), %eax; jmp debug_exit

/*
 * Common entry prologue: interrupts off (they already are), own stack.
 * Use at the top of each guest, right after the `_start:` label.
 */
#define GUEST_PROLOGUE  cli; lea stack_top(%rip), %rsp; xor %ebp, %ebp

/*
 * The whole entry: 64-bit code in .text.start, the global `_start` symbol and
 * the prologue. A guest starts with `GUEST_START` and its first instruction.
 */
#define GUEST_START     .code64; .section .text.start, "ax", @progbits; \
                        .globl _start; .type _start, @function; \
                        _start: GUEST_PROLOGUE

#endif /* BERTH_TEST_LIB_H */
