/*
 * ports.S - probes every I/O port and a few unmapped MMIO addresses and
 * counts reads that did not return all-ones (what a VMM should answer for
 * nothing-there).
 *
 * I/O ports: for every port 0..=0xffff except the ranges below, `inb` from
 * it, then `outb` 0x00 to it (in that order; 65509 ports). Skipped:
 *     0x060-0x064  i8042 (a write could reset the VM)
 *     0x070-0x071  CMOS/RTC index (bit 7 of 0x70 is the NMI mask)
 *     0x0f4-0x0f7  isa-debug-exit
 *     0x3f8-0x3ff  COM1
 *     0xcf8-0xcff  PCI config mechanism #1 and 0xcf9 reset control
 * Note that ports a VMM does emulate (e.g. the in-kernel PIC at 0x20/0x21/
 * 0xa0/0xa1/0x4d0/0x4d1 and PIT at 0x40-0x43) legitimately read non-0xff.
 *
 * MMIO: maps 0xc0000000..0xffffffff (the boot identity map covers only the
 * first 1 GiB) through a page directory of its own in .bss (2 MiB pages,
 * PCD|PWT) hooked into PDPT[3] (the PDPT is found from CR3 / PML4[0]), then
 * reloads CR3. For each of 0xc0000000, 0xd0000000, 0xe0000000 and
 * 0xfebff000: 64-bit read, 64-bit write of 0, 64-bit read again; counts the
 * reads (8 in all) that were not 0xffffffffffffffff.
 *
 * OUTPUT (COM1):
 *     ports: start
 *     ports: port 0x<4 hex>=0x<2 hex>       (each of the FIRST 16 non-0xff
 *                                            ports only, in port order)
 *     ports: non-ff reads=<decimal count>
 *     ports: mmio 0x<16 hex>=0x<16 hex>     (each non-all-ones MMIO read)
 *     ports: non-ff mmio=<decimal count>
 *     ports: done
 * then exits via debug-exit with value 0 (status 1).
 */
#include "lib.h"

#define PORT_DETAIL_MAX     16
#define PDE_FLAGS           0x9b        /* P | RW | PWT | PCD | PS (2 MiB) */
#define PDPTE_FLAGS         0x03        /* P | RW */
#define HIGH_GIB            0xc0000000  /* PDPT[3] covers 3..4 GiB */

    .code64
    .section .text.start, "ax", @progbits
    .globl _start
    .type _start, @function
_start:
    GUEST_PROLOGUE
    PUTS(str_start)

    /* ---------------- I/O ports ---------------- */
    xor     %r12d, %r12d                /* non-0xff count */
    lea     port_ranges(%rip), %r13
.Lrange:
    movzwl  0(%r13), %ebx               /* first port */
    movzwl  2(%r13), %r14d              /* last port (inclusive) */
.Lport:
    mov     %ebx, %edx
    in      %dx, %al
    cmp     $0xff, %al
    je      1f
    inc     %r12d
    cmp     $PORT_DETAIL_MAX, %r12d
    ja      1f
    PUTS(str_port)                      /* "ports: port 0x" */
    movzbl  %al, %r15d
    mov     %ebx, %eax
    mov     $4, %ecx
    call    put_hex
    PUTS(str_eq)                        /* "=0x" */
    mov     %r15d, %eax
    mov     $2, %ecx
    call    put_hex
    call    newline
    mov     %ebx, %edx
1:  xor     %eax, %eax
    out     %al, %dx
    inc     %ebx
    cmp     %r14d, %ebx
    jbe     .Lport
    add     $4, %r13
    lea     port_ranges_end(%rip), %rax
    cmp     %rax, %r13
    jb      .Lrange

    PUTS(str_reads)
    mov     %r12, %rax
    call    put_dec
    call    newline

    /* ---------------- map 3..4 GiB ---------------- */
    lea     mmio_pd(%rip), %rdi
    mov     $(HIGH_GIB | PDE_FLAGS), %eax   /* zero-extends into %rax */
    mov     $512, %ecx
1:  mov     %rax, (%rdi)
    add     $0x200000, %rax
    add     $8, %rdi
    dec     %ecx
    jnz     1b

    movabs  $0x000ffffffffff000, %rdx   /* physical-address bits of an entry */
    mov     %cr3, %rax
    and     %rdx, %rax                  /* PML4 */
    mov     (%rax), %rax                /* PML4[0] */
    and     %rdx, %rax                  /* PDPT (0xa000 by the contract) */
    lea     mmio_pd(%rip), %rcx
    or      $PDPTE_FLAGS, %rcx
    mov     %rcx, 3*8(%rax)             /* PDPT[3] -> our PD */
    mov     %cr3, %rax                  /* flush the TLB */
    mov     %rax, %cr3

    /* ---------------- MMIO ---------------- */
    xor     %r12d, %r12d                /* non-all-ones count */
    lea     mmio_addrs(%rip), %r13
.Lmmio:
    mov     (%r13), %rbx
    mov     (%rbx), %rax
    call    check_mmio
    movq    $0, (%rbx)
    mov     (%rbx), %rax
    call    check_mmio
    add     $8, %r13
    lea     mmio_addrs_end(%rip), %rax
    cmp     %rax, %r13
    jb      .Lmmio

    PUTS(str_mmio_count)
    mov     %r12, %rax
    call    put_dec
    call    newline

    PUTS(str_done)
    EXIT(0)
    .size _start, . - _start

/*
 * check_mmio: %rax = value read from address %rbx. If it is not all-ones,
 * count it in %r12 and print "ports: mmio 0x<addr>=0x<value>".
 */
    .type check_mmio, @function
check_mmio:
    cmp     $-1, %rax
    je      1f
    inc     %r12d
    PUTS(str_mmio)
    push    %rax
    mov     %rbx, %rax
    call    put_hex64
    PUTS(str_eq)
    pop     %rax
    call    put_hex64
    call    newline
1:  ret
    .size check_mmio, . - check_mmio

    .section .rodata, "a", @progbits
    .balign 8
port_ranges:                        /* inclusive [first, last] pairs */
    .word   0x0000, 0x005f
    .word   0x0065, 0x006f
    .word   0x0072, 0x00f3
    .word   0x00f8, 0x03f7
    .word   0x0400, 0x0cf7
    .word   0x0d00, 0xffff
port_ranges_end:
mmio_addrs:
    .quad   0xc0000000
    .quad   0xd0000000
    .quad   0xe0000000
    .quad   0xfebff000
mmio_addrs_end:
str_start:      .asciz "ports: start\n"
str_port:       .asciz "ports: port 0x"
str_eq:         .asciz "=0x"
str_reads:      .asciz "ports: non-ff reads="
str_mmio:       .asciz "ports: mmio 0x"
str_mmio_count: .asciz "ports: non-ff mmio="
str_done:       .asciz "ports: done\n"

    .section .bss, "aw", @nobits
    .balign 4096
mmio_pd:                            /* filled completely by the code */
    .skip   4096

    .section .note.GNU-stack, "", @progbits
