/*
 * resample.S - irq-lines through resample irqfds (`resample = true`, kernel
 * irqchip, 1 vCPU), as the guest sees them. GSI 10 (irq-lines port 0x200a)
 * reaches I/O APIC pin 10, programmed to vector 0x4a, APIC 0; the PICs are
 * masked. Each phase counts the interrupts its handler mode sees, waits
 * (`sti; hlt`) for the ones it raised, then keeps interrupts on for 200 ms
 * (ACPI PM timer) to catch late or spurious ones, and prints the count and
 * the extras ("resample: pulses=16 extra=0"). `high` says whether the guest
 * holds the line high: the handler counts an interrupt only while it does,
 * and one that arrives with the line low (an interrupt nobody raised) as an
 * extra, so an extra can never stand in for a pulse's own interrupt:
 *
 *   pulses=16     level pin: 16 times raise, wait; the handler lowers, EOIs.
 *   level=8       level pin: raise once; the handler EOIs without lowering
 *                 (the line stays high: KVM lowers it at the EOI, berth
 *                 re-asserts it) until the 8th, which lowers before its EOI.
 *   masked=0      level pin, 32 times: mask, raise, lower, unmask, 20 ms with
 *                 interrupts on: nothing arrives. (An injection still queued
 *                 when the line is lowered must not fire: a race, so many
 *                 rounds.)
 *   unmasked=1    level pin masked: raise, unmask: the held level arrives
 *                 once (the handler lowers).
 *   edges=8       edge pin: raise once; the handler lowers and raises the
 *                 line (a new edge) before its EOI, 7 times; the 8th lowers.
 *   late-edges=8  edge pin: raise once; the handler EOIs first, then lowers
 *                 and raises the line (an edge between the EOI and berth's
 *                 resample), 7 times; the 8th lowers after its EOI.
 *   edge-held=1   edge pin: raise; the handler EOIs without lowering: one
 *                 interrupt, no re-assertion; then the line is lowered.
 *   done, debug-exit 0 (status 1). Any other vector: triple fault (exit 4).
 *
 * The handler is a 64-bit interrupt gate (iretq).
 */
#include "lib.h"

#define LAPIC_BASE      0xfee00000
#define LAPIC_EOI       0xb0
#define IOAPIC_BASE     0xfec00000
#define PIN             10
#define VECTOR          0x4a
#define LINE_PORT       (0x2000 + PIN)
#define RTE_LEVEL       0x8000
#define RTE_MASKED      0x10000
#define WINDOW_TICKS    715909          /* 200 ms of the 3.579545 MHz PM timer */
#define SHORT_TICKS     71591           /* 20 ms */
#define HLT_WAITS       100000

/* Handler modes. */
#define M_LOWER         0               /* lower, EOI */
#define M_RETRIGGER     1               /* EOI only, until `limit`, then lower, EOI */
#define M_EDGES         2               /* lower, raise, EOI, until `limit`, then lower, EOI */
#define M_HOLD          3               /* EOI only */
#define M_LATE_EDGES    4               /* EOI, then lower, raise, until `limit`, then EOI, lower */

/* Set the line to level \v. */
#define LINE(v)         mov $(v), %al; mov $LINE_PORT, %dx; out %al, %dx

GUEST_START
    PUTS(str_start)
    /* The PM timer port: RSDP (0xe0000) -> XSDT -> FADT PM_TMR_BLK. */
    mov     $0xe0000, %esi
    mov     24(%rsi), %rsi
    mov     36(%rsi), %rsi
    mov     76(%rsi), %eax
    mov     %eax, pm_port(%rip)
    /* I/O APIC and LAPIC mapped, PICs masked, the handler's gate (lib.S). */
    call    apic_setup
    lea     handler(%rip), %rax
    mov     $VECTOR, %ecx
    call    idt_gate
    mov     $IOAPIC_BASE, %edi
    movl    $(0x10 + 2 * PIN + 1), (%rdi)       /* high dword: APIC 0 */
    movl    $0, 0x10(%rdi)
    mov     $(RTE_LEVEL | VECTOR), %eax
    call    set_rte

    /* pulses: 16 times raise and wait; the handler lowers. */
    movl    $M_LOWER, mode(%rip)
    movl    $0, count(%rip)
    mov     $1, %ebx
1:  movl    $1, high(%rip)
    LINE(1)
    call    wait_count
    inc     %ebx
    cmp     $16, %ebx
    jbe     1b
    lea     str_pulses(%rip), %rsi
    call    report

    /* level: one raise, re-delivered at each EOI while high. */
    movl    $M_RETRIGGER, mode(%rip)
    movl    $8, limit(%rip)
    movl    $0, count(%rip)
    movl    $1, high(%rip)
    LINE(1)
    mov     $8, %ebx
    call    wait_count
    lea     str_level(%rip), %rsi
    call    report

    /* masked: raise and lower while the pin is masked, then unmask. */
    movl    $M_LOWER, mode(%rip)
    movl    $0, count(%rip)
    mov     $32, %ebx
1:  mov     $(RTE_MASKED | RTE_LEVEL | VECTOR), %eax
    call    set_rte
    LINE(1)
    LINE(0)
    mov     $(RTE_LEVEL | VECTOR), %eax
    call    set_rte
    mov     $SHORT_TICKS, %ecx
    call    window
    dec     %ebx
    jnz     1b
    lea     str_masked(%rip), %rsi
    call    report

    /* unmasked: raise while masked, unmask: the level is delivered. */
    movl    $0, count(%rip)
    mov     $(RTE_MASKED | RTE_LEVEL | VECTOR), %eax
    call    set_rte
    movl    $1, high(%rip)
    LINE(1)
    mov     $(RTE_LEVEL | VECTOR), %eax
    call    set_rte
    mov     $1, %ebx
    call    wait_count
    lea     str_unmasked(%rip), %rsi
    call    report

    /* edges: edge pin; a new edge from the handler, before its EOI. */
    mov     $VECTOR, %eax
    call    set_rte
    movl    $M_EDGES, mode(%rip)
    movl    $8, limit(%rip)
    movl    $0, count(%rip)
    movl    $1, high(%rip)
    LINE(1)
    mov     $8, %ebx
    call    wait_count
    lea     str_edges(%rip), %rsi
    call    report

    /* late-edges: edge pin; a new edge from the handler, after its EOI. */
    movl    $M_LATE_EDGES, mode(%rip)
    movl    $0, count(%rip)
    movl    $1, high(%rip)
    LINE(1)
    mov     $8, %ebx
    call    wait_count
    lea     str_late(%rip), %rsi
    call    report

    /* edge-held: edge pin, the line stays high across the EOI. */
    movl    $M_HOLD, mode(%rip)
    movl    $0, count(%rip)
    movl    $1, high(%rip)
    LINE(1)
    mov     $1, %ebx
    call    wait_count
    lea     str_held(%rip), %rsi
    call    report
    LINE(0)
    movl    $0, high(%rip)

    PUTS(str_done)
    EXIT(0)
    .size _start, . - _start

/* set_rte: I/O APIC pin PIN's low dword = %eax. */
    .type set_rte, @function
set_rte:
    push    %rdi
    mov     $IOAPIC_BASE, %edi
    movl    $(0x10 + 2 * PIN), (%rdi)
    mov     %eax, 0x10(%rdi)
    pop     %rdi
    ret
    .size set_rte, . - set_rte

/* wait_count: sti; hlt until count >= %ebx (bounded by HLT_WAITS wake-ups). */
    .type wait_count, @function
wait_count:
    mov     $HLT_WAITS, %ecx
1:  cli
    cmp     %ebx, count(%rip)
    jae     2f
    sti
    hlt
    dec     %ecx
    jnz     1b
2:  cli
    ret
    .size wait_count, . - wait_count

/* window: interrupts on for %ecx PM timer ticks. */
    .type window, @function
window:
    mov     pm_port(%rip), %edx
    in      %dx, %eax
    mov     %eax, %r8d
    sti
1:  in      %dx, %eax
    sub     %r8d, %eax
    and     $0xffffff, %eax
    cmp     %ecx, %eax
    jb      1b
    cli
    ret
    .size window, . - window

/* report: interrupts on for WINDOW_TICKS, then
 * "resample: <%rsi>=<count> extra=<extra>"; the next phase's extras start
 * at 0. */
    .type report, @function
report:
    mov     $WINDOW_TICKS, %ecx
    call    window
    call    puts
    mov     count(%rip), %eax
    call    put_dec
    lea     str_extra(%rip), %rsi
    call    puts
    mov     extra(%rip), %eax
    call    put_dec
    call    newline
    movl    $0, extra(%rip)
    ret
    .size report, . - report

/* The GSI 10 handler: with the line low, an extra (EOI only); else count,
 * act by `mode` (each mode that lowers the line for good clears `high`),
 * EOI. */
    .type handler, @function
handler:
    push    %rax
    push    %rdx
    cmpl    $0, high(%rip)
    jne     1f
    incl    extra(%rip)
    jmp     9f
1:  incl    count(%rip)
    mov     mode(%rip), %eax
    cmp     $M_LATE_EDGES, %eax
    je      7f
    cmp     $M_HOLD, %eax
    je      9f
    cmp     $M_LOWER, %eax
    je      8f
    mov     count(%rip), %edx
    cmp     limit(%rip), %edx
    jae     8f
    cmp     $M_RETRIGGER, %eax
    je      9f
    LINE(0)                             /* M_EDGES: a new edge */
    LINE(1)
    jmp     9f
8:  LINE(0)
    movl    $0, high(%rip)
9:  mov     $LAPIC_BASE, %eax
    movl    $0, LAPIC_EOI(%rax)
    pop     %rdx
    pop     %rax
    iretq
7:  mov     $LAPIC_BASE, %edx               /* M_LATE_EDGES: EOI first */
    movl    $0, LAPIC_EOI(%rdx)
    LINE(0)
    mov     count(%rip), %edx
    cmp     limit(%rip), %edx
    jae     5f
    LINE(1)
    jmp     6f
5:  movl    $0, high(%rip)
6:  pop     %rdx
    pop     %rax
    iretq
    .size handler, . - handler

    .section .rodata, "a", @progbits
str_start:      .asciz "resample: start\n"
str_pulses:     .asciz "resample: pulses="
str_level:      .asciz "resample: level="
str_masked:     .asciz "resample: masked="
str_unmasked:   .asciz "resample: unmasked="
str_edges:      .asciz "resample: edges="
str_late:       .asciz "resample: late-edges="
str_held:       .asciz "resample: edge-held="
str_done:       .asciz "resample: done\n"
str_extra:      .asciz " extra="

    .section .data, "aw", @progbits
    .balign 8
count:  .long 0
extra:  .long 0
high:   .long 0
mode:   .long 0
limit:  .long 0
pm_port: .long 0

    .section .note.GNU-stack, "", @progbits
