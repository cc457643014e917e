/*
 * probe.S - a tiny x86-64 guest kernel for the berth micro-VMM.
 *
 * One source, three images (see guests/Makefile), identical code:
 *   probe.elf            64-bit Linux boot protocol (probe/probe.ld)
 *   probe-pvh.elf        PVH: also a XEN_ELFNOTE_PHYS32_ENTRY note -> the
 *                        32-bit entry _start32_pvh (probe/probe-pvh.ld)
 *   probe-multiboot.elf  multiboot v1: header in the first 8 KiB, entry
 *                        _start32_mb (probe/probe-multiboot.ld)
 * The 32-bit entries, their page tables and the header/note live in their
 * own sections (.text32, .data32, .multiboot, .note.Xen), which probe.ld
 * discards: probe.elf has neither note nor multiboot header, so berth's
 * format "auto" boots it as a plain ELF64.
 *
 * ENTRY CONTRACTS. Every image: ELF64, PT_LOAD segments at physical 0x100000
 * (1 MiB) with p_vaddr == p_paddr.
 *   Linux (_start, 64-bit; as Firecracker boots an ELF vmlinux):
 *   - 64-bit long mode, paging on, first 1 GiB identity mapped with 2 MiB
 *     pages (PML4 0x9000, PDPT 0xa000, PD 0xb000), CS = 0x08 (64-bit code),
 *     DS/ES/SS = 0x10 flat, interrupts off, no IDT.
 *   - %rsi = guest-physical (== virtual) address of struct boot_params
 *     (the "zero page"). Fields used:
 *         0x0c0  ext_ramdisk_image u32  (high 32 bits of initrd address)
 *         0x0c4  ext_ramdisk_size  u32  (high 32 bits of initrd size)
 *         0x0c8  ext_cmd_line_ptr  u32  (high 32 bits of command line addr)
 *         0x1e8  e820_entries      u8
 *         0x218  hdr.ramdisk_image u32  (low 32 bits of initrd address)
 *         0x21c  hdr.ramdisk_size  u32  (low 32 bits of initrd size)
 *         0x228  hdr.cmd_line_ptr  u32  (low 32 bits of command line addr)
 *         0x2d0  e820_table[]      20-byte packed entries:
 *                                  addr u64, size u64, type u32
 *   PVH (_start32_pvh) and multiboot v1 (_start32_mb), 32-bit:
 *   - 32-bit protected mode, flat segments, paging off, interrupts off.
 *   - PVH: %ebx = struct hvm_start_info: magic u32 @0, version u32 @4,
 *     nr_modules u32 @12, modlist_paddr u64 @16 (32-byte entries: paddr u64,
 *     size u64, cmdline_paddr u64, reserved u64), cmdline_paddr u64 @24,
 *     rsdp_paddr u64 @32, memmap_paddr u64 @40 and memmap_entries u32 @48
 *     (version >= 1; 24-byte entries: addr u64, size u64, type u32, u32).
 *   - multiboot: %eax = 0x2badb002 (not checked), %ebx = struct
 *     multiboot_info: flags u32 @0, mem_lower/mem_upper u32 @4/@8 (flags
 *     bit 0), cmdline u32 @16 (bit 2), mods_count/mods_addr u32 @20/@24
 *     (bit 3; 16-byte entries: mod_start, mod_end, string, reserved),
 *     mmap_length/mmap_addr u32 @44/@48 (bit 6; entries {u32 size, u64 base,
 *     u64 len, u32 type}, the next one at +size+4).
 *   - The header asks for memory info (flags bit 1) and gives the a.out
 *     kludge address fields (bit 16): the file from .text to the end of
 *     .data is the image at 0x100000, .bss follows, entry _start32_mb.
 *   - The 32-bit code loads its own GDT (0x08 64-bit code, 0x10 data),
 *     the data segments and a stack, then CR4.PAE, CR3 = its own page tables
 *     (.data32: PML4 -> PDPT -> PD identity-mapping the first 1 GiB with
 *     2 MiB pages, flags P|RW|PS), EFER.LME, CR0.PG|PE|ET, and far-jumps to
 *     start64_from32, which joins the Linux path with the protocol and the
 *     boot information pointer. It never relies on berth's tables at 0x9000.
 *   Common: the incoming %rsp is ignored; the probe switches to its own
 *   16 KiB stack in .bss immediately. Nothing relies on .bss being zeroed:
 *   every variable is cleared or written by code before it is read.
 *
 * WHAT IT DOES, in order (BSP = the CPU that enters at an entry point):
 *   1. Maps 3..4 GiB (LAPIC, IOAPIC, MMIO test zones) uncached: the PDPT
 *      that CR3's PML4[0] points at (the VMM's 0xa000 for Linux, its own
 *      for PVH and multiboot) gets entry 3 -> a page directory in .bss of
 *      512 2 MiB pages, flags P|RW|PWT|PCD|PS (0x9b); reloads CR3. Builds a
 *      256-gate IDT and loads it.
 *   2. Prints the report: banner, protocol, command line, vendor, e820
 *      (each protocol's memory map), the protocol's boot-module lines.
 *   3. Parses the command line options (see below).
 *   4. Enables the BSP's xAPIC (TPR = 0, SVR = 0x1ff), masks both 8259s,
 *      reads the Intel MP table (floating pointer "_MP_" in 0x9fc00..0xa0000
 *      then 0xf0000..0x100000 on 16-byte boundaries -> "PCMP" table), `sti`.
 *   5. SMP: copies a real-mode trampoline to 0x10000 (with the BSP's CR3
 *      patched in) and starts each other enabled CPU of the MP table (APIC
 *      ID < 16) with INIT-SIPI-SIPI (vector 0x10), one at a time, waiting up
 *      to AP_WAIT loops for each to come online. The AP goes real -> 32-bit
 *      protected (trampoline GDT) -> long mode (the BSP's page tables) ->
 *      ap_entry64, enables its LAPIC, loads the IDT, prints its line, counts
 *      itself online, then `sti; hlt`s.
 *   6. Programs the IOAPIC: pin P -> vector 0x30+P, fixed, physical,
 *      active high, edge (level for probe.level), unmasked, destination =
 *      the P mod N'th online CPU in MP-table order.
 *   7. Runs the optional tests (GSI edges, level re-fire, recorder MMIO
 *      writes, PIO writes, doorbell), prints the stray-interrupt count and
 *      `probe: done`, and exits the way probe.exit says.
 *
 * COMMAND LINE (tokens separated by bytes <= 0x20; numbers are decimal or
 * 0x-hex and must fit in 32 bits; lists are comma separated; a later token
 * overrides an earlier one; unknown tokens, including unknown probe.* ones,
 * are ignored; a known option with a malformed or out-of-range value is
 * reported with a `bad option` line and ignored):
 *     probe.irqlines=PORT        irq-lines device base port (<= 0xffff):
 *                                outb level, PORT+gsi
 *     probe.gsi=G1,G2,...        GSIs (<= 0xffff, 1..64 of them) to pulse
 *     probe.apspin=1             APs spin with interrupts off instead of halting
 *     probe.level=G              IOAPIC pin (< 24) for the level test
 *     probe.recorder=ADDR        recorder zone; [ADDR, ADDR+4096) must lie
 *     probe.records=N            in 0..1 GiB or 3..4 GiB
 *     probe.pio=PORT             port (<= 0xffff) for N byte writes
 *     probe.pio_records=N
 *     probe.doorbell=ADDR,VALUE  one 32-bit MMIO write; [ADDR, ADDR+4) must
 *                                lie in 0..1 GiB or 3..4 GiB
 *     probe.exit=debug|acpi|reset  how to end (default debug, see EXIT)
 *
 * The command line is the protocol's: cmd_line_ptr | ext_cmd_line_ptr << 32
 * (Linux), cmdline_paddr (PVH), cmdline if flags bit 2 (multiboot; else 0).
 *
 * OUTPUT (COM1, 8250 UART at I/O port 0x3f8; every line ends in a bare "\n";
 * hex is lowercase and zero padded; [..] lines are conditional):
 *     probe: berth probe v1
 *     probe: protocol <linux|pvh|multiboot>
 *     probe: cmdline "<command line bytes verbatim, at most 1023 bytes>"
 *     probe: vendor <12-char CPUID leaf 0 vendor string>
 *     probe: e820 count=<decimal count, clamped to 128>
 *     probe: e820 addr=0x<16 hex> size=0x<16 hex> type=<decimal type>
 *         (one line per memory map entry, in table order)
 *    [probe: initrd start=0x<16 hex> size=0x<16 hex>]          (Linux, if
 *         ramdisk_image | ext_ramdisk_image << 32 is non-zero)
 *    [probe: pvh rsdp=0x<16 hex> modules=<nr_modules>]          (PVH)
 *    [probe: module start=0x<16 hex> end=0x<16 hex>]            (PVH, per
 *         module: paddr, paddr + size)
 *    [probe: multiboot mem_lower=<dec> mem_upper=<dec> mods=<dec>] (multiboot;
 *         0 where the flags bit is clear)
 *    [probe: module start=0x<16 hex> end=0x<16 hex> string "<string>"]
 *         (multiboot, per module: mod_start, mod_end, the string verbatim,
 *         at most 1023 bytes, "" if its pointer is 0)
 *         (module lines: at most 128, in list order)
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
 *    [probe: poweroff pm1a_cnt=0x<4 hex>]            (probe.exit=acpi)
 *    [probe: acpi missing]                           (probe.exit=acpi)
 *    [probe: reset]                                  (probe.exit=reset)
 *     probe: done
 *   On a CPU exception (any CPU):
 *     probe: exception vector=<dec> apic=<dec> rip=0x<16 hex>
 *   and then exit with value 0x7f.
 *   If the command line pointer is 0, the cmdline line is `probe: cmdline ""`.
 *   The command line is copied verbatim up to its NUL terminator or 1023
 *   bytes, whichever comes first (options are parsed from up to 4095
 *   bytes). The e820 entries are the zero page's e820_table (Linux), the
 *   hvm_start_info memory map (PVH; none for version 0) or the multiboot
 *   mmap (entries starting before mmap_addr + mmap_length; none without
 *   flags bit 6); `count` is their number, clamped to 128. Before each byte
 *   the line status register (0x3fd) is polled for THR empty (bit 5),
 *   giving up after 1000 polls so a broken UART cannot hang us; after the
 *   first such timeout the probe stops polling altogether (on every CPU).
 *   Once APs may run, every line is printed whole under a spinlock (lock
 *   xchg) with interrupts off, so lines from different CPUs never
 *   interleave.
 *
 * EXIT (probe.exit; `probe: done` is always the last line before it):
 *   debug  write the 32-bit value 0 to I/O port 0xf4 (QEMU isa-debug-exit).
 *   acpi   find the RSDP (PVH: rsdp_paddr if it holds "RSD PTR "; else
 *          "RSD PTR " on 16-byte boundaries in 0xe0000..0xfffff), its XSDT
 *          (revision >= 2 and XsdtAddress != 0; else the RSDT), the "FACP"
 *          table in it and the FADT's PM1a_CNT_BLK (u32 @64; if 0, the
 *          address of X_PM1a_CNT_BLK @172 if it is in I/O space). Print the
 *          poweroff line and `outw` SLP_TYP 5 | SLP_EN ((5 << 10) | 1 << 13)
 *          there. Without it (every table must be in mapped memory, the port
 *          <= 0xffff) print `acpi missing` and exit via 0xf4 with 0x7e; if
 *          the VM is still running after the write, likewise 0x7e.
 *   reset  `outb 0xfe` to port 0x64 (i8042 pulse reset line); if the VM is
 *          still running, exit via 0xf4 with 0x7d.
 *   After an exception: 0x7f to port 0xf4. If execution continues after the
 *   last exit attempt, loops forever on `cli; hlt`. APs never exit; they sit
 *   in `hlt` with interrupts on.
 *
 * RESTRICTIONS (every CPL0 instruction may be emulated by the host): plain
 *   integer instructions, in/out, cpuid, rdmsr/wrmsr, lgdt/lidt, mov to CRs
 *   and segment registers, far jumps, pause, cli/sti, hlt, lock
 *   xchg/xadd/inc, and iretq (64-bit handlers only). No SSE/MMX/x87, no
 *   string instructions, no cmpxchg16b, no 32-bit iret; interrupts are only
 *   ever enabled in 64-bit mode.
 *
 * Register conventions inside the probe: %r15 = boot information pointer
 * on the BSP (boot_params, hvm_start_info or multiboot_info, by
 * boot_proto); every helper preserves all registers it does not return in
 * (flags are clobbered).
 */

#define COM1_THR            0x3f8
#define COM1_LSR            0x3fd
#define LSR_THR_EMPTY       0x20
#define UART_POLL_LIMIT     1000
#define DEBUG_EXIT_PORT     0xf4
#define EXIT_EXCEPTION      0x7f
#define EXIT_ACPI_FAILED    0x7e                /* probe.exit=acpi fallback */
#define EXIT_RESET_FAILED   0x7d                /* probe.exit=reset fallback */

/* Boot protocols (boot_proto; index into proto_names). */
#define PROTO_LINUX         0
#define PROTO_PVH           1
#define PROTO_MULTIBOOT     2

/* Linux: struct boot_params. */
#define BP_EXT_RAMDISK_IMAGE 0x0c0
#define BP_EXT_RAMDISK_SIZE 0x0c4
#define BP_EXT_CMD_LINE_PTR 0x0c8
#define BP_E820_ENTRIES     0x1e8
#define BP_RAMDISK_IMAGE    0x218
#define BP_RAMDISK_SIZE     0x21c
#define BP_CMD_LINE_PTR     0x228
#define BP_E820_TABLE       0x2d0
#define E820_ENTRY_SIZE     20
#define E820_MAX_ENTRIES    128
#define MODULES_MAX         128                 /* module lines printed */

/* PVH: struct hvm_start_info, its memory map and module list. */
#define PVH_VERSION         4
#define PVH_NR_MODULES      12
#define PVH_MODLIST_PADDR   16
#define PVH_CMDLINE_PADDR   24
#define PVH_RSDP_PADDR      32
#define PVH_MEMMAP_PADDR    40
#define PVH_MEMMAP_ENTRIES  48
#define PVH_MEMMAP_ENTRY_SIZE 24
#define PVH_MODLIST_ENTRY_SIZE 32
#define XEN_ELFNOTE_PHYS32_ENTRY 18

/* Multiboot v1: the header, struct multiboot_info, modules. */
#define MB_HEADER_MAGIC     0x1badb002
#define MB_HEADER_FLAGS     0x00010002          /* memory info | address fields */
#define MB_INFO_FLAGS       0
#define MB_INFO_MEM_LOWER   4
#define MB_INFO_MEM_UPPER   8
#define MB_INFO_CMDLINE     16
#define MB_INFO_MODS_COUNT  20
#define MB_INFO_MODS_ADDR   24
#define MB_INFO_MMAP_LENGTH 44
#define MB_INFO_MMAP_ADDR   48
#define MB_FLAG_MEMORY      0x01
#define MB_FLAG_CMDLINE     0x04
#define MB_FLAG_MODS        0x08
#define MB_FLAG_MMAP        0x40
#define MB_MOD_SIZE         16

/* ACPI power off, i8042 reset. */
#define ACPI_SCAN_START     0xe0000
#define ACPI_SCAN_END       0x100000
#define RSDP_SIG_LO         0x20445352          /* "RSD " */
#define RSDP_SIG_HI         0x20525450          /* "PTR " */
#define RSDP_SIZE           36                  /* revision 2 */
#define FACP_SIG            0x50434146          /* "FACP" */
#define ACPI_HEADER_SIZE    36
#define FADT_PM1A_CNT_BLK   64
#define FADT_X_PM1A_CNT_BLK 172                 /* GAS: space id, .., address @+4 */
#define GAS_SYSTEM_IO       1
#define PM1_CNT_S5_SLEEP    ((5 << 10) | (1 << 13)) /* SLP_TYP = 5, SLP_EN */
#define I8042_COMMAND       0x64
#define I8042_RESET_CPU     0xfe

/* probe.exit (exit_mode; index into exit_words). */
#define EXIT_MODE_DEBUG     0
#define EXIT_MODE_ACPI      1
#define EXIT_MODE_RESET     2
#define CMDLINE_MAX         1023
#define CMDLINE_PARSE_MAX   4095

#define STACK_SIZE          16384

/* Paging: our page directory for 3..4 GiB, the 32-bit entries' tables. */
#define HIGH_GIB            3                   /* PDPT index of 3..4 GiB */
#define HIGH_BASE           0xc0000000
#define PDE_2M_UC           0x9b                /* P|RW|PWT|PCD|PS */
#define PDE_2M              0x83                /* P|RW|PS */
#define PTE_TABLE           0x3                 /* P|RW */
#define PTE_ADDR_MASK       0x000ffffffffff000
#define LOW_MAP_END         0x40000000          /* identity map: 0..1 GiB */
#define CR0_PE              0x1
#define CR0_ET              0x10
#define CR0_PG              0x80000000
#define CR4_PAE             0x20
#define SEL_CODE64          0x08
#define SEL_DATA            0x10

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
#define OPT_APSPIN          0x100               /* APs spin, IF=0, instead of hlt */
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
_start:                                         /* Linux 64-bit protocol */
    cli
    mov     %rsi, %r15                          /* boot_params */
    mov     $PROTO_LINUX, %r14d
    jmp     start64

/*
 * start64_from32: where the 32-bit entries land, in 64-bit mode on their own
 * GDT and page tables: %ebx = boot information, %esi = protocol. The upper
 * halves of the registers are undefined after the mode switch, hence the
 * 32-bit moves (they zero-extend).
 */
start64_from32:
    mov     %ebx, %r15d
    mov     %esi, %r14d

/* start64: %r15 = boot information, %r14d = protocol (PROTO_*). */
start64:
    lea     stack_top(%rip), %rsp
    xor     %ebp, %ebp
    call    zero_vars
    mov     %r14d, boot_proto(%rip)
    movl    $UART_POLL_LIMIT, uart_budget(%rip)
    call    map_high
    call    idt_setup

    /* --- banner, protocol --- */
    PUTS(str_banner)
    PUTS(str_protocol)
    mov     boot_proto(%rip), %eax
    lea     proto_names(%rip), %rsi
    mov     (%rsi,%rax,8), %rsi
    call    puts
    call    boot_setup                          /* cmdline_addr, e820_* */

    /* --- command line --- */
    PUTS(str_cmdline)
    mov     cmdline_addr(%rip), %rax
    call    put_cstr
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

    /* --- e820 map (the protocol's memory map, see boot_setup) --- */
    PUTS(str_e820_count)
    mov     e820_count(%rip), %r12d
    mov     %r12, %rax
    call    put_dec
    call    newline

    mov     e820_first(%rip), %rbx
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
    mov     e820_stride(%rip), %eax
    test    %eax, %eax
    jnz     1f
    mov     -4(%rbx), %eax                      /* multiboot: size field + 4 */
    add     $4, %eax
1:  add     %rax, %rbx
    dec     %r12d
    jnz     .Le820_loop
.Le820_end:
    call    boot_modules                        /* initrd / pvh / multiboot lines */

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

    /* --- stray interrupts, done, exit as probe.exit says --- */
    cli
    LOCK_OUT
    PUTS(str_stray)
    mov     stray_count(%rip), %eax
    call    put_dec
    call    newline
    mov     exit_mode(%rip), %eax
    cmp     $EXIT_MODE_ACPI, %eax
    je      .Lexit_acpi
    cmp     $EXIT_MODE_RESET, %eax
    je      .Lexit_reset
    PUTS(str_done)
    xor     %eax, %eax
.Lexit_debug:                                   /* %eax = isa-debug-exit value */
    mov     $DEBUG_EXIT_PORT, %edx
    out     %eax, %dx
.Lhalt:
    cli
    hlt
    jmp     .Lhalt
.Lexit_acpi:
    call    acpi_pm1a_cnt                       /* CF = 0: %edx = the port */
    jc      1f
    PUTS(str_poweroff)
    mov     %edx, %eax
    mov     $4, %ecx
    call    put_hexn
    call    newline
    PUTS(str_done)
    mov     $PM1_CNT_S5_SLEEP, %eax
    out     %ax, %dx
    jmp     2f                                  /* still running: fall back */
1:  PUTS(str_acpi_missing)
    PUTS(str_done)
2:  mov     $EXIT_ACPI_FAILED, %eax
    jmp     .Lexit_debug
.Lexit_reset:
    PUTS(str_reset)
    PUTS(str_done)
    mov     $I8042_RESET_CPU, %al
    out     %al, $I8042_COMMAND
    mov     $EXIT_RESET_FAILED, %eax            /* still running: fall back */
    jmp     .Lexit_debug
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
 * page directory, hooked into entry 3 of the PDPT that PML4[0] points at
 * (the VMM's 0xa000 for Linux, .data32's for PVH and multiboot); reload
 * CR3. Preserves all.
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
    mov     $PTE_ADDR_MASK, %rcx
    mov     %cr3, %rax
    and     %rcx, %rax                          /* PML4 */
    mov     (%rax), %rax
    and     %rcx, %rax                          /* PDPT */
    lea     high_pd(%rip), %rdi
    or      $PTE_TABLE, %rdi
    mov     %rdi, 8 * HIGH_GIB(%rax)
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
 * Boot information (%r15, by boot_proto)
 * ------------------------------------------------------------------------ */

/*
 * boot_setup: set cmdline_addr and the memory map to print: e820_first
 * (address of the first entry's addr field; size at +8, type at +16),
 * e820_count (clamped to 128) and e820_stride (bytes to the next entry; 0
 * for multiboot, where it is the u32 before the entry + 4). Preserves all.
 */
    .type boot_setup, @function
boot_setup:
    push    %rax
    push    %rcx
    push    %rdx
    push    %rsi
    push    %rdi
    mov     boot_proto(%rip), %eax
    cmp     $PROTO_PVH, %eax
    je      .Lbs_pvh
    cmp     $PROTO_MULTIBOOT, %eax
    je      .Lbs_mb
    mov     BP_EXT_CMD_LINE_PTR(%r15), %eax     /* Linux */
    shl     $32, %rax
    mov     BP_CMD_LINE_PTR(%r15), %ecx
    or      %rcx, %rax
    mov     %rax, cmdline_addr(%rip)
    movzbl  BP_E820_ENTRIES(%r15), %ecx
    lea     BP_E820_TABLE(%r15), %rax
    mov     $E820_ENTRY_SIZE, %edx
    jmp     .Lbs_done
.Lbs_pvh:
    mov     PVH_CMDLINE_PADDR(%r15), %rax
    mov     %rax, cmdline_addr(%rip)
    xor     %ecx, %ecx
    cmpl    $1, PVH_VERSION(%r15)               /* version 0: no memory map */
    jb      1f
    mov     PVH_MEMMAP_ENTRIES(%r15), %ecx
1:  mov     PVH_MEMMAP_PADDR(%r15), %rax
    mov     $PVH_MEMMAP_ENTRY_SIZE, %edx
    jmp     .Lbs_done
.Lbs_mb:
    mov     MB_INFO_FLAGS(%r15), %edx
    xor     %eax, %eax
    test    $MB_FLAG_CMDLINE, %edx
    jz      1f
    mov     MB_INFO_CMDLINE(%r15), %eax
1:  mov     %rax, cmdline_addr(%rip)
    xor     %ecx, %ecx                          /* count the mmap entries */
    xor     %eax, %eax
    test    $MB_FLAG_MMAP, %edx
    jz      3f
    mov     MB_INFO_MMAP_ADDR(%r15), %eax       /* first entry's size field */
    mov     MB_INFO_MMAP_LENGTH(%r15), %edx
    add     %rax, %rdx                          /* end */
    mov     %rax, %rsi
2:  cmp     %rdx, %rsi
    jae     3f
    cmp     $E820_MAX_ENTRIES, %ecx
    jae     3f
    inc     %ecx
    mov     (%rsi), %edi
    lea     4(%rsi,%rdi), %rsi
    jmp     2b
3:  add     $4, %rax                            /* its base field */
    xor     %edx, %edx
.Lbs_done:
    cmp     $E820_MAX_ENTRIES, %ecx
    jbe     4f
    mov     $E820_MAX_ENTRIES, %ecx
4:  mov     %ecx, e820_count(%rip)
    mov     %rax, e820_first(%rip)
    mov     %edx, e820_stride(%rip)
    pop     %rdi
    pop     %rsi
    pop     %rdx
    pop     %rcx
    pop     %rax
    ret
    .size boot_setup, . - boot_setup

/*
 * boot_modules: print the protocol's module lines: Linux the initrd (if
 * any), PVH the rsdp/modules line and one line per module, multiboot the
 * mem_lower/mem_upper/mods line and one line per module (at most
 * MODULES_MAX module lines). Preserves all.
 */
    .type boot_modules, @function
boot_modules:
    push    %rax
    push    %rbx
    push    %rcx
    push    %rdx
    push    %r12
    mov     boot_proto(%rip), %eax
    cmp     $PROTO_PVH, %eax
    je      .Lbm_pvh
    cmp     $PROTO_MULTIBOOT, %eax
    je      .Lbm_mb
    mov     BP_EXT_RAMDISK_IMAGE(%r15), %eax    /* Linux */
    shl     $32, %rax
    mov     BP_RAMDISK_IMAGE(%r15), %ecx
    or      %rcx, %rax
    jz      .Lbm_done
    PUTS(str_initrd)
    call    put_hex64
    PUTS(str_size)
    mov     BP_EXT_RAMDISK_SIZE(%r15), %eax
    shl     $32, %rax
    mov     BP_RAMDISK_SIZE(%r15), %ecx
    or      %rcx, %rax
    call    put_hex64
    call    newline
    jmp     .Lbm_done
.Lbm_pvh:
    PUTS(str_pvh_rsdp)
    mov     PVH_RSDP_PADDR(%r15), %rax
    call    put_hex64
    PUTS(str_modules)
    mov     PVH_NR_MODULES(%r15), %r12d
    mov     %r12d, %eax
    call    put_dec
    call    newline
    mov     PVH_MODLIST_PADDR(%r15), %rbx
    test    %rbx, %rbx
    jz      .Lbm_done
    cmp     $MODULES_MAX, %r12d
    jbe     1f
    mov     $MODULES_MAX, %r12d
1:  test    %r12d, %r12d
    jz      .Lbm_done
2:  PUTS(str_module)
    mov     0(%rbx), %rax                       /* paddr */
    call    put_hex64
    PUTS(str_end)
    add     8(%rbx), %rax                       /* + size */
    call    put_hex64
    call    newline
    add     $PVH_MODLIST_ENTRY_SIZE, %rbx
    dec     %r12d
    jnz     2b
    jmp     .Lbm_done
.Lbm_mb:
    mov     MB_INFO_FLAGS(%r15), %edx
    xor     %eax, %eax
    xor     %ecx, %ecx
    test    $MB_FLAG_MEMORY, %edx
    jz      1f
    mov     MB_INFO_MEM_LOWER(%r15), %eax
    mov     MB_INFO_MEM_UPPER(%r15), %ecx
1:  PUTS(str_mb_lower)
    call    put_dec
    PUTS(str_mb_upper)
    mov     %ecx, %eax
    call    put_dec
    PUTS(str_mb_mods)
    xor     %r12d, %r12d
    xor     %ebx, %ebx
    test    $MB_FLAG_MODS, %edx
    jz      2f
    mov     MB_INFO_MODS_COUNT(%r15), %r12d
    mov     MB_INFO_MODS_ADDR(%r15), %ebx
2:  mov     %r12d, %eax
    call    put_dec
    call    newline
    test    %rbx, %rbx
    jz      .Lbm_done
    cmp     $MODULES_MAX, %r12d
    jbe     3f
    mov     $MODULES_MAX, %r12d
3:  test    %r12d, %r12d
    jz      .Lbm_done
4:  PUTS(str_module)
    mov     0(%rbx), %eax                       /* mod_start */
    call    put_hex64
    PUTS(str_end)
    mov     4(%rbx), %eax                       /* mod_end */
    call    put_hex64
    PUTS(str_string)
    mov     8(%rbx), %eax                       /* string */
    call    put_cstr
    PUTS(str_quote_nl)
    add     $MB_MOD_SIZE, %rbx
    dec     %r12d
    jnz     4b
.Lbm_done:
    pop     %r12
    pop     %rdx
    pop     %rcx
    pop     %rbx
    pop     %rax
    ret
    .size boot_modules, . - boot_modules

/* ------------------------------------------------------------------------
 * Command line options
 * ------------------------------------------------------------------------ */

/*
 * parse_cmdline: copy the command line (up to 4095 bytes from cmdline_addr)
 * into cmdline_buf, then hand every token to parse_token. Preserves all.
 */
    .type parse_cmdline, @function
parse_cmdline:
    push    %rax
    push    %rcx
    push    %rdx
    push    %rsi
    push    %rdi
    push    %r12
    mov     cmdline_addr(%rip), %rax
    lea     cmdline_buf(%rip), %rdi
    test    %rax, %rax
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

opt_apspin:
    call    parse_num
    jc      9f
    call    parse_end
    jc      9f
    test    %eax, %eax
    jz      1f
    orl     $OPT_APSPIN, opt_flags(%rip)
1:  clc
    ret
9:  stc
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

/* probe.exit=WORD: WORD is the exit_words entry whose index is the mode. */
opt_exit:
    push    %rbx
    push    %rcx
    push    %rdx
    mov     %rsi, %rdx                          /* the value */
    lea     exit_words(%rip), %rbx
    xor     %ecx, %ecx
1:  mov     (%rbx,%rcx,8), %rdi
    test    %rdi, %rdi
    jz      9f                                  /* none matched */
    mov     %rdx, %rsi
    call    match_prefix
    jne     2f
    call    parse_end
    jnc     3f
2:  inc     %ecx
    jmp     1b
3:  mov     %ecx, exit_mode(%rip)
    pop     %rdx
    pop     %rcx
    pop     %rbx
    clc
    ret
9:  pop     %rdx
    pop     %rcx
    pop     %rbx
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
 * smp_boot: report the BSP online, copy the trampoline to 0x10000 and patch
 * in the BSP's CR3 (below 4 GiB: 0x9000 or .data32's PML4), start
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

    call    tramp_install                       /* trampoline -> 0x10000 */

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
 * trampoline's GDT (0x08 = 64-bit code, 0x10 = data), the BSP's CR3,
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
    testl   $OPT_APSPIN, opt_flags(%rip)
    jnz     2f
    sti
1:  hlt
    jmp     1b
2:  cli                                         /* probe.apspin=1: busy forever */
3:  jmp     3b
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
 * ACPI (probe.exit=acpi)
 * ------------------------------------------------------------------------ */

/*
 * acpi_mapped: CF = 0 iff [%rax, %rax + %rdx) lies in 0..1 GiB or 3..4 GiB
 * (%rdx < 2^32). Preserves all.
 */
    .type acpi_mapped, @function
acpi_mapped:
    push    %rcx
    mov     %rax, %rcx
    shr     $32, %rcx
    pop     %rcx                                /* flags survive the pop */
    jnz     1f
    jmp     check_mapped
1:  stc
    ret
    .size acpi_mapped, . - acpi_mapped

/*
 * acpi_pm1a_cnt: find the FADT and its PM1a control port. RSDP: PVH's
 * rsdp_paddr if it holds "RSD PTR ", else the first "RSD PTR " on a 16-byte
 * boundary in 0xe0000..0xfffff. Then the XSDT (RSDP revision >= 2 and
 * XsdtAddress @24 != 0; 64-bit entries) or else the RSDT (@16; 32-bit
 * entries), its first "FACP" entry, and PM1a_CNT_BLK (@64), or if that is
 * 0 the address of X_PM1a_CNT_BLK (@172 + 4) when it is in I/O space.
 * Every table must lie in mapped memory and the port be <= 0xffff. CF = 0
 * and %edx = the port if found, else CF = 1. Preserves the others.
 */
    .type acpi_pm1a_cnt, @function
acpi_pm1a_cnt:
    push    %rax
    push    %rbx
    push    %rcx
    push    %rsi
    push    %rdi
    cmpl    $PROTO_PVH, boot_proto(%rip)
    jne     .Lacpi_scan
    mov     PVH_RSDP_PADDR(%r15), %rax
    test    %rax, %rax
    jz      .Lacpi_scan
    mov     $RSDP_SIZE, %edx
    call    acpi_mapped
    jc      .Lacpi_scan
    cmpl    $RSDP_SIG_LO, (%rax)
    jne     .Lacpi_scan
    cmpl    $RSDP_SIG_HI, 4(%rax)
    je      .Lacpi_rsdp
.Lacpi_scan:
    mov     $ACPI_SCAN_START, %eax
1:  cmpl    $RSDP_SIG_LO, (%rax)
    jne     2f
    cmpl    $RSDP_SIG_HI, 4(%rax)
    je      .Lacpi_rsdp
2:  add     $16, %eax
    cmp     $ACPI_SCAN_END, %eax
    jb      1b
    jmp     .Lacpi_none
.Lacpi_rsdp:                                    /* %rax = RSDP */
    mov     %rax, %rsi
    mov     $4, %ebx                            /* RSDT: 32-bit entries */
    mov     16(%rsi), %eax
    cmpb    $2, 15(%rsi)
    jb      3f
    mov     24(%rsi), %rcx
    test    %rcx, %rcx
    jz      3f
    mov     %rcx, %rax                          /* XSDT: 64-bit entries */
    mov     $8, %ebx
3:  test    %rax, %rax
    jz      .Lacpi_none
    mov     $ACPI_HEADER_SIZE, %edx
    call    acpi_mapped
    jc      .Lacpi_none
    mov     4(%rax), %edx                       /* length */
    call    acpi_mapped
    jc      .Lacpi_none
    lea     ACPI_HEADER_SIZE(%rax), %rsi        /* entries */
    lea     (%rax,%rdx), %rdi                   /* end */
4:  lea     (%rsi,%rbx), %rax
    cmp     %rdi, %rax
    ja      .Lacpi_none                         /* no FACP entry */
    mov     (%rsi), %rax
    add     %rbx, %rsi
    cmp     $8, %ebx
    je      5f
    mov     %eax, %eax                          /* RSDT entry: u32 */
5:  mov     $ACPI_HEADER_SIZE, %edx
    call    acpi_mapped
    jc      4b
    cmpl    $FACP_SIG, (%rax)
    jne     4b
    mov     4(%rax), %edx                       /* the FADT and its length */
    call    acpi_mapped
    jc      .Lacpi_none
    mov     %edx, %ecx
    cmp     $(FADT_PM1A_CNT_BLK + 4), %ecx
    jb      .Lacpi_none
    mov     FADT_PM1A_CNT_BLK(%rax), %edx
    test    %edx, %edx
    jnz     6f
    cmp     $(FADT_X_PM1A_CNT_BLK + 12), %ecx
    jb      .Lacpi_none
    cmpb    $GAS_SYSTEM_IO, FADT_X_PM1A_CNT_BLK(%rax)
    jne     .Lacpi_none
    mov     (FADT_X_PM1A_CNT_BLK + 4)(%rax), %rdx
    test    %rdx, %rdx
    jz      .Lacpi_none
6:  cmp     $0xffff, %rdx
    ja      .Lacpi_none
    pop     %rdi
    pop     %rsi
    pop     %rcx
    pop     %rbx
    pop     %rax
    clc
    ret
.Lacpi_none:
    pop     %rdi
    pop     %rsi
    pop     %rcx
    pop     %rbx
    pop     %rax
    stc
    ret
    .size acpi_pm1a_cnt, . - acpi_pm1a_cnt

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

/*
 * put_cstr: write the NUL-terminated string at %rax verbatim, at most
 * CMDLINE_MAX bytes; nothing if %rax is 0. Preserves all registers.
 */
    .type put_cstr, @function
put_cstr:
    push    %rax
    push    %rbx
    push    %rcx
    mov     %rax, %rbx
    test    %rbx, %rbx
    jz      2f
    mov     $CMDLINE_MAX, %ecx
1:  movzbl  (%rbx), %eax
    test    %al, %al
    jz      2f
    call    putc
    inc     %rbx
    dec     %ecx
    jnz     1b
2:  pop     %rcx
    pop     %rbx
    pop     %rax
    ret
    .size put_cstr, . - put_cstr

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

#include "../ap_trampoline.inc"

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
    .quad   key_exit, opt_exit
    .quad   key_apspin, opt_apspin
    .quad   0, 0

key_irqlines:     .asciz "probe.irqlines="
key_gsi:          .asciz "probe.gsi="
key_level:        .asciz "probe.level="
key_recorder:     .asciz "probe.recorder="
key_records:      .asciz "probe.records="
key_pio:          .asciz "probe.pio="
key_pio_records:  .asciz "probe.pio_records="
key_doorbell:     .asciz "probe.doorbell="
key_exit:         .asciz "probe.exit="
key_apspin:       .asciz "probe.apspin="

/* probe.exit values, by EXIT_MODE_*. */
    .balign 8
exit_words:
    .quad   word_debug, word_acpi, word_reset, 0
word_debug:       .asciz "debug"
word_acpi:        .asciz "acpi"
word_reset:       .asciz "reset"

/* Protocol names, by PROTO_*. */
    .balign 8
proto_names:
    .quad   str_proto_linux, str_proto_pvh, str_proto_multiboot
str_proto_linux:     .asciz "linux\n"
str_proto_pvh:       .asciz "pvh\n"
str_proto_multiboot: .asciz "multiboot\n"

str_banner:     .asciz "probe: berth probe v1\n"
str_protocol:   .asciz "probe: protocol "
str_initrd:     .asciz "probe: initrd start=0x"
str_size:       .asciz " size=0x"
str_pvh_rsdp:   .asciz "probe: pvh rsdp=0x"
str_modules:    .asciz " modules="
str_module:     .asciz "probe: module start=0x"
str_end:        .asciz " end=0x"
str_string:     .asciz " string \""
str_mb_lower:   .asciz "probe: multiboot mem_lower="
str_mb_upper:   .asciz " mem_upper="
str_mb_mods:    .asciz " mods="
str_poweroff:   .asciz "probe: poweroff pm1a_cnt=0x"
str_acpi_missing: .asciz "probe: acpi missing\n"
str_reset:      .asciz "probe: reset\n"
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
 * 32-bit entries (PVH, multiboot), in their own sections: probe.ld discards
 * .text32, .data32, .multiboot and .note.Xen; probe-pvh.ld keeps all but
 * .multiboot, probe-multiboot.ld all but the note.
 *
 * Entered in 32-bit flat protected mode, paging off, %ebx = the boot
 * information. Load our GDT and data segments, take the boot stack, enable
 * PAE, load CR3 with the static identity map below, set EFER.LME, turn on
 * paging and far-jump into 64-bit code (start64_from32) with %ebx = boot
 * information and %esi = protocol. About 20 instructions, no iret.
 * ------------------------------------------------------------------------ */
    .section .text32, "ax", @progbits
    .code32
    .globl _start32_pvh
    .type _start32_pvh, @function
_start32_pvh:
    mov     $PROTO_PVH, %esi
    jmp     start32
    .size _start32_pvh, . - _start32_pvh

    .globl _start32_mb
    .type _start32_mb, @function
_start32_mb:
    mov     $PROTO_MULTIBOOT, %esi
start32:
    cli
    lgdtl   boot32_gdtr
    mov     $SEL_DATA, %eax
    mov     %ax, %ds
    mov     %ax, %es
    mov     %ax, %fs
    mov     %ax, %gs
    mov     %ax, %ss
    mov     $stack_top, %esp
    mov     $CR4_PAE, %eax
    mov     %eax, %cr4
    mov     $boot32_pml4, %eax
    mov     %eax, %cr3
    mov     $EFER_MSR, %ecx
    rdmsr
    or      $EFER_LME, %eax
    wrmsr
    mov     $(CR0_PG | CR0_ET | CR0_PE), %eax
    mov     %eax, %cr0
    ljmp    $SEL_CODE64, $start64_from32
    .size _start32_mb, . - _start32_mb
    .code64

/*
 * The 32-bit entries' page tables (static, so building them costs no
 * instructions): PML4[0] -> PDPT, PDPT[0] -> PD, PD[i] -> 2 MiB page i for
 * the first 1 GiB (P|RW|PS). map_high later sets PDPT[3] for 3..4 GiB.
 * Then their GDT (accessed bits preset: nothing writes to it).
 */
    .section .data32, "aw", @progbits
    .balign 4096
boot32_pml4:
    .quad   boot32_pdpt + PTE_TABLE
    .fill   511, 8, 0
boot32_pdpt:
    .quad   boot32_pd + PTE_TABLE
    .fill   511, 8, 0
boot32_pd:
    .set    pde, PDE_2M
    .rept   512
    .quad   pde
    .set    pde, pde + 0x200000
    .endr
    .balign 8
boot32_gdt:
    .quad   0
    .quad   0x00af9b000000ffff                  /* 0x08: 64-bit code */
    .quad   0x00cf93000000ffff                  /* 0x10: data */
boot32_gdtr:
    .word   3 * 8 - 1
    .long   boot32_gdt

/*
 * Multiboot v1 header (probe-multiboot.ld puts it first in .text, file
 * offset 0x1000): memory info wanted, and the a.out kludge address fields
 * (mb_* come from the linker script): the file image from mb_load_start to
 * mb_load_end, zeroes to mb_bss_end, entry _start32_mb.
 */
    .section .multiboot, "a", @progbits
    .balign 4
mb_header:
    .long   MB_HEADER_MAGIC
    .long   MB_HEADER_FLAGS
    .long   -(MB_HEADER_MAGIC + MB_HEADER_FLAGS)
    .long   mb_header                           /* header_addr */
    .long   mb_load_start                       /* load_addr */
    .long   mb_load_end                         /* load_end_addr */
    .long   mb_bss_end                          /* bss_end_addr */
    .long   _start32_mb                         /* entry_addr */

/* PVH: XEN_ELFNOTE_PHYS32_ENTRY, name "Xen", 4-byte physical entry. */
    .section .note.Xen, "a", @note
    .balign 4
    .long   4                                   /* namesz */
    .long   4                                   /* descsz */
    .long   XEN_ELFNOTE_PHYS32_ENTRY
    .asciz  "Xen"
    .long   _start32_pvh

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
boot_proto:     .skip 4
exit_mode:      .skip 4
e820_count:     .skip 4
e820_stride:    .skip 4                         /* 0: multiboot (size + 4) */
    .balign 8
e820_first:     .skip 8                         /* the first entry's addr */
cmdline_addr:   .skip 8
    .balign 8
online_flags:   .skip MAX_CPUS                  /* by APIC ID */
cpu_ids:        .skip MAX_CPUS                  /* enabled, MP-table order */
online_list:    .skip MAX_CPUS                  /* online, MP-table order */
gsi_list:       .skip GSI_LIST_MAX * 4
gsi_tmp:        .skip GSI_LIST_MAX * 4
    .balign 8
vars_end:

    .section .note.GNU-stack, "", @progbits
