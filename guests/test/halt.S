/*
 * halt.S - prints "halt: start" and "halt: ready", then loops on
 * `cli; hlt` forever. With an in-kernel irqchip the vCPU sleeps inside
 * KVM_RUN and never exits to userspace (with a userspace irqchip every hlt
 * is a KVM_EXIT_HLT).
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
1:  cli
    hlt
    jmp     1b
    .size _start, . - _start

    .section .rodata, "a", @progbits
str_start:  .asciz "halt: start\n"
str_ready:  .asciz "halt: ready\n"

    .section .note.GNU-stack, "", @progbits
