/*
 * mb-low.S - a multiboot v1 ELF32 guest that loads where kvm-unit-tests'
 * realmode.flat does (0x8000), over the homes of berth's boot stack and
 * page tables. Linked without a linker script:
 * `gcc -m32 -nostdlib -static -Wl,--build-id=none -Wl,-Ttext=0x8000`, so
 * GNU ld also puts a header-only PT_LOAD at 0x7000 (over the home of the
 * multiboot memory map).
 *
 * Entered in 32-bit protected mode, paging off, %ebx = multiboot_info. It
 * checks that its 16 KiB of 0x5a filler (0x8xxx..0xcxxx) is intact, i.e.
 * berth wrote no boot structure over it, and prints (COM1, no polling):
 *   mb-low: image intact            (or: mb-low: image clobbered)
 *   mb-low: cmdline "<the multiboot command line>"
 * then writes 0x21 to isa-debug-exit (status 67) if intact, else 0x22
 * (status 69).
 */
#define COM1 0x3f8

    .text
    .code32
    .p2align 2
mb_header:
    .long   0x1badb002, 0, -0x1badb002  /* magic, flags 0 (load the ELF), checksum */

    .globl  _start
_start:
    cli
    mov     $stack_top, %esp
    push    %ebx                        /* multiboot_info */
    mov     $filler, %edi
    mov     $filler_end, %ecx
    sub     %edi, %ecx
    mov     $0x5a, %al
    repe scasb
    mov     $str_intact, %esi
    mov     $0x21, %ebp
    je      1f
    mov     $str_clobbered, %esi
    mov     $0x22, %ebp
1:  call    puts
    mov     $str_cmdline, %esi
    call    puts
    pop     %ebx
    testl   $4, (%ebx)                  /* flags bit 2: cmdline valid */
    jz      2f
    mov     16(%ebx), %esi
    call    puts
2:  mov     $str_quote_nl, %esi
    call    puts
    mov     $0xf4, %dx
    mov     %ebp, %eax
    out     %eax, %dx
3:  hlt
    jmp     3b

/* puts: the NUL-terminated string at %esi to COM1. Clobbers %eax, %edx, %esi. */
puts:
    mov     $COM1, %dx
1:  lodsb
    test    %al, %al
    jz      2f
    out     %al, %dx
    jmp     1b
2:  ret

str_intact:     .asciz "mb-low: image intact\n"
str_clobbered:  .asciz "mb-low: image clobbered\n"
str_cmdline:    .asciz "mb-low: cmdline \""
str_quote_nl:   .asciz "\"\n"

    .p2align 4
    .fill   256, 1, 0
stack_top:
filler:
    .fill   0x4000, 1, 0x5a
filler_end:
