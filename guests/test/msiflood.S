/*
 * msiflood.S - makes berth's IOAPIC (split irqchip) send MSIS_SENT MSIs,
 * each with a different vector: for i in 0..MSIS_SENT, it programs IOAPIC
 * pin 5 (edge, fixed, physical, APIC 0, unmasked) with vector 0x40 + i and
 * pulses GSI 5 through irq-lines (port 0x2005: outb 1, outb 0). Interrupts
 * stay off; the guest only cares that berth delivers them. Maps the IOAPIC
 * page (0xfec00000) with one 2 MiB page in a page directory of its own for
 * 3..4 GiB. Prints "msiflood: sent=<n>" and exits through debug-exit 0.
 * Used by tests/irq.rs: without KVM_SIGNAL_MSI berth routes each MSI
 * through a cached GSI route, and the 33rd distinct one flushes the cache.
 */
#include "lib.h"

#define MSIS_SENT       40
#define PDPT            0xa000
#define IOAPIC_BASE     0xfec00000
#define IOAPIC_PD_INDEX ((IOAPIC_BASE - 0xc0000000) >> 21)
#define PIN             5

GUEST_START
    PUTS(str_start)
    lea     pd(%rip), %rax
    or      $3, %rax                            /* present, writable */
    mov     %rax, PDPT + 8 * 3
    lea     pd(%rip), %rdi
    movl    $((IOAPIC_BASE & 0xffe00000) | 0x9b), 8 * IOAPIC_PD_INDEX(%rdi)
    movl    $0, 8 * IOAPIC_PD_INDEX + 4(%rdi)
    mov     %cr3, %rax
    mov     %rax, %cr3
    mov     $IOAPIC_BASE, %edi
    xor     %ebx, %ebx
1:  movl    $(0x11 + 2 * PIN), (%rdi)           /* high dword: APIC 0 */
    movl    $0, 0x10(%rdi)
    movl    $(0x10 + 2 * PIN), (%rdi)           /* low dword: vector, unmasked */
    lea     0x40(%rbx), %eax
    movl    %eax, 0x10(%rdi)
    mov     $(0x2000 + PIN), %edx
    mov     $1, %al
    outb    %al, %dx
    xor     %eax, %eax
    outb    %al, %dx
    inc     %ebx
    cmp     $MSIS_SENT, %ebx
    jne     1b
    PUTS(str_sent)
    mov     %rbx, %rax
    call    put_dec
    call    newline
    EXIT(0)
    .size _start, . - _start

    .section .rodata, "a", @progbits
str_start:  .asciz "msiflood: start\n"
str_sent:   .asciz "msiflood: sent="

    .section .bss
    .balign 4096
pd: .skip 4096

    .section .note.GNU-stack, "", @progbits
