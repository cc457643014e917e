/*
 * apspin.S - for SMP tests. Runs as the BSP and never starts the APs (no
 * INIT/SIPI), so any other vCPUs stay parked waiting for SIPI. Prints
 * "apspin: start", busy-loops APSPIN_LOOPS (100k) iterations, prints
 * "apspin: exiting" and writes 0 to debug-exit (status 1).
 */
#include "lib.h"

#ifndef APSPIN_LOOPS
#define APSPIN_LOOPS 100000
#endif

    .code64
    .section .text.start, "ax", @progbits
    .globl _start
    .type _start, @function
_start:
    GUEST_PROLOGUE
    PUTS(str_start)
    mov     $APSPIN_LOOPS, %ecx
1:  dec     %ecx
    jnz     1b
    PUTS(str_exiting)
    EXIT(0)
    .size _start, . - _start

    .section .rodata, "a", @progbits
str_start:   .asciz "apspin: start\n"
str_exiting: .asciz "apspin: exiting\n"

    .section .note.GNU-stack, "", @progbits
