/*
 * rtc.S - the MC146818 RTC's status bits and interrupts on IRQ 8:
 *
 *   0. The ACPI PM timer, found through RSDP -> XSDT -> FADT PM_TMR_BLK,
 *      reads below 2^24 and moves while step 1 runs -> "rtc: pm timer ok"
 *      (exit 0x34, status 105, if not).
 *   1. UIP: register A bit 7 rises and falls (bounded polls) -> "rtc: uip ok".
 *   2. Alarm: 3..4 GiB is mapped (its own page directory), the PICs are
 *      masked, the LAPIC is enabled, I/O APIC pin 8 is
 *      programmed edge / fixed / vector 0x38 / APIC 0 (at 0xfec00000: the
 *      in-kernel IOAPIC or berth's, kernel or split irqchip). Alarm
 *      registers 0xC0 (every second), register B = AIE (24h, BCD); `sti; hlt`
 *      until the handler saw AF -> "rtc: alarm irq flags=0x<C>".
 *   3. Periodic: register A rate 0xa (64 Hz), register B = PIE; wait for a
 *      handler call with PF -> "rtc: periodic irq flags=0x<C>".
 *   4. debug-exit 0 (status 1). Any bounded wait that runs out exits with
 *      0x31 (UIP, status 99), 0x32 (alarm, 101) or 0x33 (periodic, 103).
 *
 * The handler (64-bit interrupt gate, iretq) reads register C (which
 * lowers IRQ 8), ORs it into `seen`, counts, and EOIs the LAPIC.
 */
#include "lib.h"

#define CMOS_INDEX      0x70
#define CMOS_DATA       0x71
#define UIP_POLLS       20000000
#define HLT_WAITS       100000
#define LAPIC_BASE      0xfee00000
#define LAPIC_EOI       0xb0
#define IOAPIC_BASE     0xfec00000
#define RTC_VECTOR      0x38
#define RTC_PIN         8

    .code64
    .section .text.start, "ax", @progbits
    .globl _start
    .type _start, @function
_start:
    GUEST_PROLOGUE
    PUTS(str_start)
    /* 0. PM timer port from the FADT; a first reading. */
    mov     $0xe0000, %esi
    mov     24(%rsi), %rsi                      /* XSDT */
    mov     36(%rsi), %rsi                      /* FADT */
    mov     76(%rsi), %r12d                     /* PM_TMR_BLK */
    mov     %r12d, %edx
    in      %dx, %eax
    mov     %eax, %r13d
    /* 1. UIP rises, then falls. */
    mov     $UIP_POLLS, %ecx
1:  mov     $0x0a, %bl
    call    cmos_read
    test    $0x80, %al
    jnz     2f
    dec     %ecx
    jnz     1b
    EXIT(0x31)
2:  mov     $UIP_POLLS, %ecx
3:  mov     $0x0a, %bl
    call    cmos_read
    test    $0x80, %al
    jz      4f
    dec     %ecx
    jnz     3b
    EXIT(0x31)
4:  PUTS(str_uip)
    mov     %r12d, %edx
    in      %dx, %eax
    cmp     $0x1000000, %eax
    jae     7f
    cmp     $0x1000000, %r13d
    jae     7f
    cmp     %eax, %r13d
    je      7f
    test    %r12d, %r12d
    jnz     8f
7:  EXIT(0x34)
8:  PUTS(str_pmtmr)

    /* 2. Interrupt plumbing (lib.S): I/O APIC and LAPIC mapped, PICs
     * masked, the handler's gate. */
    call    apic_setup
    lea     rtc_handler(%rip), %rax
    mov     $RTC_VECTOR, %ecx
    call    idt_gate
    mov     $IOAPIC_BASE, %edi
    movl    $(0x10 + 2 * RTC_PIN + 1), (%rdi)   /* high dword: APIC 0 */
    movl    $0, 0x10(%rdi)
    movl    $(0x10 + 2 * RTC_PIN), (%rdi)       /* low: edge, fixed, vector */
    movl    $RTC_VECTOR, 0x10(%rdi)

    /* Alarm every second, AIE. */
    mov     $0x0c, %bl
    call    cmos_read
    mov     $0x01, %bl
    mov     $0xc0, %al
    call    cmos_write
    mov     $0x03, %bl
    call    cmos_write
    mov     $0x05, %bl
    call    cmos_write
    movl    $0, seen(%rip)
    mov     $0x0b, %bl
    mov     $0x22, %al                          /* AIE | 24h */
    call    cmos_write
    mov     $0x20, %ebx                         /* want AF */
    call    wait_flag
    jnz     5f
    EXIT(0x32)
5:  PUTS(str_alarm)
    call    print_seen

    /* 3. Periodic at 64 Hz. */
    mov     $0x0b, %bl
    mov     $0x02, %al                          /* nothing enabled */
    call    cmos_write
    mov     $0x0a, %bl
    mov     $0x2a, %al
    call    cmos_write
    mov     $0x0c, %bl
    call    cmos_read
    movl    $0, seen(%rip)
    mov     $0x0b, %bl
    mov     $0x42, %al                          /* PIE | 24h */
    call    cmos_write
    mov     $0x40, %ebx                         /* want PF */
    call    wait_flag
    jnz     6f
    EXIT(0x33)
6:  PUTS(str_periodic)
    call    print_seen
    mov     $0x0b, %bl
    mov     $0x02, %al
    call    cmos_write
    PUTS(str_done)
    EXIT(0)
    .size _start, . - _start

/* wait_flag: sti; hlt until `seen` has a bit of %ebx (ZF clear) or give up (ZF set). */
    .type wait_flag, @function
wait_flag:
    mov     $HLT_WAITS, %ecx
1:  cli
    test    %ebx, seen(%rip)
    jnz     2f
    sti
    hlt
    dec     %ecx
    jnz     1b
    cli
    xor     %eax, %eax                          /* ZF set */
    ret
2:  ret
    .size wait_flag, . - wait_flag

/* print_seen: " flags=0x<seen>\n" */
    .type print_seen, @function
print_seen:
    PUTS(str_flags)
    mov     seen(%rip), %eax
    mov     $2, %ecx
    call    put_hex
    call    newline
    ret
    .size print_seen, . - print_seen

/* cmos_read: %al = CMOS register %bl. */
    .type cmos_read, @function
cmos_read:
    mov     %bl, %al
    out     %al, $CMOS_INDEX
    in      $CMOS_DATA, %al
    ret
    .size cmos_read, . - cmos_read

/* cmos_write: CMOS register %bl = %al (preserves %al). */
    .type cmos_write, @function
cmos_write:
    push    %rax
    mov     %bl, %al
    out     %al, $CMOS_INDEX
    pop     %rax
    out     %al, $CMOS_DATA
    ret
    .size cmos_write, . - cmos_write

/* The IRQ 8 handler: read register C (lowers IRQ 8), remember, EOI. */
    .type rtc_handler, @function
rtc_handler:
    push    %rax
    mov     $0x0c, %al
    out     %al, $CMOS_INDEX
    in      $CMOS_DATA, %al
    movzbl  %al, %eax
    or      %eax, seen(%rip)
    incl    irqs(%rip)
    mov     $LAPIC_BASE, %eax
    movl    $0, LAPIC_EOI(%rax)
    pop     %rax
    iretq
    .size rtc_handler, . - rtc_handler

    .section .rodata, "a", @progbits
str_start:      .asciz "rtc: start\n"
str_uip:        .asciz "rtc: uip ok\n"
str_pmtmr:      .asciz "rtc: pm timer ok\n"
str_alarm:      .asciz "rtc: alarm irq"
str_periodic:   .asciz "rtc: periodic irq"
str_flags:      .asciz " flags=0x"
str_done:       .asciz "rtc: done\n"

    .section .data, "aw", @progbits
    .balign 8
seen:   .long 0
irqs:   .long 0

    .section .note.GNU-stack, "", @progbits
