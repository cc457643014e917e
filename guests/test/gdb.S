/*
 * gdb.S - the gdb stub's test guest (tests/gdb.rs), built with symbols (-g).
 *
 * CPL0 part: sets rbx = 0x1122334455667788, r12 = 0x0123456789abcdef,
 * then at `k_break` runs `mov $0x99, %edx` (5 bytes; `k_next` follows it),
 * at `k_store` stores 0x1234 into `k_watched`. Then it drops to ring 3:
 * sets the U bit in berth's boot page-table entries for 0..2 MiB (PML4
 * 0x9000, PDPT 0xa000, PD 0xb000), loads its own GDT (0x08 kernel code,
 * 0x10 kernel data, 0x1b user data, 0x23 user code) and `iretq`s to
 * `user_entry` at CPL3 with IF 0 - but only when gdb has set the byte
 * `go_user`; otherwise it prints "gdb: done" and leaves through debug-exit
 * with 0x21 (status 67). No TSS and no IDT: any exception at CPL3 ends the
 * VM. (PVM runs CPL3 with IOPL 0 whatever the guest asks, and a `syscall`
 * from a guest that is not PVM-aware does not reach CPL0 there, so ring 3
 * never comes back: tests end it with gdb's `kill`.)
 * CPL3 part: sets r13 = 0x5566, at `u_break` runs `mov $0x77, %edx`
 * (5 bytes; `u_next`), at `u_store` stores 0x5678 into `u_watched`, then
 * spins at `u_spin` (natively on PVM).
 * `gdb_data` holds "berth-gdb!" and the qword 0xfeedfacecafebeef.
 */
#include "lib.h"

#define USER_CS 0x23
#define USER_DS 0x1b

    .code64
    .section .text.start, "ax", @progbits
    .globl _start
    .type _start, @function
_start:
    GUEST_PROLOGUE
    PUTS(str_start)
    mov     $0x1122334455667788, %rbx
    mov     $0x0123456789abcdef, %r12
    .globl k_break
k_break:
    mov     $0x99, %edx
    .globl k_next
k_next:
    nop
    .globl k_store
k_store:
    movq    $0x1234, k_watched(%rip)
    .globl k_after_store
k_after_store:
    nop
    /* Unless gdb set `go_user`, the run ends here: status 67. */
    cmpb    $0, go_user(%rip)
    jne     1f
    PUTS(str_done)
    EXIT(0x21)
1:
    /* Ring 3: user-accessible mappings for 0..2 MiB, a GDT with user segments. */
    orq     $4, 0x9000
    orq     $4, 0xa000
    orq     $4, 0xb000
    mov     %cr3, %rax
    mov     %rax, %cr3
    lgdt    gdt_desc(%rip)
    pushq   $USER_DS
    lea     user_stack_top(%rip), %rax
    push    %rax
    pushq   $0x2
    pushq   $USER_CS
    lea     user_entry(%rip), %rax
    push    %rax
    iretq
    .size _start, . - _start

    .globl user_entry
    .type user_entry, @function
user_entry:
    mov     $0x5566, %r13
    .globl u_break
u_break:
    mov     $0x77, %edx
    .globl u_next
u_next:
    nop
    .globl u_store
u_store:
    movq    $0x5678, u_watched(%rip)
    .globl u_after_store
u_after_store:
    nop
    .globl u_spin
u_spin:
    jmp     u_spin
    .size user_entry, . - user_entry

    .section .rodata, "a", @progbits
str_start:  .asciz "gdb: start\n"
str_done:   .asciz "gdb: done\n"
    .balign 8
gdt:
    .quad   0
    .quad   0x00af9a000000ffff      /* 0x08 kernel code, 64-bit */
    .quad   0x00cf92000000ffff      /* 0x10 kernel data */
    .quad   0x00cff2000000ffff      /* 0x18 user data, DPL 3 */
    .quad   0x00affa000000ffff      /* 0x20 user code, 64-bit, DPL 3 */
gdt_end:
gdt_desc:
    .word   gdt_end - gdt - 1
    .quad   gdt

    .section .data, "aw", @progbits
    .balign 8
    .globl gdb_data
gdb_data:
    .ascii  "berth-gdb!"
    .balign 8
    .quad   0xfeedfacecafebeef
    .globl k_watched
k_watched:
    .quad   0
    .globl u_watched
u_watched:
    .quad   0
    .globl go_user
go_user:
    .byte   0

    .section .bss, "aw", @nobits
    .balign 16
    .skip   4096
user_stack_top:

    .section .note.GNU-stack, "", @progbits
