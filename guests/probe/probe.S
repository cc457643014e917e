/*
 * probe.S - a tiny x86-64 guest kernel for the berth micro-VMM.
 *
 * ENTRY CONTRACT (Linux x86-64 64-bit boot protocol, as Firecracker uses for
 * an ELF vmlinux):
 *   - Loaded as an ELF64 executable; PT_LOAD segments at physical 0x100000
 *     (1 MiB) with p_vaddr == p_paddr. Entry point is _start (64-bit code).
 *   - CPU in 64-bit long mode, paging on, first 1 GiB identity mapped,
 *     CS = 64-bit code segment, DS/ES/SS flat, interrupts off, no IDT.
 *   - %rsi = guest-physical (== virtual) address of struct boot_params
 *     (the "zero page"). Fields used:
 *         0x0c8  ext_cmd_line_ptr  u32  (high 32 bits of command line addr)
 *         0x1e8  e820_entries      u8
 *         0x228  hdr.cmd_line_ptr  u32  (low 32 bits of command line addr)
 *         0x2d0  e820_table[]      20-byte packed entries:
 *                                  addr u64, size u64, type u32
 *   - The incoming %rsp is ignored; the probe switches to its own 16 KiB
 *     stack in .bss immediately. Nothing relies on .bss being zeroed.
 *
 * OUTPUT (COM1, 8250 UART at I/O port 0x3f8; every line ends in a bare "\n"):
 *     probe: berth probe v1
 *     probe: cmdline "<command line bytes verbatim, at most 1023 bytes>"
 *     probe: vendor <12-char CPUID leaf 0 vendor string>
 *     probe: e820 count=<decimal count, clamped to 128>
 *     probe: e820 addr=0x<16 hex> size=0x<16 hex> type=<decimal type>
 *         (one line per e820 entry, in table order; hex is lowercase and
 *          zero padded to 16 digits)
 *     probe: done
 *   If the command line pointer (cmd_line_ptr | ext_cmd_line_ptr << 32) is 0,
 *   the cmdline line is `probe: cmdline ""`. The command line is copied
 *   verbatim up to its NUL terminator or 1023 bytes, whichever comes first.
 *   Before each byte the line status register (0x3fd) is polled for THR empty
 *   (bit 5), giving up after 1000 polls so a broken UART cannot hang us; after
 *   the first such timeout the probe stops polling altogether.
 *
 * EXIT: writes the 32-bit value 0 to I/O port 0xf4 (QEMU isa-debug-exit).
 *   If execution continues, loops forever on `cli; hlt`.
 *
 * RESTRICTIONS: plain integer instructions, in/out, cpuid, cli, hlt only.
 *   No SSE/MMX/x87, no string instructions, no iret. About 20 instructions
 *   per byte printed: ~17k for a typical run, ~220k with a full 128-entry
 *   e820 map (every CPL0 instruction may be emulated by the host).
 *
 * Register conventions inside the probe: %r15 = boot_params pointer and
 * %r14 = UART poll budget for the whole run; every helper preserves all
 * other registers (flags are clobbered).
 */

#define COM1_THR            0x3f8
#define COM1_LSR            0x3fd
#define LSR_THR_EMPTY       0x20
#define UART_POLL_LIMIT     1000
#define DEBUG_EXIT_PORT     0xf4

#define BP_EXT_CMD_LINE_PTR 0x0c8
#define BP_E820_ENTRIES     0x1e8
#define BP_CMD_LINE_PTR     0x228
#define BP_E820_TABLE       0x2d0
#define E820_ENTRY_SIZE     20
#define E820_MAX_ENTRIES    128
#define CMDLINE_MAX         1023

#define STACK_SIZE          16384

/* Print the NUL-terminated string at label `str`. */
#define PUTS(str)       lea str(%rip), %rsi; call puts

    .code64

    .section .text.start, "ax", @progbits
    .globl _start
    .type _start, @function
_start:
    cli
    mov     %rsi, %r15                  /* boot_params */
    mov     $UART_POLL_LIMIT, %r14d     /* putc poll budget */
    lea     stack_top(%rip), %rsp
    xor     %ebp, %ebp

    /* --- banner --- */
    PUTS(str_banner)

    /* --- command line --- */
    PUTS(str_cmdline)
    mov     BP_EXT_CMD_LINE_PTR(%r15), %eax     /* zero-extends to %rax */
    shl     $32, %rax
    mov     BP_CMD_LINE_PTR(%r15), %ecx
    or      %rcx, %rax
    jz      .Lcmdline_end
    mov     %rax, %rbx
    mov     $CMDLINE_MAX, %r12d
.Lcmdline_loop:
    movzbl  (%rbx), %eax
    test    %al, %al
    jz      .Lcmdline_end
    call    putc
    inc     %rbx
    dec     %r12d
    jnz     .Lcmdline_loop
.Lcmdline_end:
    PUTS(str_quote_nl)

    /* --- CPU vendor (leaf 0: EBX, EDX, ECX) --- */
    PUTS(str_vendor)
    xor     %eax, %eax
    xor     %ecx, %ecx
    cpuid
    mov     %ebx, %eax
    call    put4
    mov     %edx, %eax
    call    put4
    mov     %ecx, %eax
    call    put4
    call    newline

    /* --- e820 map --- */
    PUTS(str_e820_count)
    movzbl  BP_E820_ENTRIES(%r15), %r12d
    cmp     $E820_MAX_ENTRIES, %r12d
    jbe     1f
    mov     $E820_MAX_ENTRIES, %r12d
1:  mov     %r12, %rax
    call    put_dec
    call    newline

    lea     BP_E820_TABLE(%r15), %rbx
    test    %r12d, %r12d
    jz      .Le820_end
.Le820_loop:
    PUTS(str_e820_addr)
    mov     0(%rbx), %rax
    call    put_hex64
    PUTS(str_e820_size)
    mov     8(%rbx), %rax
    call    put_hex64
    PUTS(str_e820_type)
    mov     16(%rbx), %eax                      /* u32, zero-extended */
    call    put_dec
    call    newline
    add     $E820_ENTRY_SIZE, %rbx
    dec     %r12d
    jnz     .Le820_loop
.Le820_end:

    /* --- done, exit via isa-debug-exit --- */
    PUTS(str_done)
    mov     $DEBUG_EXIT_PORT, %edx
    xor     %eax, %eax
    out     %eax, %dx
.Lhalt:
    cli
    hlt
    jmp     .Lhalt
    .size _start, . - _start

    .text

/*
 * putc: write the byte in %al to COM1. Polls LSR.THRE at most %r14d times
 * (UART_POLL_LIMIT), then writes regardless. If a poll loop ever times out,
 * %r14d is set to 0 and later bytes are written without polling, so a UART
 * whose LSR never reports THR empty costs 1000 reads once, not per byte.
 * Preserves all registers except %r14 (the global poll budget).
 */
    .type putc, @function
putc:
    push    %rcx
    push    %rdx
    push    %rax
    mov     %r14d, %ecx             /* poll budget; 0 = UART gave up */
    test    %ecx, %ecx
    jz      2f
    mov     $COM1_LSR, %edx
1:  in      %dx, %al
    test    $LSR_THR_EMPTY, %al
    jnz     2f
    dec     %ecx
    jnz     1b
    xor     %r14d, %r14d            /* never ready: stop polling from now on */
2:  pop     %rax
    mov     $COM1_THR, %edx
    out     %al, %dx
    pop     %rdx
    pop     %rcx
    ret
    .size putc, . - putc

/* newline: write "\n". Preserves all registers. */
    .type newline, @function
newline:
    push    %rax
    mov     $10, %eax                  /* '\n' */
    call    putc
    pop     %rax
    ret
    .size newline, . - newline

/* puts: write the NUL-terminated string at %rsi. Preserves all registers. */
    .type puts, @function
puts:
    push    %rax
    push    %rsi
1:  movzbl  (%rsi), %eax
    test    %al, %al
    jz      2f
    call    putc
    inc     %rsi
    jmp     1b
2:  pop     %rsi
    pop     %rax
    ret
    .size puts, . - puts

/* put4: write the 4 bytes of %eax, lowest byte first. Preserves all. */
    .type put4, @function
put4:
    push    %rax
    push    %rcx
    mov     $4, %ecx
1:  call    putc
    shr     $8, %eax
    dec     %ecx
    jnz     1b
    pop     %rcx
    pop     %rax
    ret
    .size put4, . - put4

/*
 * put_hex64: write %rax as exactly 16 lowercase hex digits (no prefix).
 * Preserves all registers.
 */
    .type put_hex64, @function
put_hex64:
    push    %rax
    push    %rcx
    push    %rdx
    mov     %rax, %rdx
    mov     $16, %ecx
1:  rol     $4, %rdx                /* next nibble, most significant first */
    mov     %edx, %eax
    and     $0xf, %eax
    cmp     $10, %eax
    jb      2f
    add     $('a' - '0' - 10), %eax   /* 10..15 -> 'a'..'f' */
2:  add     $'0', %eax
    call    putc
    dec     %ecx
    jnz     1b
    pop     %rdx
    pop     %rcx
    pop     %rax
    ret
    .size put_hex64, . - put_hex64

/*
 * put_dec: write %rax as an unsigned decimal number (no leading zeros,
 * "0" for zero). Preserves all registers.
 */
    .type put_dec, @function
put_dec:
    push    %rax
    push    %rcx
    push    %rdx
    push    %rdi
    sub     $32, %rsp               /* digit buffer; u64 needs <= 20 */
    lea     32(%rsp), %rdi          /* fill backwards from the end */
    mov     $10, %ecx
1:  xor     %edx, %edx
    div     %rcx                    /* rax = rax / 10, rdx = rax % 10 */
    add     $'0', %edx
    dec     %rdi
    mov     %dl, (%rdi)
    test    %rax, %rax
    jnz     1b
    lea     32(%rsp), %rcx
2:  movzbl  (%rdi), %eax
    call    putc
    inc     %rdi
    cmp     %rcx, %rdi
    jb      2b
    add     $32, %rsp
    pop     %rdi
    pop     %rdx
    pop     %rcx
    pop     %rax
    ret
    .size put_dec, . - put_dec

    .section .rodata, "a", @progbits
str_banner:     .asciz "probe: berth probe v1\n"
str_cmdline:    .asciz "probe: cmdline \""
str_quote_nl:   .asciz "\"\n"
str_vendor:     .asciz "probe: vendor "
str_e820_count: .asciz "probe: e820 count="
str_e820_addr:  .asciz "probe: e820 addr=0x"
str_e820_size:  .asciz " size=0x"
str_e820_type:  .asciz " type="
str_done:       .asciz "probe: done\n"

    .section .bss, "aw", @nobits
    .balign 16
stack_bottom:
    .skip   STACK_SIZE
stack_top:

    .section .note.GNU-stack, "", @progbits
