/*
 * strio.S - string port I/O: one `rep outsb` of the 16 bytes
 * "0123456789abcdef" to port 0x80, one `rep outsl` of the two dwords
 * 0x11223344, 0x55667788 to port 0x84, and one `rep insb` of 8 bytes from
 * port 0x90 into a buffer of 0x5a bytes. Prints
 *   strio: in=<16 hex>   (the 8 bytes read, as a little-endian qword)
 * and exits through debug-exit 0. The machine file (tests/foundation.rs)
 * puts recorders at 0x80 (1 byte) and 0x84 (4 bytes) and nothing at 0x90,
 * so the reads are all-ones.
 */
#include "lib.h"

GUEST_START
    PUTS(str_start)
    cld
    lea     out_bytes(%rip), %rsi
    mov     $16, %ecx
    mov     $0x80, %edx
    rep outsb
    lea     out_dwords(%rip), %rsi
    mov     $2, %ecx
    mov     $0x84, %edx
    rep outsl
    lea     in_buf(%rip), %rdi
    mov     $8, %ecx
    mov     $0x90, %edx
    rep insb
    PUTS(str_in)
    mov     in_buf(%rip), %rax
    call    put_hex64
    call    newline
    EXIT(0)
    .size _start, . - _start

    .section .rodata, "a", @progbits
out_bytes:  .ascii "0123456789abcdef"
    .balign 4
out_dwords: .long 0x11223344, 0x55667788
str_start:  .asciz "strio: start\n"
str_in:     .asciz "strio: in="

    .section .data, "aw", @progbits
    .balign 8
in_buf:     .quad 0x5a5a5a5a5a5a5a5a

    .section .note.GNU-stack, "", @progbits
