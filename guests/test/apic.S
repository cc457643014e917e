/*
 * apic.S - interrupt plumbing for the test guests that take interrupts
 * (rtc, resample), linked only into them (test.mk) so the other guests'
 * memory layout stays as it was. See lib.h for the contract.
 */
#include "lib.h"

    .code64
    .text
/*
 * apic_setup: map 3..4 GiB (the I/O APIC at 0xfec00000, the LAPIC at
 * 0xfee00000) with 2 MiB uncached pages through a page directory of its own
 * in PDPT (0xa000) slot 3, mask both 8259s, load `apic_idt` (256 absent
 * gates) and enable the LAPIC (TPR 0, SVR 0x1ff). Clobbers %rax, %rdx, %rdi.
 */
    .globl apic_setup
    .type apic_setup, @function
apic_setup:
    lea     apic_pd(%rip), %rdi
    mov     $((0xfec00000 >> 21) - 0x600), %eax /* slot of 0xfec00000 */
    mov     $0xfec00093, %edx                   /* P RW PCD PS */
    mov     %rdx, (%rdi,%rax,8)
    mov     $0xfee00093, %edx
    mov     %rdx, 8(%rdi,%rax,8)
    or      $3, %rdi                            /* P RW */
    mov     %rdi, 0xa000 + 3 * 8
    mov     %cr3, %rax
    mov     %rax, %cr3
    mov     $0xff, %al
    out     %al, $0x21
    out     %al, $0xa1
    lidt    apic_idtr(%rip)
    mov     $0xfee00000, %edi
    movl    $0, 0x80(%rdi)                      /* TPR */
    movl    $0x1ff, 0xf0(%rdi)                  /* SVR: enabled, spurious 0xff */
    ret
    .size apic_setup, . - apic_setup

/* idt_gate: a 64-bit interrupt gate to the handler at %rax for vector %ecx
 * in `apic_idt`. Clobbers %rdx, %rdi. */
    .globl idt_gate
    .type idt_gate, @function
idt_gate:
    lea     apic_idt(%rip), %rdi
    shl     $4, %ecx
    add     %rcx, %rdi
    shr     $4, %ecx
    mov     %eax, %edx
    and     $0xffff, %edx
    or      $(0x08 << 16), %edx
    mov     %edx, (%rdi)
    mov     %eax, %edx
    and     $0xffff0000, %edx
    or      $0x8e00, %edx
    mov     %edx, 4(%rdi)
    movq    $0, 8(%rdi)
    ret
    .size idt_gate, . - idt_gate

    .section .data, "aw", @progbits
    .balign 8
apic_idtr:
    .word   256 * 16 - 1
    .quad   apic_idt

    .section .bss, "aw", @nobits
    .balign 4096
apic_idt:
    .skip   256 * 16
    .balign 4096
apic_pd:
    .skip   4096

    .section .note.GNU-stack, "", @progbits
