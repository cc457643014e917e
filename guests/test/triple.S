/*
 * triple.S - prints "triple: start", loads an IDT with limit 0 (base 0) and
 * executes ud2. Vector 6 (#UD) lies outside the IDT -> #GP, which is also
 * outside -> #DF, also outside -> triple fault (shutdown, KVM_EXIT_SHUTDOWN).
 * The VMM should report a guest fault (berth exit 4).
 *
 * ud2 rather than int3: on a host whose KVM emulates CPL0 instructions (PVM)
 * int3 is not emulated and surfaces as KVM_EXIT_INTERNAL_ERROR instead of a
 * triple fault, while ud2 gives a real KVM_EXIT_SHUTDOWN there too. An int3
 * follows as a fallback.
 *
 * If execution somehow continues (it must not), prints "triple: survived"
 * and exits via debug-exit with value 0x11 (status 35).
 */
#include "lib.h"

    .code64
    .section .text.start, "ax", @progbits
    .globl _start
    .type _start, @function
_start:
    GUEST_PROLOGUE
    PUTS(str_start)
    lidt    idt_null(%rip)
    ud2
    int3
    PUTS(str_survived)
    EXIT(0x11)
    .size _start, . - _start

    .section .rodata, "a", @progbits
    .balign 16
idt_null:                           /* 10-byte pseudo-descriptor */
    .word   0                       /* limit */
    .quad   0                       /* base */
str_start:    .asciz "triple: start\n"
str_survived: .asciz "triple: survived\n"

    .section .note.GNU-stack, "", @progbits
