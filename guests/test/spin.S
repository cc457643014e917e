/*
 * spin.S - prints "spin: start" and "spin: ready", then spins forever on
 * `1: jmp 1b` with interrupts disabled. The vCPU never exits to userspace
 * on its own: used to test that SIGTERM stops berth (exit 143).
 */
#include "lib.h"

    .code64
    .section .text.start, "ax", @progbits
    .globl _start
    .type _start, @function
_start:
    GUEST_PROLOGUE
    PUTS(str_start)
    PUTS(str_ready)
1:  jmp     1b
    .size _start, . - _start

    .section .rodata, "a", @progbits
str_start:  .asciz "spin: start\n"
str_ready:  .asciz "spin: ready\n"

    .section .note.GNU-stack, "", @progbits
