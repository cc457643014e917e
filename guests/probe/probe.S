/*
 * probe.S - a tiny x86-64 guest kernel for the berth micro-VMM.
 *
 * ENTRY CONTRACT (Linux x86-64 64-bit boot protocol, as Firecracker uses for
 * an ELF vmlinux):
 *   - Loaded as an ELF64 executable; PT_LOAD segments at physical 0x100000
 *     (1 MiB) with p_vaddr == p_paddr. Entry point is _start (64-bit code).
 *   - CPU in 64-bit long mode, paging on, first 1 GiB identity mapped with
 *     2 MiB pages (PML4 0x9000, PDPT 0xa000, PD 0xb000), CS = 0x08 (64-bit
 *     code), DS/ES/SS = 0x10 flat, GDT at 0x500, interrupts off, no IDT.
 *   - %rsi = guest-physical (== virtual) address of struct boot_params
 *     (the "zero page"). Fields used:
 *         0x0c8  ext_cmd_line_ptr  u32  (high 32 bits of command line addr)
 *         0x1e8  e820_entries      u8
 *         0x228  hdr.cmd_line_ptr  u32  (low 32 bits of command line addr)
 *         0x2d0  e820_table[]      20-byte packed entries:
 *                                  addr u64, size u64, type u32
 *   - The incoming %rsp is ignored; the probe switches to its own 16 KiB
 *     stack in .bss immediately. Nothing relies on .bss being zeroed: every
 *     variable is cleared or written by code before it is read.
 *
 * WHAT IT DOES, in order (BSP = the CPU that enters at _start):
 *   1. Maps 3..4 GiB (LAPIC, IOAPIC, MMIO test zones) uncached: PDPT[3] (at
 *      0xa018) -> a page directory in .bss of 512 2 MiB pages, flags
 *      P|RW|PWT|PCD|PS (0x9b); reloads CR3. Builds a 256-gate IDT and loads it.
 *   2. Prints the original report: banner, command line, vendor, e820.
 *   3. Parses the command line options (see below).
 *   4. Enables the BSP's xAPIC (TPR = 0, SVR = 0x1ff), masks both 8259s,
 *      reads the Intel MP table (floating pointer "_MP_" in 0x9fc00..0xa0000
 *      then 0xf0000..0x100000 on 16-byte boundaries -> "PCMP" table), `sti`.
 *   5. SMP: copies a real-mode trampoline to 0x10000 and starts each other
 *      enabled CPU of the MP table (APIC ID < 16) with INIT-SIPI-SIPI
 *      (vector 0x10), one at a time, waiting up to AP_WAIT loops for each
 *      to come online. The AP goes real -> 32-bit protected (trampoline GDT)
 *      -> long mode (CR3 = 0x9000) -> ap_entry64, enables its LAPIC, loads
 *      the IDT, prints its line, counts itself online, then `sti; hlt`s.
 *   6. Programs the IOAPIC: pin P -> vector 0x30+P, fixed, physical,
 *      active high, edge (level for probe.level), unmasked, destination =
 *      the P mod N'th online CPU in MP-table order.
 *   7. Runs the optional tests (GSI edges, level re-fire, recorder MMIO
 *      writes, PIO writes, doorbell), prints the stray-interrupt count and
 *      `probe: done`, and exits.
 *
 * COMMAND LINE (tokens separated by bytes <= 0x20; numbers are decimal or
 * 0x-hex and must fit in 32 bits; lists are comma separated; a later token
 * overrides an earlier one; unknown tokens, including unknown probe.* ones,
 * are ignored; a known option with a malformed or out-of-range value is
 * reported with a `bad option` line and ignored):
 *     probe.irqlines=PORT        irq-lines device base port (<= 0xffff):
 *                                outb level, PORT+gsi
 *     probe.gsi=G1,G2,...        GSIs (<= 0xffff, 1..64 of them) to pulse
 *     probe.level=G              IOAPIC pin (< 24) for the level test
 *     probe.recorder=ADDR        recorder zone; [ADDR, ADDR+4096) must lie
 *     probe.records=N            in 0..1 GiB or 3..4 GiB
 *     probe.pio=PORT             port (<= 0xffff) for N byte writes
 *     probe.pio_records=N
 *     probe.doorbell=ADDR,VALUE  one 32-bit MMIO write; [ADDR, ADDR+4) must
 *                                lie in 0..1 GiB or 3..4 GiB
 *
 * OUTPUT (COM1, 8250 UART at I/O port 0x3f8; every line ends in a bare "\n";
 * hex is lowercase and zero padded; [..] lines are conditional):
 *     probe: berth probe v1
 *     probe: cmdline "<command line bytes verbatim, at most 1023 bytes>"
 *     probe: vendor <12-char CPUID leaf 0 vendor string>
 *     probe: e820 count=<decimal count, clamped to 128>
 *     probe: e820 addr=0x<16 hex> size=0x<16 hex> type=<decimal type>
 *         (one line per e820 entry, in table order)
 *    [probe: bad option "<token verbatim>"]          (per malformed option)
 *    [probe: mptable missing]
 *     probe: cpus=<N> ioapic=0x<8 hex>
 *     probe: cpu apic=<BSP apic id> online
 *    [probe: cpu apic=<id> online]                   (per AP, start order)
 *     probe: smp online=<count>
 *     probe: ioapic pin=<P> vector=0x<2 hex> dest=<apic id> trigger=<edge|level>
 *         (24 lines, P = 0..23)
 *    [probe: gsi=<G> vector=0x<2 hex> apic=<id>]     (per record, per G)
 *    [probe: gsi=<G> missing]
 *    [probe: level gsi=<G> fired=<count>]
 *    [probe: recorder wrote=<N>]
 *    [probe: pio wrote=<N>]
 *    [probe: doorbell vector=0x<2 hex> apic=<id>]    (per record)
 *    [probe: doorbell missing]
 *     probe: interrupts stray=<count>
 *     probe: done
 *   On a CPU exception (any CPU):
 *     probe: exception vector=<dec> apic=<dec> rip=0x<16 hex>
 *   and then exit with value 0x7f.
 *   If the command line pointer (cmd_line_ptr | ext_cmd_line_ptr << 32) is 0,
 *   the cmdline line is `probe: cmdline ""`. The command line is copied
 *   verbatim up to its NUL terminator or 1023 bytes, whichever comes first
 *   (options are parsed from up to 4095 bytes). Before each byte the line
 *   status register (0x3fd) is polled for THR empty (bit 5), giving up after
 *   1000 polls so a broken UART cannot hang us; after the first such timeout
 *   the probe stops polling altogether (on every CPU). Once APs may run,
 *   every line is printed whole under a spinlock (lock xchg) with
 *   interrupts off, so lines from different CPUs never interleave.
 *
 * EXIT: writes the 32-bit value 0 to I/O port 0xf4 (QEMU isa-debug-exit),
 *   or 0x7f after an exception. If execution continues, loops forever on
 *   `cli; hlt`. APs never exit; they sit in `hlt` with interrupts on.
 *
 * RESTRICTIONS (every CPL0 instruction may be emulated by the host): plain
 *   integer instructions, in/out, cpuid, rdmsr/wrmsr, lgdt/lidt, mov to CRs,
 *   pause, cli/sti, hlt, lock xchg/xadd/inc, and iretq (64-bit handlers
 *   only). No SSE/MMX/x87, no string instructions, no cmpxchg16b, no 32-bit
 *   iret; interrupts are only ever enabled in 64-bit mode.
 *
 * Register conventions inside the probe: %r15 = boot_params pointer on the
 * BSP; every helper preserves all registers it does not return in (flags
 * are clobbered).
 */

#define COM1_THR            0x3f8
#define COM1_LSR            0x3fd
#define LSR_THR_EMPTY       0x20
#define UART_POLL_LIMIT     1000
#define DEBUG_EXIT_PORT     0xf4
#define EXIT_EXCEPTION      0x7f

#define BP_EXT_CMD_LINE_PTR 0x0c8
#define BP_E820_ENTRIES     0x1e8
#define BP_CMD_LINE_PTR     0x228
#define BP_E820_TABLE       0x2d0
#define E820_ENTRY_SIZE     20
#define E820_MAX_ENTRIES    128
#define CMDLINE_MAX         1023
#define CMDLINE_PARSE_MAX   4095

#define STACK_SIZE          16384

/* Paging: the VMM's tables, and our page directory for 3..4 GiB. */
#define PML4_ADDR           0x9000
#define PDPT_ADDR           0xa000
#define HIGH_GIB            3                   /* PDPT index of 3..4 GiB */
#define HIGH_BASE           0xc0000000
#define PDE_2M_UC           0x9b                /* P|RW|PWT|PCD|PS */
#define LOW_MAP_END         0x40000000          /* identity map: 0..1 GiB */

/* Local APIC (xAPIC MMIO, same address on every CPU). */
#define LAPIC_BASE          0xfee00000
#define LAPIC_ID            0x020
#define LAPIC_TPR           0x080
#define LAPIC_EOI           0x0b0
#define LAPIC_SVR           0x0f0
#define LAPIC_ICR_LO        0x300
#define LAPIC_ICR_HI        0x310
#define SVR_ENABLE_SPURIOUS 0x1ff               /* enabled, spurious 0xff */
#define ICR_BUSY            0x1000
#define ICR_INIT            0x4500              /* INIT, level assert */
#define ICR_SIPI            0x4600              /* Start-up, level assert */

/* I/O APIC. */
#define IOAPIC_DEFAULT      0xfec00000
#define IOAPIC_IOWIN        0x10
#define IOAPIC_PINS         24
#define IOAPIC_REDTBL       0x10
#define REDIR_LEVEL         0x8000
#define IRQ_VECTOR_BASE     0x30

/* Legacy PICs. */
#define PIC1_DATA           0x21
#define PIC2_DATA           0xa1

/* SMP. */
#define TRAMP_BASE          0x10000
#define SIPI_VECTOR         (TRAMP_BASE >> 12)
#define MAX_AP_APIC_ID      16                  /* APs with id >= 16: not started */
#define AP_STACK_SIZE       4096
#define MAX_CPUS            256
#define MP_FP_SIG           0x5f504d5f          /* "_MP_" */
#define MP_CT_SIG           0x504d4350          /* "PCMP" */
#define MP_CT_ENTRY_COUNT   34
#define MP_CT_HEADER_SIZE   44
#define MP_CT_SPAN_MAX      0x10000             /* entries parsed at most this far */
#define EFER_MSR            0xc0000080
#define EFER_LME            0x100

/* Bounded waits, in loop iterations (each a handful of instructions). */
#define ICR_WAIT            1000                /* delivery-status polls */
#define INIT_DELAY          5000                /* after INIT */
#define SIPI_DELAY          1000                /* after each SIPI */
#define AP_WAIT             100000              /* per AP, until it is online */
#define GSI_WAIT            20000               /* interrupt window */
#define GSI_TAIL            2000                /* after the first record */
#define LEVEL_WAIT          50000               /* until two deliveries */
#define LEVEL_TAIL          5000                /* after them */
#define EXC_LOCK_TRIES      20000               /* exception: lock attempts */

/* Interrupt log. */
#define LOG_MAX             256                 /* records of (vector, apic) */

/* Options (bits of opt_flags). */
#define OPT_IRQLINES        0x01
#define OPT_GSI             0x02
#define OPT_LEVEL           0x04
#define OPT_RECORDER        0x08
#define OPT_RECORDS         0x10
#define OPT_PIO             0x20
#define OPT_PIO_RECORDS     0x40
#define OPT_DOORBELL        0x80
#define GSI_LIST_MAX        64

/* Print the NUL-terminated string at label `str` (preserves %rsi). */
#define PUTS(str)       push %rsi; lea str(%rip), %rsi; call puts; pop %rsi
/* Take / drop the output lock around one whole line (see out_lock). */
#define LOCK_OUT        call out_lock
#define UNLOCK_OUT      call out_unlock

    .code64

    .section .text.start, "ax", @progbits
    .globl _start
    .type _start, @function
_start:
    cli
    mov     %rsi, %r15                  /* boot_params */
    lea     stack_top(%rip), %rsp
    xor     %ebp, %ebp
    call    zero_vars
    movl    $UART_POLL_LIMIT, uart_budget(%rip)
    call    map_high
    call    idt_setup

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

    /* --- options, interrupt controllers, SMP --- */
    call    parse_cmdline
    call    lapic_enable
    mov     %eax, bsp_id(%rip)
    mov     $0xff, %al                          /* mask every 8259 input */
    out     %al, $PIC1_DATA
    out     %al, $PIC2_DATA
    call    mp_scan
    sti
    call    smp_boot
    call    ioapic_setup

    /* --- optional tests --- */
    call    test_gsi
    call    test_level
    call    test_recorder
    call    test_pio
    call    test_doorbell

    /* --- stray interrupts, done, exit via isa-debug-exit --- */
    cli
    LOCK_OUT
    PUTS(str_stray)
    mov     stray_count(%rip), %eax
    call    put_dec
    call    newline
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

/* ------------------------------------------------------------------------
 * Start-up helpers
 * ------------------------------------------------------------------------ */

/* zero_vars: clear vars_start..vars_end (qword aligned). Preserves all. */
    .type zero_vars, @function
zero_vars:
    push    %rcx
    push    %rdi
    lea     vars_start(%rip), %rdi
    lea     vars_end(%rip), %rcx
1:  movq    $0, (%rdi)
    add     $8, %rdi
    cmp     %rcx, %rdi
    jb      1b
    pop     %rdi
    pop     %rcx
    ret
    .size zero_vars, . - zero_vars

/*
 * map_high: identity-map 3..4 GiB with uncached 2 MiB pages through our own
 * page directory, hooked into the VMM's PDPT[3]; reload CR3. Preserves all.
 */
    .type map_high, @function
map_high:
    push    %rax
    push    %rcx
    push    %rdi
    lea     high_pd(%rip), %rdi
    mov     $(HIGH_BASE | PDE_2M_UC), %eax      /* zero-extends */
    mov     $512, %ecx
1:  mov     %rax, (%rdi)
    add     $0x200000, %rax
    add     $8, %rdi
    dec     %ecx
    jnz     1b
    lea     high_pd(%rip), %rax
    or      $0x3, %rax                          /* present, writable */
    mov     %rax, PDPT_ADDR + 8 * HIGH_GIB
    mov     %cr3, %rax
    mov     %rax, %cr3
    pop     %rdi
    pop     %rcx
    pop     %rax
    ret
    .size map_high, . - map_high

/*
 * idt_setup: fill the 256-gate IDT (gate v -> idt_stubs + 16 * v, 64-bit
 * interrupt gate, selector 0x08, present, DPL 0) and load it. The image
 * lives below 4 GiB, so offset bits 63:32 are 0. Preserves all.
 */
    .type idt_setup, @function
idt_setup:
    push    %rax
    push    %rcx
    push    %rdx
    push    %rdi
    lea     idt(%rip), %rdi
    lea     idt_stubs(%rip), %rax
    mov     $256, %ecx
1:  mov     %eax, %edx
    and     $0xffff, %edx                       /* offset 15:0 */
    or      $(0x08 << 16), %edx                 /* selector */
    mov     %edx, (%rdi)
    mov     %eax, %edx
    and     $0xffff0000, %edx                   /* offset 31:16 */
    or      $0x8e00, %edx                       /* P, DPL 0, interrupt gate */
    mov     %edx, 4(%rdi)
    movq    $0, 8(%rdi)                         /* offset 63:32, reserved */
    add     $16, %rax
    add     $16, %rdi
    dec     %ecx
    jnz     1b
    lidt    idtr(%rip)
    pop     %rdi
    pop     %rdx
    pop     %rcx
    pop     %rax
    ret
    .size idt_setup, . - idt_setup

/* lapic_enable: TPR = 0, SVR = 0x1ff; returns %eax = own APIC ID. */
    .type lapic_enable, @function
lapic_enable:
    push    %rdi
    mov     $LAPIC_BASE, %edi
    movl    $0, LAPIC_TPR(%rdi)
    movl    $SVR_ENABLE_SPURIOUS, LAPIC_SVR(%rdi)
    mov     LAPIC_ID(%rdi), %eax
    shr     $24, %eax
    pop     %rdi
    ret
    .size lapic_enable, . - lapic_enable

/* ------------------------------------------------------------------------
 * Command line options
 * ------------------------------------------------------------------------ */

/*
 * parse_cmdline: copy the command line (up to 4095 bytes) into cmdline_buf,
 * then hand every token to parse_token. Uses %r15. Preserves all.
 */
    .type parse_cmdline, @function
parse_cmdline:
    push    %rax
    push    %rcx
    push    %rdx
    push    %rsi
    push    %rdi
    push    %r12
    mov     BP_EXT_CMD_LINE_PTR(%r15), %eax
    shl     $32, %rax
    mov     BP_CMD_LINE_PTR(%r15), %ecx
    or      %rcx, %rax
    lea     cmdline_buf(%rip), %rdi
    jz      2f
    mov     $CMDLINE_PARSE_MAX, %ecx
1:  movzbl  (%rax), %edx
    test    %dl, %dl
    jz      2f
    mov     %dl, (%rdi)
    inc     %rax
    inc     %rdi
    dec     %ecx
    jnz     1b
2:  movb    $0, (%rdi)
    lea     cmdline_buf(%rip), %rsi
.Lpc_skip:                                      /* skip separators */
    movzbl  (%rsi), %eax
    test    %al, %al
    jz      .Lpc_end
    cmp     $' ', %al
    ja      .Lpc_token
    inc     %rsi
    jmp     .Lpc_skip
.Lpc_token:
    mov     %rsi, %r12
    call    parse_token
    mov     %r12, %rsi
3:  movzbl  (%rsi), %eax                        /* skip to the token's end */
    cmp     $' ', %al
    jbe     .Lpc_skip
    inc     %rsi
    jmp     3b
.Lpc_end:
    pop     %r12
    pop     %rdi
    pop     %rsi
    pop     %rdx
    pop     %rcx
    pop     %rax
    ret
    .size parse_cmdline, . - parse_cmdline

/*
 * parse_token: the token at %r12 (ends at a byte <= 0x20). If it starts
 * with a known key, call its handler with %rsi = value; a handler returns
 * CF = 1 if the value is bad, and the token is then reported. Preserves all.
 */
    .type parse_token, @function
parse_token:
    push    %rax
    push    %rbx
    push    %rsi
    push    %rdi
    lea     opt_table(%rip), %rbx
1:  mov     (%rbx), %rdi
    test    %rdi, %rdi
    jz      .Lpt_done                           /* not ours: ignore */
    mov     %r12, %rsi
    call    match_prefix
    je      2f
    add     $16, %rbx
    jmp     1b
2:  call    *8(%rbx)
    jnc     .Lpt_done
    LOCK_OUT
    PUTS(str_bad_option)
    mov     %r12, %rsi
3:  movzbl  (%rsi), %eax
    cmp     $' ', %al
    jbe     4f
    call    putc
    inc     %rsi
    jmp     3b
4:  PUTS(str_quote_nl)
    UNLOCK_OUT
.Lpt_done:
    pop     %rdi
    pop     %rsi
    pop     %rbx
    pop     %rax
    ret
    .size parse_token, . - parse_token

/*
 * match_prefix: is the NUL-terminated key at %rdi a prefix of the text at
 * %rsi? ZF = 1 and %rsi past the key if so. Clobbers %rax, %rdi, %rsi.
 */
    .type match_prefix, @function
match_prefix:
1:  movzbl  (%rdi), %eax
    test    %al, %al
    jz      2f                                  /* ZF = 1: match */
    cmp     (%rsi), %al
    jne     2f                                  /* ZF = 0 */
    inc     %rdi
    inc     %rsi
    jmp     1b
2:  ret
    .size match_prefix, . - match_prefix

/*
 * parse_num: decimal or 0x/0X-hex number at %rsi -> %rax, %rsi past it.
 * CF = 1 if there are no digits or the value exceeds 32 bits. Preserves
 * the other registers.
 */
    .type parse_num, @function
parse_num:
    push    %rcx
    push    %rdx
    xor     %eax, %eax
    xor     %ecx, %ecx                          /* digits seen */
    cmpb    $'0', (%rsi)
    jne     .Lpn_dec
    movzbl  1(%rsi), %edx
    or      $0x20, %edx
    cmp     $'x', %edx
    jne     .Lpn_dec
    add     $2, %rsi
.Lpn_hex:
    movzbl  (%rsi), %edx
    sub     $'0', %edx
    cmp     $10, %edx
    jb      1f
    movzbl  (%rsi), %edx
    or      $0x20, %edx
    sub     $'a', %edx
    cmp     $6, %edx
    jae     .Lpn_end
    add     $10, %edx
1:  shl     $4, %rax
    or      %rdx, %rax
    inc     %ecx
    inc     %rsi
    mov     %rax, %rdx
    shr     $32, %rdx
    jnz     .Lpn_bad
    jmp     .Lpn_hex
.Lpn_dec:
    movzbl  (%rsi), %edx
    sub     $'0', %edx
    cmp     $10, %edx
    jae     .Lpn_end
    imul    $10, %rax, %rax
    add     %rdx, %rax
    inc     %ecx
    inc     %rsi
    mov     %rax, %rdx
    shr     $32, %rdx
    jnz     .Lpn_bad
    jmp     .Lpn_dec
.Lpn_end:
    test    %ecx, %ecx
    jz      .Lpn_bad
    pop     %rdx
    pop     %rcx
    clc
    ret
.Lpn_bad:
    pop     %rdx
    pop     %rcx
    stc
    ret
    .size parse_num, . - parse_num

/* parse_end: CF = 0 iff the byte at %rsi ends a token (<= 0x20). */
    .type parse_end, @function
parse_end:
    cmpb    $' ', (%rsi)
    ja      1f
    clc
    ret
1:  stc
    ret
    .size parse_end, . - parse_end

/*
 * check_mapped: CF = 0 iff [%rax, %rax + %rdx) lies in 0..1 GiB or
 * 3..4 GiB (%rax < 2^32, 0 < %rdx <= 4096). Preserves all.
 */
    .type check_mapped, @function
check_mapped:
    push    %rcx
    push    %rdx
    add     %rax, %rdx                          /* end */
    mov     $LOW_MAP_END, %ecx
    cmp     %rcx, %rdx
    jbe     1f
    mov     $HIGH_BASE, %ecx
    cmp     %rcx, %rax
    jb      2f
    mov     $1, %ecx
    shl     $32, %rcx
    cmp     %rcx, %rdx
    ja      2f
1:  pop     %rdx
    pop     %rcx
    clc
    ret
2:  pop     %rdx
    pop     %rcx
    stc
    ret
    .size check_mapped, . - check_mapped

/*
 * Option handlers: %rsi = value text. CF = 1 on a bad value (nothing is
 * changed then). May clobber %rax, %rsi, %rdi.
 */
opt_irqlines:
    call    parse_num
    jc      9f
    call    parse_end
    jc      9f
    cmp     $0xffff, %eax
    ja      9f
    mov     %eax, irqlines_port(%rip)
    orl     $OPT_IRQLINES, opt_flags(%rip)
    clc
    ret
9:  stc
    ret

opt_gsi:
    push    %rcx
    lea     gsi_tmp(%rip), %rdi
    xor     %ecx, %ecx
1:  call    parse_num
    jc      9f
    cmp     $0xffff, %eax
    ja      9f
    cmp     $GSI_LIST_MAX, %ecx
    jae     9f
    mov     %eax, (%rdi,%rcx,4)
    inc     %ecx
    cmpb    $',', (%rsi)
    jne     2f
    inc     %rsi
    jmp     1b
2:  call    parse_end
    jc      9f
    mov     %ecx, gsi_count(%rip)
    lea     gsi_list(%rip), %rsi
3:  dec     %ecx                                /* commit: copy the list */
    mov     (%rdi,%rcx,4), %eax
    mov     %eax, (%rsi,%rcx,4)
    test    %ecx, %ecx
    jnz     3b
    orl     $OPT_GSI, opt_flags(%rip)
    pop     %rcx
    clc
    ret
9:  pop     %rcx
    stc
    ret

opt_level:
    call    parse_num
    jc      9f
    call    parse_end
    jc      9f
    cmp     $IOAPIC_PINS, %eax
    jae     9f
    mov     %eax, level_gsi(%rip)
    orl     $OPT_LEVEL, opt_flags(%rip)
    clc
    ret
9:  stc
    ret

opt_recorder:
    push    %rdx
    call    parse_num
    jc      9f
    call    parse_end
    jc      9f
    mov     $4096, %edx
    call    check_mapped
    jc      9f
    mov     %eax, recorder_addr(%rip)
    orl     $OPT_RECORDER, opt_flags(%rip)
    pop     %rdx
    clc
    ret
9:  pop     %rdx
    stc
    ret

opt_records:
    call    parse_num
    jc      9f
    call    parse_end
    jc      9f
    mov     %eax, records_n(%rip)
    orl     $OPT_RECORDS, opt_flags(%rip)
    clc
    ret
9:  stc
    ret

opt_pio:
    call    parse_num
    jc      9f
    call    parse_end
    jc      9f
    cmp     $0xffff, %eax
    ja      9f
    mov     %eax, pio_port(%rip)
    orl     $OPT_PIO, opt_flags(%rip)
    clc
    ret
9:  stc
    ret

opt_pio_records:
    call    parse_num
    jc      9f
    call    parse_end
    jc      9f
    mov     %eax, pio_n(%rip)
    orl     $OPT_PIO_RECORDS, opt_flags(%rip)
    clc
    ret
9:  stc
    ret

opt_doorbell:
    push    %rdx
    call    parse_num
    jc      9f
    cmpb    $',', (%rsi)
    jne     9f
    inc     %rsi
    mov     %rax, %rdi                          /* address */
    call    parse_num                           /* value */
    jc      9f
    call    parse_end
    jc      9f
    xchg    %rax, %rdi
    mov     $4, %edx
    call    check_mapped
    jc      9f
    mov     %eax, doorbell_addr(%rip)
    mov     %edi, doorbell_val(%rip)
    orl     $OPT_DOORBELL, opt_flags(%rip)
    pop     %rdx
    clc
    ret
9:  pop     %rdx
    stc
    ret

/* ------------------------------------------------------------------------
 * MP table and SMP bring-up
 * ------------------------------------------------------------------------ */

/*
 * mp_find: look for "_MP_" at 16-byte steps in [%esi, %ecx). CF = 0 and
 * %rsi = the floating pointer if found. Preserves the other registers.
 */
    .type mp_find, @function
mp_find:
1:  cmpl    $MP_FP_SIG, (%rsi)
    je      2f
    add     $16, %esi
    cmp     %ecx, %esi
    jb      1b
    stc
    ret
2:  clc
    ret
    .size mp_find, . - mp_find

/*
 * mp_scan: fill cpu_count / cpu_ids (enabled processors, table order) and
 * ioapic_mp from the MP table, or 1 CPU (the BSP) if there is none, and
 * print the mptable-missing and cpus lines. Preserves all.
 */
    .type mp_scan, @function
mp_scan:
    push    %rax
    push    %rbx
    push    %rcx
    push    %rdx
    push    %rsi
    push    %rdi
    push    %r8
    mov     $0x9fc00, %esi
    mov     $0xa0000, %ecx
    call    mp_find
    jnc     1f
    mov     $0xf0000, %esi
    mov     $0x100000, %ecx
    call    mp_find
    jc      .Lmp_missing
1:  mov     4(%rsi), %ebx                       /* config table address */
    test    %ebx, %ebx
    jz      .Lmp_missing
    cmp     $(LOW_MAP_END - MP_CT_SPAN_MAX), %ebx
    jae     .Lmp_missing
    cmpl    $MP_CT_SIG, (%rbx)
    jne     .Lmp_missing
    movzwl  MP_CT_ENTRY_COUNT(%rbx), %ecx
    lea     MP_CT_SPAN_MAX(%rbx), %r8           /* parse no further */
    lea     MP_CT_HEADER_SIZE(%rbx), %rsi
    lea     cpu_ids(%rip), %rdi
    xor     %edx, %edx                          /* enabled processors */
.Lmp_entry:
    test    %ecx, %ecx
    jz      .Lmp_done
    cmp     %r8, %rsi
    jae     .Lmp_done
    movzbl  (%rsi), %eax
    test    %al, %al
    jz      .Lmp_cpu
    cmp     $2, %al
    je      .Lmp_ioapic
    cmp     $4, %al
    ja      .Lmp_done                           /* unknown type: size unknown */
    add     $8, %rsi
    dec     %ecx
    jmp     .Lmp_entry
.Lmp_cpu:
    testb   $1, 3(%rsi)                         /* enabled? */
    jz      2f
    cmp     $MAX_CPUS, %edx
    jae     2f
    movzbl  1(%rsi), %eax
    mov     %al, (%rdi,%rdx)
    inc     %edx
2:  add     $20, %rsi
    dec     %ecx
    jmp     .Lmp_entry
.Lmp_ioapic:
    cmpl    $0, ioapic_mp(%rip)                 /* the first one counts */
    jne     3f
    mov     4(%rsi), %eax
    mov     %eax, ioapic_mp(%rip)
3:  add     $8, %rsi
    dec     %ecx
    jmp     .Lmp_entry
.Lmp_missing:
    LOCK_OUT
    PUTS(str_mp_missing)
    UNLOCK_OUT
    movl    $0, ioapic_mp(%rip)
    mov     bsp_id(%rip), %eax
    mov     %al, cpu_ids(%rip)
    mov     $1, %edx
.Lmp_done:
    mov     %edx, cpu_count(%rip)
    LOCK_OUT
    PUTS(str_cpus)
    mov     %edx, %eax
    call    put_dec
    PUTS(str_ioapic_eq)
    mov     ioapic_mp(%rip), %eax
    mov     $8, %ecx
    call    put_hexn
    call    newline
    UNLOCK_OUT
    pop     %r8
    pop     %rdi
    pop     %rsi
    pop     %rdx
    pop     %rcx
    pop     %rbx
    pop     %rax
    ret
    .size mp_scan, . - mp_scan

/* delay: %ecx (> 0) iterations of `pause`. Clobbers %ecx. */
    .type delay, @function
delay:
1:  pause
    dec     %ecx
    jnz     1b
    ret
    .size delay, . - delay

/* icr_wait: poll ICR delivery status (bounded). %rdi = LAPIC. Preserves all. */
    .type icr_wait, @function
icr_wait:
    push    %rcx
    mov     $ICR_WAIT, %ecx
1:  testl   $ICR_BUSY, LAPIC_ICR_LO(%rdi)
    jz      2f
    pause
    dec     %ecx
    jnz     1b
2:  pop     %rcx
    ret
    .size icr_wait, . - icr_wait

/* start_ap: INIT-SIPI-SIPI to APIC ID %eax. Preserves all. */
    .type start_ap, @function
start_ap:
    push    %rax
    push    %rcx
    push    %rdi
    push    %r8
    mov     $LAPIC_BASE, %edi
    mov     %eax, %r8d
    shl     $24, %r8d                           /* ICR destination field */
    call    icr_wait
    mov     %r8d, LAPIC_ICR_HI(%rdi)
    movl    $ICR_INIT, LAPIC_ICR_LO(%rdi)
    call    icr_wait
    mov     $INIT_DELAY, %ecx
    call    delay
    mov     $2, %eax
1:  call    icr_wait
    mov     %r8d, LAPIC_ICR_HI(%rdi)
    movl    $(ICR_SIPI | SIPI_VECTOR), LAPIC_ICR_LO(%rdi)
    mov     $SIPI_DELAY, %ecx
    call    delay
    dec     %eax
    jnz     1b
    call    icr_wait
    pop     %r8
    pop     %rdi
    pop     %rcx
    pop     %rax
    ret
    .size start_ap, . - start_ap

/*
 * print_cpu_online: print "probe: cpu apic=<%ebx> online" under the output
 * lock. Preserves all.
 */
    .type print_cpu_online, @function
print_cpu_online:
    push    %rax
    LOCK_OUT
    PUTS(str_cpu_apic)
    mov     %ebx, %eax
    call    put_dec
    PUTS(str_online)
    UNLOCK_OUT
    pop     %rax
    ret
    .size print_cpu_online, . - print_cpu_online

/*
 * smp_boot: report the BSP online, copy the trampoline to 0x10000, start
 * every other enabled CPU (APIC ID < 16, not yet online) one at a time and
 * wait (bounded) for each; print the online count. Preserves all.
 */
    .type smp_boot, @function
smp_boot:
    push    %rax
    push    %rbx
    push    %rcx
    push    %rdx
    push    %rsi
    push    %rdi
    push    %r12
    push    %r13
    mov     bsp_id(%rip), %ebx
    call    print_cpu_online
    lea     online_flags(%rip), %rax
    movb    $1, (%rax,%rbx)
    movl    $1, online_count(%rip)

    lea     tramp_start(%rip), %rsi             /* trampoline -> 0x10000 */
    mov     $TRAMP_BASE, %edi
    mov     $((tramp_end - tramp_start + 7) / 8), %ecx
1:  mov     (%rsi), %rax
    mov     %rax, (%rdi)
    add     $8, %rsi
    add     $8, %rdi
    dec     %ecx
    jnz     1b

    xor     %r12d, %r12d                        /* index into cpu_ids */
.Lsmp_next:
    cmp     cpu_count(%rip), %r12d
    jae     .Lsmp_done
    lea     cpu_ids(%rip), %rax
    movzbl  (%rax,%r12), %eax
    inc     %r12d
    cmp     $MAX_AP_APIC_ID, %eax
    jae     .Lsmp_next
    lea     online_flags(%rip), %rdx
    cmpb    $0, (%rdx,%rax)                     /* the BSP, or a duplicate */
    jne     .Lsmp_next
    mov     online_count(%rip), %r13d
    call    start_ap
    mov     $AP_WAIT, %ecx
2:  cmp     online_count(%rip), %r13d
    jne     .Lsmp_next
    pause
    dec     %ecx
    jnz     2b
    jmp     .Lsmp_next
.Lsmp_done:
    LOCK_OUT
    PUTS(str_smp_online)
    mov     online_count(%rip), %eax
    call    put_dec
    call    newline
    UNLOCK_OUT
    pop     %r13
    pop     %r12
    pop     %rdi
    pop     %rsi
    pop     %rdx
    pop     %rcx
    pop     %rbx
    pop     %rax
    ret
    .size smp_boot, . - smp_boot

/*
 * ap_entry64: where the trampoline lands, in 64-bit mode with the
 * trampoline's GDT (0x08 = 64-bit code, 0x10 = data), CR3 = 0x9000,
 * interrupts off, no stack yet.
 */
    .type ap_entry64, @function
ap_entry64:
    mov     $LAPIC_BASE, %edi
    mov     LAPIC_ID(%rdi), %ebx
    shr     $24, %ebx
    cmp     $MAX_AP_APIC_ID, %ebx               /* no stack for it */
    jae     .Lap_dead
    lea     1(%rbx), %eax
    shl     $12, %eax                           /* (id + 1) * AP_STACK_SIZE */
    lea     ap_stacks(%rip), %rsp
    add     %rax, %rsp
    xor     %ebp, %ebp
    lidt    idtr(%rip)
    call    lapic_enable
    call    print_cpu_online
    lea     online_flags(%rip), %rax
    movb    $1, (%rax,%rbx)
    lock incl online_count(%rip)
    sti
1:  hlt
    jmp     1b
.Lap_dead:
    cli
    hlt
    jmp     .Lap_dead
    .size ap_entry64, . - ap_entry64

/* ------------------------------------------------------------------------
 * IOAPIC
 * ------------------------------------------------------------------------ */

/*
 * ioapic_setup: program and report all 24 redirection entries (high dword
 * first). Destinations cycle through the online CPUs in MP-table order.
 * Preserves all.
 */
    .type ioapic_setup, @function
ioapic_setup:
    push    %rax
    push    %rbx
    push    %rcx
    push    %rdx
    push    %rsi
    push    %rdi
    push    %r8
    push    %r9
    push    %r10
    /* online APIC IDs, MP-table order -> online_list, count in %r9d */
    lea     cpu_ids(%rip), %rsi
    lea     online_flags(%rip), %rdx
    lea     online_list(%rip), %rdi
    xor     %ecx, %ecx
    xor     %r9d, %r9d
1:  cmp     cpu_count(%rip), %ecx
    jae     2f
    movzbl  (%rsi,%rcx), %eax
    inc     %ecx
    cmpb    $0, (%rdx,%rax)
    je      1b
    mov     %al, (%rdi,%r9)
    inc     %r9d
    jmp     1b
2:  test    %r9d, %r9d
    jnz     3f
    mov     bsp_id(%rip), %eax                  /* BSP not in the table */
    mov     %al, (%rdi)
    inc     %r9d
3:  mov     ioapic_mp(%rip), %eax               /* base, if usable */
    test    %eax, %eax
    jz      4f
    mov     $IOAPIC_IOWIN + 4, %edx
    call    check_mapped
    jnc     5f
4:  mov     $IOAPIC_DEFAULT, %eax
5:  mov     %eax, %r10d                         /* %r10 = IOAPIC */
    xor     %r8d, %r8d                          /* pin */
.Lio_pin:
    mov     %r8d, %eax
    xor     %edx, %edx
    div     %r9d
    lea     online_list(%rip), %rdi
    movzbl  (%rdi,%rdx), %ebx                   /* destination APIC ID */
    lea     IRQ_VECTOR_BASE(%r8), %esi          /* low dword */
    testl   $OPT_LEVEL, opt_flags(%rip)
    jz      6f
    cmp     level_gsi(%rip), %r8d
    jne     6f
    or      $REDIR_LEVEL, %esi
6:  lea     (IOAPIC_REDTBL + 1)(,%r8,2), %eax   /* high dword first */
    mov     %eax, (%r10)
    mov     %ebx, %eax
    shl     $24, %eax
    mov     %eax, IOAPIC_IOWIN(%r10)
    lea     IOAPIC_REDTBL(,%r8,2), %eax
    mov     %eax, (%r10)
    mov     %esi, IOAPIC_IOWIN(%r10)
    LOCK_OUT
    PUTS(str_pin)
    mov     %r8d, %eax
    call    put_dec
    PUTS(str_vector)
    movzbl  %sil, %eax
    mov     $2, %ecx
    call    put_hexn
    PUTS(str_dest)
    mov     %ebx, %eax
    call    put_dec
    test    $REDIR_LEVEL, %esi
    jnz     7f
    PUTS(str_trig_edge)
    jmp     8f
7:  PUTS(str_trig_level)
8:  UNLOCK_OUT
    inc     %r8d
    cmp     $IOAPIC_PINS, %r8d
    jb      .Lio_pin
    pop     %r10
    pop     %r9
    pop     %r8
    pop     %rdi
    pop     %rsi
    pop     %rdx
    pop     %rcx
    pop     %rbx
    pop     %rax
    ret
    .size ioapic_setup, . - ioapic_setup

/* ------------------------------------------------------------------------
 * Test windows (BSP, interrupts on)
 * ------------------------------------------------------------------------ */

/* log_lock_take: spin on log_lock (caller has interrupts off). Preserves all. */
    .type log_lock_take, @function
log_lock_take:
    push    %rax
1:  mov     $1, %eax
    lock xchg %eax, log_lock(%rip)
    test    %eax, %eax
    jz      2f
    pause
    jmp     1b
2:  pop     %rax
    ret
    .size log_lock_take, . - log_lock_take

/*
 * window_open: clear the log, set level_vector = %eax (0 = none) and
 * level_port = %edx, reset level_count, and open the window. Preserves all.
 */
    .type window_open, @function
window_open:
    cli
    call    log_lock_take
    movl    $0, log_count(%rip)
    movl    $0, level_count(%rip)
    mov     %eax, level_vector(%rip)
    mov     %edx, level_port(%rip)
    movl    $1, window_is_open(%rip)
    movl    $0, log_lock(%rip)
    sti
    ret
    .size window_open, . - window_open

/*
 * window_close: close the window; %ecx = records logged in it (entries
 * below it no longer change), %eax = level count. Later interrupts are
 * strays.
 */
    .type window_close, @function
window_close:
    cli
    call    log_lock_take
    movl    $0, window_is_open(%rip)
    movl    $0, level_vector(%rip)
    mov     log_count(%rip), %ecx
    mov     level_count(%rip), %eax
    movl    $0, log_lock(%rip)
    sti
    ret
    .size window_close, . - window_close

/*
 * window_wait: wait up to GSI_WAIT iterations, but no more than GSI_TAIL
 * after the first record arrived. Preserves all.
 */
    .type window_wait, @function
window_wait:
    push    %rcx
    mov     $GSI_WAIT, %ecx
1:  pause
    cmpl    $0, log_count(%rip)
    je      2f
    cmp     $GSI_TAIL, %ecx
    jbe     2f
    mov     $GSI_TAIL, %ecx
2:  dec     %ecx
    jnz     1b
    pop     %rcx
    ret
    .size window_wait, . - window_wait

/*
 * print_records: for each of the %ecx log records print
 * "<prefix %rsi>vector=0x<vv> apic=<id>"; if there are none print
 * "<prefix %rdi>missing". The prefix printers are called with the lock
 * held. Preserves all.
 *   %rsi = routine printing the prefix of a record line
 *   %rdi = routine printing the prefix of the missing line
 */
    .type print_records, @function
print_records:
    push    %rax
    push    %rbx
    push    %rcx
    push    %rdx
    test    %ecx, %ecx
    jnz     1f
    LOCK_OUT
    call    *%rdi
    PUTS(str_missing)
    UNLOCK_OUT
    jmp     3f
1:  lea     log_buf(%rip), %rbx
    mov     %ecx, %edx
2:  LOCK_OUT
    call    *%rsi
    PUTS(str_vector_eq)
    movzbl  (%rbx), %eax
    mov     $2, %ecx
    call    put_hexn
    PUTS(str_apic)
    movzbl  1(%rbx), %eax
    call    put_dec
    call    newline
    UNLOCK_OUT
    add     $2, %rbx
    dec     %edx
    jnz     2b
3:  pop     %rdx
    pop     %rcx
    pop     %rbx
    pop     %rax
    ret
    .size print_records, . - print_records

/* Prefix printers for print_records (%r12d = the current GSI). */
gsi_prefix:
    push    %rax
    PUTS(str_gsi)
    mov     %r12d, %eax
    call    put_dec
    mov     $' ', %eax
    call    putc
    pop     %rax
    ret
doorbell_prefix:
    PUTS(str_doorbell)
    ret

/* test_gsi: pulse each probe.gsi GSI and report what arrived. */
    .type test_gsi, @function
test_gsi:
    push    %rax
    push    %rcx
    push    %rdx
    push    %rsi
    push    %rdi
    push    %r12
    push    %r13
    mov     opt_flags(%rip), %eax
    and     $(OPT_IRQLINES | OPT_GSI), %eax
    cmp     $(OPT_IRQLINES | OPT_GSI), %eax
    jne     9f
    xor     %r13d, %r13d                        /* list index */
1:  lea     gsi_list(%rip), %rax
    mov     (%rax,%r13,4), %r12d
    xor     %eax, %eax
    xor     %edx, %edx
    call    window_open
    mov     irqlines_port(%rip), %edx
    add     %r12d, %edx                         /* port wraps at 16 bits */
    mov     $1, %eax
    out     %al, %dx                            /* rising edge */
    xor     %eax, %eax
    out     %al, %dx                            /* line low again */
    call    window_wait
    call    window_close
    lea     gsi_prefix(%rip), %rsi
    lea     gsi_prefix(%rip), %rdi
    call    print_records
    inc     %r13d
    cmp     gsi_count(%rip), %r13d
    jb      1b
9:  pop     %r13
    pop     %r12
    pop     %rdi
    pop     %rsi
    pop     %rdx
    pop     %rcx
    pop     %rax
    ret
    .size test_gsi, . - test_gsi

/*
 * test_level: raise the probe.level line and leave it high; the handler
 * EOIs the first delivery (so the line re-fires) and lowers the line before
 * EOIing the second. Report the number of deliveries.
 */
    .type test_level, @function
test_level:
    push    %rax
    push    %rcx
    push    %rdx
    mov     opt_flags(%rip), %eax
    and     $(OPT_IRQLINES | OPT_LEVEL), %eax
    cmp     $(OPT_IRQLINES | OPT_LEVEL), %eax
    jne     9f
    mov     irqlines_port(%rip), %edx
    add     level_gsi(%rip), %edx
    and     $0xffff, %edx
    mov     level_gsi(%rip), %eax
    add     $IRQ_VECTOR_BASE, %eax
    call    window_open
    mov     $1, %eax
    out     %al, %dx                            /* line high, and it stays */
    mov     $LEVEL_WAIT, %ecx
1:  pause
    cmpl    $2, level_count(%rip)
    jae     2f
    dec     %ecx
    jnz     1b
2:  mov     $LEVEL_TAIL, %ecx
    call    delay
    call    window_close
    mov     %eax, %ecx                          /* fired */
    xor     %eax, %eax
    out     %al, %dx                            /* make sure it is low */
    LOCK_OUT
    PUTS(str_level)
    mov     level_gsi(%rip), %eax
    call    put_dec
    PUTS(str_fired)
    mov     %ecx, %eax
    call    put_dec
    call    newline
    UNLOCK_OUT
9:  pop     %rdx
    pop     %rcx
    pop     %rax
    ret
    .size test_level, . - test_level

/* test_recorder: write i to recorder + (4 * i) % 4096 for i < N (movl). */
    .type test_recorder, @function
test_recorder:
    push    %rax
    push    %rcx
    push    %rdi
    push    %r8
    mov     opt_flags(%rip), %eax
    and     $(OPT_RECORDER | OPT_RECORDS), %eax
    cmp     $(OPT_RECORDER | OPT_RECORDS), %eax
    jne     9f
    mov     recorder_addr(%rip), %edi
    mov     records_n(%rip), %r8d
    xor     %ecx, %ecx
    test    %r8d, %r8d
    jz      2f
1:  lea     (,%rcx,4), %eax
    and     $0xfff, %eax
    movl    %ecx, (%rdi,%rax)
    inc     %ecx
    cmp     %r8d, %ecx
    jb      1b
2:  LOCK_OUT
    PUTS(str_recorder)
    mov     %r8d, %eax
    call    put_dec
    call    newline
    UNLOCK_OUT
9:  pop     %r8
    pop     %rdi
    pop     %rcx
    pop     %rax
    ret
    .size test_recorder, . - test_recorder

/* test_pio: outb the low byte of i to the port for i < N. */
    .type test_pio, @function
test_pio:
    push    %rax
    push    %rcx
    push    %rdx
    push    %r8
    mov     opt_flags(%rip), %eax
    and     $(OPT_PIO | OPT_PIO_RECORDS), %eax
    cmp     $(OPT_PIO | OPT_PIO_RECORDS), %eax
    jne     9f
    mov     pio_port(%rip), %edx
    mov     pio_n(%rip), %r8d
    xor     %ecx, %ecx
    test    %r8d, %r8d
    jz      2f
1:  mov     %ecx, %eax
    out     %al, %dx
    inc     %ecx
    cmp     %r8d, %ecx
    jb      1b
2:  LOCK_OUT
    PUTS(str_pio)
    mov     %r8d, %eax
    call    put_dec
    call    newline
    UNLOCK_OUT
9:  pop     %r8
    pop     %rdx
    pop     %rcx
    pop     %rax
    ret
    .size test_pio, . - test_pio

/* test_doorbell: one 32-bit MMIO write, then report what interrupt came. */
    .type test_doorbell, @function
test_doorbell:
    push    %rax
    push    %rcx
    push    %rdx
    push    %rsi
    push    %rdi
    testl   $OPT_DOORBELL, opt_flags(%rip)
    jz      9f
    xor     %eax, %eax
    xor     %edx, %edx
    call    window_open
    mov     doorbell_addr(%rip), %edi
    mov     doorbell_val(%rip), %eax
    movl    %eax, (%rdi)
    call    window_wait
    call    window_close
    lea     doorbell_prefix(%rip), %rsi
    lea     doorbell_prefix(%rip), %rdi
    call    print_records
9:  pop     %rdi
    pop     %rsi
    pop     %rdx
    pop     %rcx
    pop     %rax
    ret
    .size test_doorbell, . - test_doorbell

/* ------------------------------------------------------------------------
 * Interrupt and exception entry
 * ------------------------------------------------------------------------ */

/*
 * 256 stubs, 16 bytes apart (gate v -> idt_stubs + 16 * v):
 *   0..31   exceptions: push a 0 error code unless the CPU pushed one,
 *           push the vector, jump to exc_common
 *   32..254 push the vector, jump to irq_common
 *   255     spurious: iretq, no EOI
 */
    .balign 16
idt_stubs:
    .set vec, 0
    .rept 256
    .balign 16
    .if vec < 32
    .if (vec == 8) || (vec == 10) || (vec == 11) || (vec == 12) || (vec == 13) || (vec == 14) || (vec == 17) || (vec == 21) || (vec == 29) || (vec == 30)
    .else
    pushq   $0
    .endif
    pushq   $vec
    jmp     exc_common
    .elseif vec < 255
    pushq   $vec
    jmp     irq_common
    .else
    iretq
    .endif
    .set vec, vec + 1
    .endr
    .balign 16
idt_stubs_end:

/*
 * irq_common: frame = vector, rip, cs, rflags, rsp, ss. Logs (vector, own
 * APIC ID), counts a stray if no window is open, does the level-test logic,
 * EOIs, returns.
 */
    .type irq_common, @function
irq_common:
    push    %rax
    push    %rcx
    push    %rdx
    push    %rbx
    push    %rbp
    push    %rsi
    push    %rdi
    push    %r8
    push    %r9
    push    %r10
    push    %r11
    push    %r12
    push    %r13
    push    %r14
    push    %r15
    mov     15*8(%rsp), %esi                    /* vector */
    mov     $LAPIC_BASE, %edi
    mov     LAPIC_ID(%rdi), %ebx
    shr     $24, %ebx
    call    log_lock_take
    mov     log_count(%rip), %ecx
    cmp     $LOG_MAX, %ecx
    jae     1f
    lea     log_buf(%rip), %rax
    mov     %sil, (%rax,%rcx,2)
    mov     %bl, 1(%rax,%rcx,2)
    inc     %ecx
    mov     %ecx, log_count(%rip)
1:  cmpl    $0, window_is_open(%rip)
    jne     2f
    incl    stray_count(%rip)
2:  cmp     level_vector(%rip), %esi            /* 0 when no level test */
    jne     3f
    incl    level_count(%rip)
    cmpl    $2, level_count(%rip)
    jne     3f
    mov     level_port(%rip), %edx              /* 2nd: lower, then EOI */
    xor     %eax, %eax
    out     %al, %dx
3:  movl    $0, log_lock(%rip)
    movl    $0, LAPIC_EOI(%rdi)
    pop     %r15
    pop     %r14
    pop     %r13
    pop     %r12
    pop     %r11
    pop     %r10
    pop     %r9
    pop     %r8
    pop     %rdi
    pop     %rsi
    pop     %rbp
    pop     %rbx
    pop     %rdx
    pop     %rcx
    pop     %rax
    add     $8, %rsp
    iretq
    .size irq_common, . - irq_common

/*
 * exc_common: frame = vector, error code, rip, ... Print the exception
 * (taking the output lock if it can within EXC_LOCK_TRIES, so a fault
 * inside a locked section still reports) and exit with 0x7f.
 */
    .type exc_common, @function
exc_common:
    mov     (%rsp), %r12                        /* vector */
    mov     16(%rsp), %r13                      /* rip */
    mov     $LAPIC_BASE, %edi
    mov     LAPIC_ID(%rdi), %ebx
    shr     $24, %ebx
    mov     $EXC_LOCK_TRIES, %ecx
1:  mov     $1, %eax
    lock xchg %eax, out_lock_word(%rip)
    test    %eax, %eax
    jz      2f
    pause
    dec     %ecx
    jnz     1b
2:  PUTS(str_exception)
    mov     %r12, %rax
    call    put_dec
    PUTS(str_apic)
    mov     %rbx, %rax
    call    put_dec
    PUTS(str_rip)
    mov     %r13, %rax
    call    put_hex64
    call    newline
    mov     $DEBUG_EXIT_PORT, %edx
    mov     $EXIT_EXCEPTION, %eax
    out     %eax, %dx
3:  cli
    hlt
    jmp     3b
    .size exc_common, . - exc_common

/* ------------------------------------------------------------------------
 * Output
 * ------------------------------------------------------------------------ */

/*
 * out_lock: take the output spinlock with interrupts off (so an interrupt
 * handler can never spin on a lock its own CPU holds); the caller's
 * interrupt flag is kept for out_unlock. While waiting, interrupts are as
 * the caller had them. Preserves all.
 */
    .type out_lock, @function
out_lock:
    push    %rax
    push    %rcx
    pushfq
    pop     %rcx
1:  cli
    mov     $1, %eax
    lock xchg %eax, out_lock_word(%rip)
    test    %eax, %eax
    jz      3f
    test    $0x200, %ecx                        /* IF was on: allow it */
    jz      2f
    sti
2:  pause
    cmpl    $0, out_lock_word(%rip)
    jne     2b
    jmp     1b
3:  mov     %rcx, out_lock_flags(%rip)
    pop     %rcx
    pop     %rax
    ret
    .size out_lock, . - out_lock

/* out_unlock: drop the output spinlock, restore IF. Preserves all. */
    .type out_unlock, @function
out_unlock:
    push    %rax
    mov     out_lock_flags(%rip), %rax
    movl    $0, out_lock_word(%rip)
    test    $0x200, %eax
    jz      1f
    sti
1:  pop     %rax
    ret
    .size out_unlock, . - out_unlock

/*
 * putc: write the byte in %al to COM1. Polls LSR.THRE at most uart_budget
 * (UART_POLL_LIMIT) times, then writes regardless. If a poll loop ever
 * times out, uart_budget is set to 0 and later bytes are written without
 * polling, so a UART whose LSR never reports THR empty costs 1000 reads
 * once, not per byte. Preserves all registers.
 */
    .type putc, @function
putc:
    push    %rcx
    push    %rdx
    push    %rax
    mov     uart_budget(%rip), %ecx     /* poll budget; 0 = UART gave up */
    test    %ecx, %ecx
    jz      2f
    mov     $COM1_LSR, %edx
1:  in      %dx, %al
    test    $LSR_THR_EMPTY, %al
    jnz     2f
    dec     %ecx
    jnz     1b
    movl    $0, uart_budget(%rip)   /* never ready: stop polling from now on */
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
 * put_hexn: write the low %ecx (1..16) nibbles of %rax as lowercase hex
 * digits (no prefix). Preserves all registers.
 */
    .type put_hexn, @function
put_hexn:
    push    %rax
    push    %rcx
    push    %rdx
    mov     %rax, %rdx
    push    %rcx
    neg     %ecx
    add     $16, %ecx
    shl     $2, %ecx                /* 4 * (16 - n): top digit to the top */
    shl     %cl, %rdx
    pop     %rcx
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
    .size put_hexn, . - put_hexn

/* put_hex64: write %rax as exactly 16 lowercase hex digits. Preserves all. */
    .type put_hex64, @function
put_hex64:
    push    %rcx
    mov     $16, %ecx
    call    put_hexn
    pop     %rcx
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

/* ------------------------------------------------------------------------
 * AP trampoline: copied to TRAMP_BASE (0x10000) and entered by SIPI vector
 * 0x10 in real mode at 1000:0000. Kept in .rodata (it is data to the BSP,
 * and objdump -d of the 64-bit image would only mis-decode it). Everything
 * in it is addressed relative to TRAMP_BASE.
 *   real mode: DS = CS, lgdt, CR0 = PE|ET (caches on) -> 0x18 (32-bit code)
 *   32-bit:    data segments 0x10, CR4 = PAE, CR3 = 0x9000, EFER.LME,
 *              CR0 = PG|PE|ET -> far jump to 0x08 (64-bit code) ap_entry64
 * Interrupts stay off until ap_entry64 has loaded the IDT.
 * ------------------------------------------------------------------------ */
    .section .rodata, "a", @progbits
    .balign 16
tramp_start:
    .code16
    cli
    mov     %cs, %ax
    mov     %ax, %ds
    lgdtl   tramp_gdtr - tramp_start
    mov     $0x11, %eax
    mov     %eax, %cr0
    ljmpl   $0x18, $(TRAMP_BASE + tramp_32 - tramp_start)
    .code32
tramp_32:
    mov     $0x10, %eax
    mov     %ax, %ds
    mov     %ax, %es
    mov     %ax, %ss
    mov     %ax, %fs
    mov     %ax, %gs
    mov     $0x20, %eax                         /* CR4.PAE */
    mov     %eax, %cr4
    mov     $PML4_ADDR, %eax
    mov     %eax, %cr3
    mov     $EFER_MSR, %ecx
    rdmsr
    or      $EFER_LME, %eax
    wrmsr
    mov     $0x80000011, %eax                   /* PG | ET | PE */
    mov     %eax, %cr0
    ljmp    $0x08, $ap_entry64
    .balign 8
tramp_gdt:
    .quad   0
    .quad   0x00af9b000000ffff                  /* 0x08: 64-bit code */
    .quad   0x00cf93000000ffff                  /* 0x10: data */
    .quad   0x00cf9b000000ffff                  /* 0x18: 32-bit code */
tramp_gdtr:
    .word   4 * 8 - 1
    .long   TRAMP_BASE + tramp_gdt - tramp_start
    .balign 8
tramp_end:
    .code64

    .balign 8
idtr:
    .word   256 * 16 - 1
    .quad   idt

/* Known options: key (with "probe." and "="), handler. */
    .balign 8
opt_table:
    .quad   key_irqlines, opt_irqlines
    .quad   key_gsi, opt_gsi
    .quad   key_level, opt_level
    .quad   key_recorder, opt_recorder
    .quad   key_records, opt_records
    .quad   key_pio, opt_pio
    .quad   key_pio_records, opt_pio_records
    .quad   key_doorbell, opt_doorbell
    .quad   0, 0

key_irqlines:     .asciz "probe.irqlines="
key_gsi:          .asciz "probe.gsi="
key_level:        .asciz "probe.level="
key_recorder:     .asciz "probe.recorder="
key_records:      .asciz "probe.records="
key_pio:          .asciz "probe.pio="
key_pio_records:  .asciz "probe.pio_records="
key_doorbell:     .asciz "probe.doorbell="

str_banner:     .asciz "probe: berth probe v1\n"
str_cmdline:    .asciz "probe: cmdline \""
str_quote_nl:   .asciz "\"\n"
str_vendor:     .asciz "probe: vendor "
str_e820_count: .asciz "probe: e820 count="
str_e820_addr:  .asciz "probe: e820 addr=0x"
str_e820_size:  .asciz " size=0x"
str_e820_type:  .asciz " type="
str_done:       .asciz "probe: done\n"
str_bad_option: .asciz "probe: bad option \""
str_mp_missing: .asciz "probe: mptable missing\n"
str_cpus:       .asciz "probe: cpus="
str_ioapic_eq:  .asciz " ioapic=0x"
str_cpu_apic:   .asciz "probe: cpu apic="
str_online:     .asciz " online\n"
str_smp_online: .asciz "probe: smp online="
str_pin:        .asciz "probe: ioapic pin="
str_vector:     .asciz " vector=0x"
str_vector_eq:  .asciz "vector=0x"
str_dest:       .asciz " dest="
str_trig_edge:  .asciz " trigger=edge\n"
str_trig_level: .asciz " trigger=level\n"
str_gsi:        .asciz "probe: gsi="
str_missing:    .asciz "missing\n"
str_apic:       .asciz " apic="
str_level:      .asciz "probe: level gsi="
str_fired:      .asciz " fired="
str_recorder:   .asciz "probe: recorder wrote="
str_pio:        .asciz "probe: pio wrote="
str_doorbell:   .asciz "probe: doorbell "
str_stray:      .asciz "probe: interrupts stray="
str_exception:  .asciz "probe: exception vector="
str_rip:        .asciz " rip=0x"

/* ------------------------------------------------------------------------
 * .bss (never assumed zero: vars_start..vars_end is cleared at start-up,
 * the rest is written before it is read)
 * ------------------------------------------------------------------------ */
    .section .bss, "aw", @nobits
    .balign 4096
high_pd:                                        /* 3..4 GiB page directory */
    .skip   4096
idt:
    .skip   256 * 16
ap_stacks:                                      /* AP with APIC ID i: */
    .skip   MAX_AP_APIC_ID * AP_STACK_SIZE      /* top = +(i + 1) * 4 KiB */
stack_bottom:
    .skip   STACK_SIZE
stack_top:
cmdline_buf:
    .skip   CMDLINE_PARSE_MAX + 1
    .balign 8
log_buf:                                        /* (vector, apic id) bytes */
    .skip   LOG_MAX * 2

    .balign 8
vars_start:
uart_budget:    .skip 4
out_lock_word:  .skip 4
out_lock_flags: .skip 8
log_lock:       .skip 4
log_count:      .skip 4
window_is_open: .skip 4
stray_count:    .skip 4
level_vector:   .skip 4
level_count:    .skip 4
level_port:     .skip 4
bsp_id:         .skip 4
online_count:   .skip 4
cpu_count:      .skip 4
ioapic_mp:      .skip 4
opt_flags:      .skip 4
irqlines_port:  .skip 4
gsi_count:      .skip 4
level_gsi:      .skip 4
recorder_addr:  .skip 4
records_n:      .skip 4
pio_port:       .skip 4
pio_n:          .skip 4
doorbell_addr:  .skip 4
doorbell_val:   .skip 4
    .balign 8
online_flags:   .skip MAX_CPUS                  /* by APIC ID */
cpu_ids:        .skip MAX_CPUS                  /* enabled, MP-table order */
online_list:    .skip MAX_CPUS                  /* online, MP-table order */
gsi_list:       .skip GSI_LIST_MAX * 4
gsi_tmp:        .skip GSI_LIST_MAX * 4
    .balign 8
vars_end:

    .section .note.GNU-stack, "", @progbits
