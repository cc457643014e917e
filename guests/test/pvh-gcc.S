/*
 * pvh-gcc.S - the PVH guest from issue 10, linked the way its users link
 * it: `gcc -m64 -nostdlib -static -Wl,-Ttext=0x100000 pvh-gcc.S`, no linker
 * script. GNU ld 2.40 then puts a header-only PT_LOAD at 0xff000 (ELF and
 * program headers), .text at 0x100000 and the notes (build id and the PVH
 * note) in a third PT_LOAD above; QEMU, Cloud Hypervisor and Firecracker all
 * boot it.
 *
 * Entered in 32-bit protected mode (paging off) at the PVH note's address;
 * prints `pvh-gcc: hello from 32-bit code` to COM1 (no LSR polling) and
 * writes 0x2a to isa-debug-exit: status (0x2a << 1) | 1 = 85.
 */
    .section .note.Xen, "a", @note
    .p2align 2
    .long 4, 4, 18                  /* namesz, descsz, XEN_ELFNOTE_PHYS32_ENTRY */
    .asciz "Xen"
    .long _start

    .text
    .code32
    .globl _start
_start:
    cli
    mov     $msg, %esi
    mov     $0x3f8, %dx
1:  lodsb
    test    %al, %al
    jz      2f
    out     %al, %dx
    jmp     1b
2:  mov     $0xf4, %dx
    mov     $0x2a, %eax
    out     %eax, %dx
3:  hlt
    jmp     3b

msg:
    .asciz  "pvh-gcc: hello from 32-bit code\n"
