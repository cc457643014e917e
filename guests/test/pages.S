/*
 * pages.S - for incremental snapshots (tests/snapshot.rs). Writes one
 * quadword into each of 8 pages at 0x800000 (value 0x1111), prints
 * "pages: one", busy-waits PAGES_DELAY iterations (registers only), writes
 * 8 pages at 0x810000 (value 0x2222), prints "pages: two", then spins
 * forever without touching memory. A snapshot taken at "pages: one" and an
 * incremental one after "pages: two" differ by exactly the second 8 pages
 * plus what the code itself dirties (its stack, lib.S's variables).
 */
#include "lib.h"

#ifndef PAGES_DELAY
#define PAGES_DELAY 200000
#endif

    .code64
    .section .text.start, "ax", @progbits
    .globl _start
    .type _start, @function
_start:
    GUEST_PROLOGUE
    PUTS(str_start)
    mov     $0x800000, %rdi
    mov     $0x1111, %rax
    call    fill
    PUTS(str_one)
    mov     $PAGES_DELAY, %ecx
1:  dec     %ecx
    jnz     1b
    mov     $0x810000, %rdi
    mov     $0x2222, %rax
    call    fill
    PUTS(str_two)
2:  jmp     2b
    .size _start, . - _start

/* Writes %rax to the first quadword of 8 pages from %rdi. */
fill:
    mov     $8, %ecx
1:  mov     %rax, (%rdi)
    add     $0x1000, %rdi
    dec     %ecx
    jnz     1b
    ret

    .section .rodata, "a", @progbits
str_start:   .asciz "pages: start\n"
str_one:     .asciz "pages: one\n"
str_two:     .asciz "pages: two\n"

    .section .note.GNU-stack, "", @progbits
