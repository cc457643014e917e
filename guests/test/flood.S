/*
 * flood.S - prints "flood: start", then writes FLOOD_BYTES bytes to COM1
 * WITHOUT polling LSR (plain `outb` each): lines of 63 'x' followed by '\n'.
 * If FLOOD_BYTES is not a multiple of 64 the last, short line is
 * (FLOOD_BYTES % 64 - 1) 'x' and a '\n', so exactly FLOOD_BYTES bytes are
 * written and the output always ends in '\n'. Then prints "flood: done" and
 * exits via debug-exit with value 0 (status 1). Used to test a blocked
 * stdout pipe.
 *
 * FLOOD_BYTES defaults to 512 KiB: more than a 64 KiB pipe plus berth's
 * 256 KiB output buffer, so bytes must be dropped, yet few enough to finish
 * in seconds on a loaded PVM host (each byte is a userspace exit plus ~3
 * instructions). Build with e.g. `make -C guests -B flood.elf
 * FLOOD_BYTES=67108864` for 64 MiB. Must be at least 1 and below 2^31.
 */
#include "lib.h"

#ifndef FLOOD_BYTES
#define FLOOD_BYTES (512 * 1024)
#endif

#define FLOOD_LINES (FLOOD_BYTES / 64)
#define FLOOD_REM   (FLOOD_BYTES % 64)

    .code64
    .section .text.start, "ax", @progbits
    .globl _start
    .type _start, @function
_start:
    GUEST_PROLOGUE
    PUTS(str_start)
    mov     $COM1_THR, %edx
    mov     $FLOOD_LINES, %r12d
    test    %r12d, %r12d
    jz      .Lrem
.Lline:
    mov     $'x', %al
    mov     $63, %ecx
1:  out     %al, %dx
    dec     %ecx
    jnz     1b
    mov     $10, %al
    out     %al, %dx
    dec     %r12d
    jnz     .Lline
.Lrem:
#if FLOOD_REM > 1
    mov     $'x', %al
    mov     $(FLOOD_REM - 1), %ecx
1:  out     %al, %dx
    dec     %ecx
    jnz     1b
#endif
#if FLOOD_REM > 0
    mov     $10, %al
    out     %al, %dx
#endif
    PUTS(str_done)
    EXIT(0)
    .size _start, . - _start

    .section .rodata, "a", @progbits
str_start: .asciz "flood: start\n"
str_done:  .asciz "flood: done\n"

    .section .note.GNU-stack, "", @progbits
