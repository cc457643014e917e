/*
 * gdbirq.S - single-step and interrupts (tests/gdb.rs), built with symbols.
 *
 * Maps the LAPIC (0xfee00000, an uncached 2 MiB page in its own page
 * directory, PDPT slot 3), points IDT vector 0x40 at `tick_handler` (64-bit
 * interrupt gate; it counts `ticks`, EOIs and `iretq`s), enables the LAPIC
 * and starts its timer periodic on vector 0x40 (divide by 1, initial count
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
    lea     pd_hi(%rip), %rdi
    mov     $((0xfee00000 >> 21) - 0x600), %eax
    mov     $0xfee00093, %edx                   /* P RW PCD PS */
    mov     %rdx, (%rdi,%rax,8)
    or      $3, %rdi
    mov     %rdi, 0xa000 + 3 * 8
    mov     %cr3, %rax
    mov     %rax, %cr3
    lea     tick_handler(%rip), %rax
    lea     idt + TICK_VECTOR * 16(%rip), %rdi
    mov     %eax, %edx
    and     $0xffff, %edx
    or      $(0x08 << 16), %edx
    mov     %edx, (%rdi)
    mov     %eax, %edx
    and     $0xffff0000, %edx
    or      $0x8e00, %edx
    mov     %edx, 4(%rdi)
    movq    $0, 8(%rdi)
    lidt    idtr(%rip)
    mov     $LAPIC_BASE, %edi
    movl    $0, 0x80(%rdi)                      /* TPR */
    movl    $0x1ff, 0xf0(%rdi)                  /* SVR: enabled */
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
idtr:
    .word   256 * 16 - 1
    .quad   idt
    .globl ticks
ticks:  .long 0

    .section .bss, "aw", @nobits
    .balign 4096
idt:
    .skip   256 * 16
    .balign 4096
pd_hi:
    .skip   4096

    .section .note.GNU-stack, "", @progbits
