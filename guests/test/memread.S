/*
 * memread.S - exercises a second RAM region at MEMREAD_ADDR (0x20000000,
 * inside the identity-mapped first GiB). Prints "memread: start", then
 *   memread: value=<16 hex>      the qword at MEMREAD_ADDR (the region's
 *                                first bytes: a backing file's content)
 *   memread: readback=<16 hex>   after writing MEMREAD_PATTERN ("berth\0\0\0")
 *                                to MEMREAD_ADDR + 8, the qword read back there
 *                                (the pattern, or the old bytes when the
 *                                region is read-only and the write went to the
 *                                bus as MMIO)
 *   memread: ready
 * and then reads MEMREAD_ADDR for ever (ending it is the test's business:
 * SIGTERM, or the region losing its backing).
 *
 * Used by tests/foundation.rs (regions) and tests/reliability.rs (a backing
 * file truncated under the running guest).
 */
#include "lib.h"

#define MEMREAD_ADDR    0x20000000
#define MEMREAD_PATTERN 0x0000006874726562      /* "berth" */

GUEST_START
    PUTS(str_start)
    mov     $MEMREAD_ADDR, %ebx
    PUTS(str_value)
    mov     (%rbx), %rax
    call    put_hex64
    call    newline
    movabs  $MEMREAD_PATTERN, %rax
    mov     %rax, 8(%rbx)
    PUTS(str_readback)
    mov     8(%rbx), %rax
    call    put_hex64
    call    newline
    PUTS(str_ready)
1:  mov     (%rbx), %rax
    pause
    jmp     1b
    .size _start, . - _start

    .section .rodata, "a", @progbits
str_start:    .asciz "memread: start\n"
str_value:    .asciz "memread: value="
str_readback: .asciz "memread: readback="
str_ready:    .asciz "memread: ready\n"

    .section .note.GNU-stack, "", @progbits
