/*
 * cmpxchg16b.S - prints "cmpxchg16b: start", then executes
 * `lock cmpxchg16b` on a 16-byte aligned .bss slot. A host whose instruction
 * emulator cannot handle it reports KVM_EXIT_INTERNAL_ERROR (suberror 1,
 * emulation failure) -> berth exit 4. On hardware KVM it just executes; the
 * guest then prints "cmpxchg16b: survived" and exits via debug-exit with
 * value 0x10 (status 33).
 *
 * CPUID.1:ECX.CX16 is not checked: a CPU without it would #UD, which with
 * the unusable boot IDT is a triple fault (also exit 4).
 */
#include "lib.h"

    .code64
    .section .text.start, "ax", @progbits
    .globl _start
    .type _start, @function
_start:
    GUEST_PROLOGUE
    PUTS(str_start)
    lea     slot(%rip), %rdi
    movq    $0, 0(%rdi)             /* make the compare succeed */
    movq    $0, 8(%rdi)
    xor     %eax, %eax              /* expected: rdx:rax = 0 */
    xor     %edx, %edx
    mov     $0x1111, %ebx           /* new value: rcx:rbx */
    mov     $0x2222, %ecx
    lock cmpxchg16b (%rdi)
    PUTS(str_survived)
    EXIT(0x10)
    .size _start, . - _start

    .section .rodata, "a", @progbits
str_start:    .asciz "cmpxchg16b: start\n"
str_survived: .asciz "cmpxchg16b: survived\n"

    .section .bss, "aw", @nobits
    .balign 16
slot:
    .skip   16

    .section .note.GNU-stack, "", @progbits
