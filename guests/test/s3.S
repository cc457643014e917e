/*
 * s3.S - ACPI S3 round trip, the way kvm-unit-tests' x86/s3.c does it:
 *
 *   1. Follow RSDP (0xe0000) -> XSDT -> FADT (its first entry) and read the
 *      32-bit FIRMWARE_CTRL (the FACS), PM1a_EVT_BLK and PM1a_CNT_BLK.
 *   2. Copy a real-mode resume routine to 0x1000 and put 0x1000 in the
 *      FACS's Firmware_Waking_Vector.
 *   3. Set PM1_EN.RTC_EN; wait for RTC register A's UIP to rise and fall;
 *      clear register C; set the alarm to "every second" (0xC0 in seconds,
 *      minutes, hours) and AIE.
 *   4. Print "s3: suspending" and write SLP_TYP=1 | SLP_EN (0x2400) to
 *      PM1a_CNT.
 *
 * The VM must stop there and, at the next RTC update (<= 1 s), resume at
 * 0x1000 in real mode (CS=0x100, IP=0). The resume routine prints
 * "s3: resumed" on COM1 and exits through debug-exit with 0x21 (status 67)
 * if PM1_STS has WAK_STS and RTC_STS set, else 0x22 (status 69).
 *
 * Built with S3_NO_WAKE (s3nowake.S), it skips RTC_EN and AIE: nothing can
 * wake the VM, and berth ends it as a power-off (exit 0).
 *
 * Built with S3_NEVER_WAKE (s3never.S), the alarm hour is 0x25: the wake
 * source is armed but never fires, so only the timeout ends the VM.
 *
 * Built with S3_NO_VECTOR (s3novec.S), it leaves the waking vector 0: the
 * wake-up is a reset, as SeaBIOS makes it.
 *
 * Failures before the suspend exit with 0x23 (status 71: no FACS / bad
 * tables), 0x24 (73: UIP never rose or fell) or 0x25 (75: still running
 * after the suspend request).
 */
#include "lib.h"

#define RSDP_ADDR       0xe0000
#define RESUME_ADDR     0x1000
#define CMOS_INDEX      0x70
#define CMOS_DATA       0x71
#define UIP_POLLS       20000000

    .code64
    .section .text.start, "ax", @progbits
    .globl _start
    .type _start, @function
_start:
    GUEST_PROLOGUE
    PUTS(str_start)
    /* RSDP -> XSDT (offset 24) -> first entry (offset 36) = FADT. */
    mov     $RSDP_ADDR, %esi
    cmpl    $0x20445352, (%rsi)                 /* "RSD " */
    jne     .Lbad_tables
    mov     24(%rsi), %rsi
    cmpl    $0x54445358, (%rsi)                 /* "XSDT" */
    jne     .Lbad_tables
    mov     36(%rsi), %rsi
    cmpl    $0x50434146, (%rsi)                 /* "FACP" */
    jne     .Lbad_tables
    mov     36(%rsi), %edi                      /* FIRMWARE_CTRL (32-bit) */
    test    %edi, %edi
    jz      .Lbad_tables
    cmpl    $0x53434146, (%rdi)                 /* "FACS" */
    jne     .Lbad_tables
    mov     56(%rsi), %r12d                     /* PM1a_EVT_BLK */
    mov     64(%rsi), %r13d                     /* PM1a_CNT_BLK */
#ifndef S3_NO_VECTOR
    movl    $RESUME_ADDR, 12(%rdi)              /* Firmware_Waking_Vector */
#endif

    /* The resume routine (it reads PM1_STS at the port patched in). */
    mov     %r12w, resume_pm1_sts(%rip)
    lea     resume_start(%rip), %rsi
    mov     $RESUME_ADDR, %edi
    mov     $(resume_end - resume_start), %ecx
    rep movsb

#ifndef S3_NO_WAKE
    /* PM1_EN = RTC_EN. */
    lea     2(%r12), %edx
    mov     $0x400, %ax
    out     %ax, %dx

    /* Wait for UIP to rise, then fall: the update just happened. */
    mov     $UIP_POLLS, %ecx
1:  mov     $0x0a, %al
    out     %al, $CMOS_INDEX
    in      $CMOS_DATA, %al
    test    $0x80, %al
    jnz     2f
    dec     %ecx
    jnz     1b
    jmp     .Lno_uip
2:  mov     $UIP_POLLS, %ecx
3:  mov     $0x0a, %al
    out     %al, $CMOS_INDEX
    in      $CMOS_DATA, %al
    test    $0x80, %al
    jz      4f
    dec     %ecx
    jnz     3b
    jmp     .Lno_uip
4:  PUTS(str_uip)
    /* Clear register C; alarm every second; AIE. */
    mov     $0x0c, %al
    out     %al, $CMOS_INDEX
    in      $CMOS_DATA, %al
    mov     $0x01, %bl
    call    alarm_dont_care
    mov     $0x03, %bl
    call    alarm_dont_care
    mov     $0x05, %bl
#ifdef S3_NEVER_WAKE
    call    alarm_never
#else
    call    alarm_dont_care
#endif
    mov     $0x0b, %al
    out     %al, $CMOS_INDEX
    in      $CMOS_DATA, %al
    or      $0x20, %al
    mov     %al, %bl
    mov     $0x0b, %al
    out     %al, $CMOS_INDEX
    mov     %bl, %al
    out     %al, $CMOS_DATA
#endif

    PUTS(str_suspend)
    mov     %r13d, %edx
    mov     $0x2400, %ax
    out     %ax, %dx
    /* Not reached if the VM suspended. */
    PUTS(str_running)
    EXIT(0x25)

.Lbad_tables:
    PUTS(str_bad_tables)
    EXIT(0x23)
.Lno_uip:
    PUTS(str_no_uip)
    EXIT(0x24)
    .size _start, . - _start

/* alarm_dont_care: CMOS register %bl = 0xC0. */
    .type alarm_dont_care, @function
alarm_dont_care:
    mov     %bl, %al
    out     %al, $CMOS_INDEX
    mov     $0xc0, %al
    out     %al, $CMOS_DATA
    ret
    .size alarm_dont_care, . - alarm_dont_care

/* alarm_never: CMOS register %bl = 0x25 (hour 25: never matches). */
    .type alarm_never, @function
alarm_never:
    mov     %bl, %al
    out     %al, $CMOS_INDEX
    mov     $0x25, %al
    out     %al, $CMOS_DATA
    ret
    .size alarm_never, . - alarm_never

/*
 * The real-mode resume routine, copied to RESUME_ADDR and entered with
 * CS = RESUME_ADDR >> 4, IP = 0 (so its offsets are relative to its start).
 */
    .section .data, "aw", @progbits
resume_start:
    .code16
    mov     $COM1_THR, %dx
    mov     $(resume_msg - resume_start), %si
1:  mov     %cs:(%si), %al
    test    %al, %al
    jz      2f
    out     %al, %dx
    inc     %si
    jmp     1b
2:  mov     %cs:(resume_pm1_sts - resume_start), %dx
    in      %dx, %ax
    and     $0x8400, %ax                        /* WAK_STS | RTC_STS */
    cmp     $0x8400, %ax
    mov     $0x21, %eax
    je      3f
    mov     $0x22, %eax
3:  mov     $DEBUG_EXIT_PORT, %dx
    out     %eax, %dx
4:  cli
    hlt
    jmp     4b
resume_pm1_sts:
    .word   0
resume_msg:
    .asciz  "s3: resumed\n"
resume_end:
    .code64

    .section .rodata, "a", @progbits
str_start:      .asciz "s3: start\n"
str_uip:        .asciz "s3: uip seen\n"
str_suspend:    .asciz "s3: suspending\n"
str_running:    .asciz "s3: still running after SLP_EN\n"
str_bad_tables: .asciz "s3: no FACS through FIRMWARE_CTRL\n"
str_no_uip:     .asciz "s3: UIP never changed\n"

    .section .note.GNU-stack, "", @progbits
