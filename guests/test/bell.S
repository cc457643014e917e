/*
 * bell.S - rings ioeventfd doorbells and counts the MSIs that answer them.
 * Sets up an IDT with gates for vectors 0x60..0x63 (each stub counts its
 * vector, sends an x2APIC EOI and returns with iretq), enables the x2APIC
 * (MSRs only: no LAPIC page to map), `sti`, then:
 *   1. outb 0x5a  to port 0x530  (doorbell size 1, value 0x5a  -> 0x60)
 *   2. outb 0x00  to port 0x530  (no match: exits to the device, no MSI)
 *   3. outw 0x1234 to port 0x532 (doorbell size 2, value 0x1234 -> 0x61)
 *   4. outl 0xdeadbeef, then outl 1, to port 0x534 (size 4, any value -> 0x62)
 *   5. movq 0x1122334455667788 to 0x10000000 (MMIO size 8, value -> 0x63)
 * waiting (bounded) after each ring for its vector's count to rise, and
 * prints
 *   bell: counts=<c60>,<c61>,<c62>,<c63>
 * (1,1,2,1 when every doorbell works), then exits through debug-exit 0.
 * The machine file is in tests/irq.rs.
 */
#include "lib.h"

#define WAIT_LOOPS      2000000
#define X2APIC_MSR_BASE 0x1b
#define X2APIC_EN       ((1 << 11) | (1 << 10))
#define X2APIC_TPR      0x808
#define X2APIC_EOI      0x80b
#define X2APIC_SVR      0x80f
#define FIRST_VECTOR    0x60
#define GATES           4

/* Ring: write, then wait until counts[idx] reaches want (bounded). */
#define RING_WAIT(idx, want) \
    mov $WAIT_LOOPS, %ecx; \
1:  cmpl $(want), counts+4*(idx)(%rip); \
    jae 2f; \
    pause; \
    dec %ecx; \
    jnz 1b; \
2:

GUEST_START
    PUTS(str_start)
    call    idt_setup
    /* x2APIC on, software-enabled, accept every priority. */
    mov     $X2APIC_MSR_BASE, %ecx
    rdmsr
    or      $X2APIC_EN, %eax
    wrmsr
    mov     $X2APIC_SVR, %ecx
    mov     $0x1ff, %eax
    xor     %edx, %edx
    wrmsr
    mov     $X2APIC_TPR, %ecx
    xor     %eax, %eax
    wrmsr
    sti

    mov     $0x530, %edx
    mov     $0x5a, %al
    outb    %al, %dx
    RING_WAIT(0, 1)
    mov     $0x530, %edx
    xor     %eax, %eax
    outb    %al, %dx
    mov     $0x532, %edx
    mov     $0x1234, %ax
    outw    %ax, %dx
    RING_WAIT(1, 1)
    mov     $0x534, %edx
    mov     $0xdeadbeef, %eax
    outl    %eax, %dx
    RING_WAIT(2, 1)
    mov     $0x534, %edx
    mov     $1, %eax
    outl    %eax, %dx
    RING_WAIT(2, 2)
    movabs  $0x1122334455667788, %rax
    mov     $0x10000000, %edi
    mov     %rax, (%rdi)
    RING_WAIT(3, 1)

    cli
    PUTS(str_counts)
    xor     %ebx, %ebx
3:  mov     counts(,%rbx,4), %eax
    call    put_dec
    inc     %ebx
    cmp     $GATES, %ebx
    je      4f
    mov     $',', %al
    call    putc
    jmp     3b
4:  call    newline
    EXIT(0)
    .size _start, . - _start

/* idt_setup: interrupt gates for FIRST_VECTOR.. (GATES of them), lidt. */
    .type idt_setup, @function
idt_setup:
    lea     idt(%rip), %rdi
    lea     stubs(%rip), %rsi
    mov     $FIRST_VECTOR, %ecx
1:  mov     (%rsi), %rax                    /* stub address (< 4 GiB) */
    mov     %rcx, %rdx
    shl     $4, %rdx                        /* gate = idt + 16 * vector */
    mov     %ax, (%rdi,%rdx)                /* offset 15:0 */
    movw    $0x8, 2(%rdi,%rdx)              /* code selector */
    movw    $0x8e00, 4(%rdi,%rdx)           /* present, DPL0, interrupt gate */
    shr     $16, %rax
    mov     %ax, 6(%rdi,%rdx)               /* offset 31:16 */
    movl    $0, 8(%rdi,%rdx)                /* offset 63:32 */
    movl    $0, 12(%rdi,%rdx)
    add     $8, %rsi
    inc     %ecx
    cmp     $(FIRST_VECTOR + GATES), %ecx
    jne     1b
    lidt    idtr(%rip)
    ret
    .size idt_setup, . - idt_setup

/* One stub per vector: count it, EOI, return. */
#define STUB(i) \
stub##i: \
    lock incl counts+4*(i)(%rip); \
    jmp eoi_return

STUB(0)
STUB(1)
STUB(2)
STUB(3)

eoi_return:
    push    %rax
    push    %rcx
    push    %rdx
    mov     $X2APIC_EOI, %ecx
    xor     %eax, %eax
    xor     %edx, %edx
    wrmsr
    pop     %rdx
    pop     %rcx
    pop     %rax
    iretq

    .section .rodata, "a", @progbits
    .balign 8
stubs:  .quad stub0, stub1, stub2, stub3
idtr:   .word 16 * (FIRST_VECTOR + GATES) - 1
        .quad idt
str_start:  .asciz "bell: start\n"
str_counts: .asciz "bell: counts="

    .section .bss
    .balign 16
idt:    .skip 16 * (FIRST_VECTOR + GATES)
counts: .skip 4 * GATES

    .section .note.GNU-stack, "", @progbits
