/*
 * lib.S - shared routines for the berth integration-test guests.
 * Linked into every guests/<name>.elf built from guests/test/. See lib.h for
 * the list and the register conventions.
 *
 * UART polling: before each byte putc polls the line status register (0x3fd)
 * for THR empty (bit 5) at most UART_POLL_LIMIT times, then writes anyway.
 * After the first timeout the budget (uart_poll_budget, in .data) drops to 0
 * and later bytes are written without polling, so a UART whose LSR never
 * reports THR empty costs 1000 reads once, not per byte (like the probe).
 *
 * Only plain integer instructions, in/out, cli and hlt: no SSE/MMX/x87, no
 * string instructions, no iret.
 */
#include "lib.h"

    .code64
    .text

/* putc: write %al to COM1 with bounded LSR polling. Preserves all registers. */
    .globl putc
    .type putc, @function
putc:
    push    %rcx
    push    %rdx
    push    %rax
    mov     uart_poll_budget(%rip), %ecx    /* 0 = UART gave up */
    test    %ecx, %ecx
    jz      2f
    mov     $COM1_LSR, %edx
1:  in      %dx, %al
    test    $LSR_THR_EMPTY, %al
    jnz     2f
    dec     %ecx
    jnz     1b
    movl    $0, uart_poll_budget(%rip)      /* never ready: stop polling */
2:  pop     %rax
    mov     $COM1_THR, %edx
    out     %al, %dx
    pop     %rdx
    pop     %rcx
    ret
    .size putc, . - putc

/* putc_raw: write %al to COM1 without polling. Preserves all registers. */
    .globl putc_raw
    .type putc_raw, @function
putc_raw:
    push    %rdx
    mov     $COM1_THR, %edx
    out     %al, %dx
    pop     %rdx
    ret
    .size putc_raw, . - putc_raw

/* newline: write "\n". Preserves all registers. */
    .globl newline
    .type newline, @function
newline:
    push    %rax
    mov     $10, %eax
    call    putc
    pop     %rax
    ret
    .size newline, . - newline

/* puts: write the NUL-terminated string at %rsi. Preserves all registers. */
    .globl puts
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

/*
 * put_hex: write the low %ecx (1..16) nibbles of %rax as lowercase hex,
 * most significant first, no prefix. Preserves all registers.
 */
    .globl put_hex
    .type put_hex, @function
put_hex:
    push    %rax
    push    %rcx
    push    %rdx
    mov     %rax, %rdx
    mov     $16, %eax
    sub     %ecx, %eax              /* 16 - n nibbles to skip */
    shl     $2, %eax                /* ... as a bit count */
    push    %rcx
    mov     %eax, %ecx
    shl     %cl, %rdx               /* wanted nibbles now at the top */
    pop     %rcx
1:  rol     $4, %rdx
    mov     %edx, %eax
    and     $0xf, %eax
    cmp     $10, %eax
    jb      2f
    add     $('a' - '0' - 10), %eax
2:  add     $'0', %eax
    call    putc
    dec     %ecx
    jnz     1b
    pop     %rdx
    pop     %rcx
    pop     %rax
    ret
    .size put_hex, . - put_hex

/* put_hex64: write %rax as exactly 16 lowercase hex digits. Preserves all. */
    .globl put_hex64
    .type put_hex64, @function
put_hex64:
    push    %rcx
    mov     $16, %ecx
    call    put_hex
    pop     %rcx
    ret
    .size put_hex64, . - put_hex64

/*
 * put_dec: write %rax as an unsigned decimal number (no leading zeros, "0"
 * for zero). Preserves all registers.
 */
    .globl put_dec
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

/*
 * debug_exit: write the 32-bit value in %eax to the isa-debug-exit port
 * (the VMM exits with status (%eax << 1) | 1). If execution continues, loop
 * on `cli; hlt` forever. Never returns.
 */
    .globl debug_exit
    .type debug_exit, @function
debug_exit:
    mov     $DEBUG_EXIT_PORT, %edx
    out     %eax, %dx
1:  cli
    hlt
    jmp     1b
    .size debug_exit, . - debug_exit

    .section .data, "aw", @progbits
    .balign 4
uart_poll_budget:
    .long   UART_POLL_LIMIT

    .section .bss, "aw", @nobits
    .balign 16
stack_bottom:
    .skip   STACK_SIZE
    .globl stack_top
stack_top:

    .section .note.GNU-stack, "", @progbits
