/*
 * gdbirq.S - single-step and interrupts (tests/gdb.rs), built with symbols.
 *
 * Maps the LAPIC and points IDT vector 0x40 at `tick_handler` (apic.S's
 * apic_setup and idt_gate; the handler counts `ticks`, EOIs and `iretq`s),
 * then starts its timer periodic on vector 0x40 (divide by 1, initial count
 * 1000000), `sti`, waits until 5 ticks arrived, then loops for ever at
 * `irq_loop` (`inc %rcx` 3 bytes, `jmp irq_loop` 2 bytes). Ends only from
 * outside (gdb's kill, a timeout, a signal).
 */
#include "lib.h"

#define LAPIC_BASE      0xfee00000
#define TICK_VECTOR     0x40

    .code64
    .section .text.start, "ax", @progbits
    .globl _start
    .type _start, @function
_start:
    GUEST_PROLOGUE
    PUTS(str_start)
    /* Interrupt plumbing (apic.S): LAPIC mapped, PICs masked, the gate. */
    call    apic_setup
    lea     tick_handler(%rip), %rax
    mov     $TICK_VECTOR, %ecx
    call    idt_gate
    mov     $LAPIC_BASE, %edi
    movl    $0xb, 0x3e0(%rdi)                   /* divide by 1 */
    movl    $(TICK_VECTOR | (1 << 17)), 0x320(%rdi) /* LVT timer: periodic */
    movl    $1000000, 0x380(%rdi)               /* initial count */
    sti
1:  cmpl    $5, ticks(%rip)
    jb      1b
    PUTS(str_ticking)
    .globl irq_loop
irq_loop:
    inc     %rcx
    jmp     irq_loop
    .size _start, . - _start

    .globl tick_handler
    .type tick_handler, @function
tick_handler:
    push    %rax
    incl    ticks(%rip)
    mov     $LAPIC_BASE, %eax
    movl    $0, 0xb0(%rax)                      /* EOI */
    pop     %rax
    iretq
    .globl tick_handler_end
tick_handler_end:
    .size tick_handler, . - tick_handler

    .section .rodata, "a", @progbits
str_start:      .asciz "gdbirq: start\n"
str_ticking:    .asciz "gdbirq: ticking\n"

    .section .data, "aw", @progbits
    .balign 8
    .globl ticks
ticks:  .long 0

    .section .note.GNU-stack, "", @progbits
