/*
 * counter.S - for live migration (tests/migrate.rs). The BSP starts the AP
 * with APIC ID 1 when there is one (INIT-SIPI-SIPI, bounded wait), prints
 * "counter: start cpus=N", then for c = 1..COUNTER_N: adds c to a quadword
 * of a 256-page data area at 0x400000 (page c % 256, quadword c / 256 % 8),
 * prints "c=<c>" and waits until COUNTER_TSC TSC cycles have passed since
 * the line began (at most COUNTER_WAIT iterations), so a line takes about
 * the same time whether CPL0 code is emulated (PVM) or native.
 * Meanwhile the AP adds 1 to the first quadword of each of COUNTER_AP_PAGES
 * pages at 0x800000, pass after pass, until the BSP asks it to stop; it
 * stops after a whole pass. Every write is a read-modify-write, so a page
 * lost or stale in a migration changes the result for good. At the end the
 * BSP prints "ap: ok" (every AP page holds the same count), "ap: torn page
 * <p>" or "ap: none", then "sum=<hex>" over the data area, and exits
 * through debug-exit with 0 (status 1).
 */
#include "lib.h"

#ifndef COUNTER_N
#define COUNTER_N           3000
#endif
#ifndef COUNTER_TSC
#define COUNTER_TSC         2000000
#endif
#define COUNTER_WAIT        1000000
#ifndef COUNTER_AP_PAGES
#define COUNTER_AP_PAGES    16
#endif

#define DATA_BASE           0x400000
#define DATA_PAGES          256
#define AP_BASE             0x800000

#define LAPIC_BASE          0xfee00000
#define LAPIC_ICR_LO        0x300
#define LAPIC_ICR_HI        0x310
#define ICR_BUSY            0x1000
#define ICR_INIT            0x4500
#define ICR_SIPI            0x4600
#define TRAMP_BASE          0x10000
#define SIPI_VECTOR         (TRAMP_BASE >> 12)
#define EFER_MSR            0xc0000080
#define EFER_LME            0x100
#define ICR_WAIT            1000
#define INIT_DELAY          5000
#define SIPI_DELAY          1000
#define AP_WAIT             50000
#define AP_DONE_WAIT        10000000

    GUEST_START
    call    start_ap
    PUTS(str_start)
    mov     ap_online(%rip), %eax
    inc     %eax
    call    put_dec
    call    newline
    xor     %r12d, %r12d                        /* c */
.Lcount:
    inc     %r12
    rdtsc
    shl     $32, %rdx
    or      %rdx, %rax
    mov     %rax, %r13                          /* the line's start */
    mov     %r12, %rax
    and     $(DATA_PAGES - 1), %eax
    shl     $12, %rax
    mov     %r12, %rdx
    shr     $8, %rdx
    and     $7, %edx
    lea     DATA_BASE(%rax,%rdx,8), %rdi
    add     %r12, (%rdi)
    PUTS(str_c)
    mov     %r12, %rax
    call    put_dec
    call    newline
    mov     $COUNTER_WAIT, %ecx
1:  rdtsc
    shl     $32, %rdx
    or      %rdx, %rax
    sub     %r13, %rax
    cmp     $COUNTER_TSC, %rax
    jae     2f
    dec     %ecx
    jnz     1b
2:  cmp     $COUNTER_N, %r12
    jb      .Lcount

    /* The AP: stop it, wait (bounded) for its last whole pass. */
    cmpl    $0, ap_online(%rip)
    je      .Lap_none
    movl    $1, ap_stop(%rip)
    mov     $AP_DONE_WAIT, %ecx
1:  cmpl    $0, ap_done(%rip)
    jne     2f
    pause
    dec     %ecx
    jnz     1b
    PUTS(str_ap_running)
    jmp     .Lsum
2:  mov     $AP_BASE, %rdi
    mov     (%rdi), %rax
    test    %rax, %rax
    jz      .Lap_torn0
    xor     %ecx, %ecx
1:  cmp     %rax, (%rdi)
    jne     .Lap_torn
    add     $0x1000, %rdi
    inc     %ecx
    cmp     $COUNTER_AP_PAGES, %ecx
    jb      1b
    PUTS(str_ap_ok)
    jmp     .Lsum
.Lap_torn0:
    xor     %ecx, %ecx
.Lap_torn:
    PUTS(str_ap_torn)
    mov     %ecx, %eax
    call    put_dec
    call    newline
    jmp     .Lsum
.Lap_none:
    PUTS(str_ap_none)

    /* sum = sum * 31 + q over every quadword the BSP writes. */
.Lsum:
    xor     %ebx, %ebx
    mov     $DATA_BASE, %rdi
    mov     $DATA_PAGES, %ecx
1:  xor     %edx, %edx
2:  imul    $31, %rbx, %rbx
    add     (%rdi,%rdx,8), %rbx
    inc     %edx
    cmp     $8, %edx
    jb      2b
    add     $0x1000, %rdi
    dec     %ecx
    jnz     1b
    PUTS(str_sum)
    mov     %rbx, %rax
    call    put_hex64
    call    newline
    EXIT(0)
    .size _start, . - _start

/* Busy-waits %ecx iterations. */
delay:
1:  dec     %ecx
    jnz     1b
    ret

/*
 * Copies the trampoline to TRAMP_BASE with this CR3, sends INIT-SIPI-SIPI
 * to APIC ID 1 and waits (bounded) for the AP to set ap_online. With one
 * vCPU nobody answers and ap_online stays 0.
 */
start_ap:
    /* Map the LAPIC (the boot identity map covers only the first GiB):
     * PDPT[3] -> lapic_pd, one 2 MiB uncached page at 0xfee00000. */
    mov     %cr3, %rax
    mov     (%rax), %rax                        /* PML4[0] -> PDPT */
    and     $~0xfff, %rax
    lea     lapic_pd(%rip), %rdx
    or      $3, %rdx
    mov     %rdx, 3 * 8(%rax)
    lea     lapic_pd(%rip), %rdx
    mov     $(LAPIC_BASE | 0x9b), %eax          /* P RW PWT PCD PS */
    mov     %rax, ((LAPIC_BASE - 0xc0000000) >> 21) * 8(%rdx)
    mov     %cr3, %rax
    mov     %rax, %cr3
    call    tramp_install
    mov     $LAPIC_BASE, %edi
    movl    $0x1ff, 0xf0(%rdi)                  /* SVR: APIC enabled */
    call    icr_wait
    movl    $(1 << 24), LAPIC_ICR_HI(%rdi)
    movl    $ICR_INIT, LAPIC_ICR_LO(%rdi)
    call    icr_wait
    mov     $INIT_DELAY, %ecx
    call    delay
    mov     $2, %esi
1:  call    icr_wait
    movl    $(1 << 24), LAPIC_ICR_HI(%rdi)
    movl    $(ICR_SIPI | SIPI_VECTOR), LAPIC_ICR_LO(%rdi)
    mov     $SIPI_DELAY, %ecx
    call    delay
    dec     %esi
    jnz     1b
    mov     $AP_WAIT, %ecx
1:  cmpl    $0, ap_online(%rip)
    jne     2f
    pause
    dec     %ecx
    jnz     1b
2:  ret

/* The AP, in 64-bit mode from the trampoline; no stack, interrupts off. */
ap_entry64:
    movl    $1, ap_online(%rip)
1:  mov     $AP_BASE, %rdi
    mov     $COUNTER_AP_PAGES, %ecx
2:  incq    (%rdi)
    add     $0x1000, %rdi
    dec     %ecx
    jnz     2b
    cmpl    $0, ap_stop(%rip)
    je      1b
    movl    $1, ap_done(%rip)
3:  cli
    hlt
    jmp     3b

#include "../ap_trampoline.inc"

    .section .rodata, "a", @progbits

str_start:      .asciz "counter: start cpus="
str_c:          .asciz "c="
str_ap_ok:      .asciz "ap: ok\n"
str_ap_torn:    .asciz "ap: torn page "
str_ap_none:    .asciz "ap: none\n"
str_ap_running: .asciz "ap: still running\n"
str_sum:        .asciz "sum="

    .data
    .balign 8
ap_online:      .long 0
ap_stop:        .long 0
ap_done:        .long 0
    .balign 4096
lapic_pd:       .fill 512, 8, 0

    .section .note.GNU-stack, "", @progbits
