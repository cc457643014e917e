/*
 * testdev.S - drives QEMU's pc-testdev, fw_cfg and the PCI host bridge the
 * way kvm-unit-tests and Linux do, and reports each check.
 *
 * Needs the machine to declare `pc-testdev`, `fw-cfg` (with DMA), `pci`
 * and 1 vCPU; see tests/testdevs.rs. Checks, in order:
 *   insb        outw 0x9999 to 0xe0, `rep insb` 16 bytes: all 0x99
 *   outsb-insl  `rep outsb` 11 22 33 44 to 0xe0, `rep insl` 2 dwords: 0x00009944 each
 *   byte-port   outb 0xab to 0xeb (byte-wise view), inl 0xe0: 0xab009944
 *   iomem-q     64-bit write at 0xff000010, byte read at 0xff000013
 *   iomem-end   32-bit write + read at 0xff00fffc
 *   insb-mmio   outw 0x7777 to 0xe0, `rep insb` 1024 bytes into the window
 *               across a page boundary (kvm-unit-tests' string_io_mmio)
 *   flush       outl a RAM page's address to 0xe4; the page keeps its data
 *               and takes writes
 *   fwcfg-sig   select 0 (outw 0x510), 4 x inb 0x511: "QEMU"
 *   fwcfg-id    select 1: 3 (traditional + DMA)
 *   fwcfg-cpus  select 5: 1
 *   dma-ctl     DMA read of the file directory (select 0x19): control 0
 *   dma-count   its file count: 1
 *   dma-name    its first name: "etc/e820"
 *   dma-e820    DMA read of file 0x20: the first e820 entry's length 0x9fc00
 *   pci-host    config dword 0 of 00:00.0: 0x12378086
 *   pci-absent  config dword 0 of 00:02.0: 0xffffffff
 * and prints config dword 0 of 00:01.0 (pci-testdev when declared) as
 * "testdev: pci 00:01.0=0x<8 hex>".
 *
 * OUTPUT (COM1): "testdev: start", then "testdev: <check> ok" or
 * "testdev: <check> FAIL got=0x<16 hex>", then "testdev: failures=<n>".
 * When every check passed it resets the machine with 0x06 to the reset
 * register 0xcf9 (status 0 with on_reboot = "exit"; if the VM keeps
 * running, debug-exit 2 = status 5); else it exits through debug-exit with
 * 1 (status 3).
 */
#include "lib.h"

#define TESTDEV_DATA    0xe0
#define TESTDEV_FLUSH   0xe4
#define TESTDEV_BYTE    0xe8
#define IOMEM           0xff000000
#define FW_CFG_SEL      0x510
#define FW_CFG_DATA     0x511
#define FW_CFG_DMA      0x514
#define DMA_SELECT      0x08
#define DMA_READ        0x02
#define PCI_ADDR        0xcf8
#define PCI_DATA        0xcfc
#define RESET_PORT      0xcf9
#define RESET_VALUE     0x06        /* SYS_RST | RST_CPU */
#define PDE_FLAGS       0x9b        /* P | RW | PWT | PCD | PS (2 MiB) */
#define PDPTE_FLAGS     0x03        /* P | RW */
#define HIGH_GIB        0xc0000000  /* PDPT[3] covers 3..4 GiB */

/* Compare %rax with the 64-bit constant `want`; report check `name`. */
#define CHECK(name, want)   movabs $(want), %rbx; lea name(%rip), %rsi; call check

    .code64
    .section .text.start, "ax", @progbits
    .globl _start
    .type _start, @function
_start:
    GUEST_PROLOGUE
    PUTS(str_start)
    xor     %r15d, %r15d                /* failures */
    cld

    /* ---- pc-testdev data register: string I/O ---- */
    mov     $TESTDEV_DATA, %edx
    mov     $0x9999, %eax
    out     %ax, %dx
    lea     buf(%rip), %rdi
    mov     $16, %ecx
    rep insb
    mov     buf+8(%rip), %rax
    CHECK(n_insb, 0x9999999999999999)

    lea     pattern(%rip), %rsi
    mov     $TESTDEV_DATA, %edx
    mov     $4, %ecx
    rep outsb
    lea     buf(%rip), %rdi
    mov     $2, %ecx
    rep insl
    mov     buf(%rip), %rax
    CHECK(n_outsb, 0x0000994400009944)

    mov     $(TESTDEV_BYTE + 3), %edx
    mov     $0xab, %al
    out     %al, %dx
    mov     $TESTDEV_DATA, %edx
    in      %dx, %eax
    CHECK(n_byte, 0xab009944)

    /* ---- map 3..4 GiB for the iomem window ---- */
    lea     high_pd(%rip), %rdi
    mov     $(HIGH_GIB | PDE_FLAGS), %eax
    mov     $512, %ecx
1:  mov     %rax, (%rdi)
    add     $0x200000, %rax
    add     $8, %rdi
    dec     %ecx
    jnz     1b
    movabs  $0x000ffffffffff000, %rdx
    mov     %cr3, %rax
    and     %rdx, %rax                  /* PML4 */
    mov     (%rax), %rax
    and     %rdx, %rax                  /* PDPT */
    lea     high_pd(%rip), %rcx
    or      $PDPTE_FLAGS, %rcx
    mov     %rcx, 3*8(%rax)
    mov     %cr3, %rax
    mov     %rax, %cr3

    /* ---- pc-testdev iomem ---- */
    mov     $IOMEM, %ebx
    movabs  $0x1122334455667788, %rax
    mov     %rax, 0x10(%rbx)
    movzbl  0x13(%rbx), %eax
    CHECK(n_iomem_q, 0x55)

    mov     $IOMEM, %ebx
    movl    $0xdeadbeef, 0xfffc(%rbx)
    mov     0xfffc(%rbx), %eax
    CHECK(n_iomem_end, 0xdeadbeef)

    mov     $TESTDEV_DATA, %edx
    mov     $0x7777, %eax
    out     %ax, %dx
    mov     $(IOMEM + 4032), %edi
    mov     $1024, %ecx
    rep insb
    mov     $IOMEM, %ebx
    movzbl  4032+1023(%rbx), %eax
    CHECK(n_insb_mmio, 0x77)

    /* ---- pc-testdev flush page ---- */
    movabs  $0x0123456789abcdef, %rax
    mov     %rax, flush_page(%rip)
    lea     flush_page(%rip), %rax
    mov     $TESTDEV_FLUSH, %edx
    out     %eax, %dx
    mov     flush_page(%rip), %rax
    not     %rax
    mov     %rax, flush_page+8(%rip)
    mov     flush_page+8(%rip), %rax
    xor     flush_page(%rip), %rax      /* all-ones when both survived */
    CHECK(n_flush, 0xffffffffffffffff)

    /* ---- fw_cfg, traditional interface ---- */
    xor     %eax, %eax
    call    fwcfg_select
    mov     $4, %ecx
    call    fwcfg_read
    CHECK(n_sig, 0x554d4551)            /* "QEMU" */
    mov     $1, %eax
    call    fwcfg_select
    mov     $4, %ecx
    call    fwcfg_read
    CHECK(n_id, 3)
    mov     $5, %eax
    call    fwcfg_select
    mov     $2, %ecx
    call    fwcfg_read
    CHECK(n_cpus, 1)

    /* ---- fw_cfg DMA: the directory, then etc/e820 ---- */
    mov     $(0x19 << 16 | DMA_SELECT | DMA_READ), %eax
    mov     $68, %ecx
    call    fwcfg_dma
    CHECK(n_dma_ctl, 0)
    mov     dma_buf(%rip), %eax
    bswap   %eax
    CHECK(n_dma_count, 1)
    mov     dma_buf+12(%rip), %rax
    CHECK(n_dma_name, 0x303238652f637465) /* "etc/e820" */
    mov     $(0x20 << 16 | DMA_SELECT | DMA_READ), %eax
    mov     $20, %ecx
    call    fwcfg_dma
    mov     dma_buf+8(%rip), %rax
    CHECK(n_dma_e820, 0x9fc00)

    /* ---- PCI configuration mechanism #1 ---- */
    mov     $PCI_ADDR, %edx
    mov     $0x80000000, %eax
    out     %eax, %dx
    mov     $PCI_DATA, %edx
    in      %dx, %eax
    CHECK(n_pci_host, 0x12378086)
    mov     $PCI_ADDR, %edx
    mov     $0x80001000, %eax
    out     %eax, %dx
    mov     $PCI_DATA, %edx
    in      %dx, %eax
    CHECK(n_pci_absent, 0xffffffff)
    mov     $PCI_ADDR, %edx
    mov     $0x80000800, %eax
    out     %eax, %dx
    mov     $PCI_DATA, %edx
    in      %dx, %eax
    PUTS(str_pci_01)
    mov     $8, %ecx
    call    put_hex
    call    newline

    PUTS(str_failures)
    mov     %r15, %rax
    call    put_dec
    call    newline
    test    %r15d, %r15d
    jnz     1f
    /* All passed: reset through 0xcf9, which the PCI bridge must leave to
       the reset register. */
    mov     $RESET_PORT, %edx
    mov     $RESET_VALUE, %al
    out     %al, %dx
    EXIT(2)
1:  EXIT(1)
    .size _start, . - _start

/*
 * check: %rax = got, %rbx = want, %rsi = check name. Prints the result,
 * counts a failure in %r15. Preserves everything else but flags.
 */
    .type check, @function
check:
    push    %rsi
    push    %rsi
    PUTS(str_prefix)
    pop     %rsi
    call    puts
    cmp     %rbx, %rax
    jne     1f
    PUTS(str_ok)
    pop     %rsi
    ret
1:  inc     %r15d
    PUTS(str_fail)
    call    put_hex64
    call    newline
    pop     %rsi
    ret
    .size check, . - check

/* fwcfg_select: 16-bit write of %ax to the selector. */
    .type fwcfg_select, @function
fwcfg_select:
    push    %rdx
    mov     $FW_CFG_SEL, %edx
    out     %ax, %dx
    pop     %rdx
    ret
    .size fwcfg_select, . - fwcfg_select

/* fwcfg_read: %ecx (1..8) byte reads from the data port, little-endian into %rax. */
    .type fwcfg_read, @function
fwcfg_read:
    push    %rdx
    push    %rbx
    push    %rcx
    xor     %ebx, %ebx
    mov     $FW_CFG_DATA, %edx
    shl     $3, %ecx                    /* bits to fill */
    push    %rcx
    xor     %ecx, %ecx
1:  xor     %eax, %eax
    in      %dx, %al
    shl     %cl, %rax
    or      %rax, %rbx
    add     $8, %ecx
    cmp     (%rsp), %ecx
    jb      1b
    pop     %rcx
    mov     %rbx, %rax
    pop     %rcx
    pop     %rbx
    pop     %rdx
    ret
    .size fwcfg_read, . - fwcfg_read

/*
 * fwcfg_dma: control %eax, length %ecx, destination dma_buf. Writes the
 * big-endian descriptor, kicks it (high then low half, big-endian, as
 * Linux), returns the control word read back (host order) in %rax.
 */
    .type fwcfg_dma, @function
fwcfg_dma:
    push    %rdx
    bswap   %eax
    mov     %eax, dma_desc(%rip)
    bswap   %ecx
    mov     %ecx, dma_desc+4(%rip)
    lea     dma_buf(%rip), %rax
    bswap   %rax
    mov     %rax, dma_desc+8(%rip)
    lea     dma_desc(%rip), %rax
    mov     $FW_CFG_DMA, %edx
    mov     %rax, %rcx
    shr     $32, %rcx
    bswap   %ecx
    xchg    %eax, %ecx
    out     %eax, %dx                   /* high half */
    mov     %ecx, %eax
    bswap   %eax
    add     $4, %edx
    out     %eax, %dx                   /* low half: starts the transfer */
    mov     dma_desc(%rip), %eax
    bswap   %eax
    pop     %rdx
    ret
    .size fwcfg_dma, . - fwcfg_dma

    .section .rodata, "a", @progbits
pattern:        .byte 0x11, 0x22, 0x33, 0x44
str_start:      .asciz "testdev: start\n"
str_prefix:     .asciz "testdev: "
str_ok:         .asciz " ok\n"
str_fail:       .asciz " FAIL got=0x"
str_failures:   .asciz "testdev: failures="
str_pci_01:     .asciz "testdev: pci 00:01.0=0x"
n_insb:         .asciz "insb"
n_outsb:        .asciz "outsb-insl"
n_byte:         .asciz "byte-port"
n_iomem_q:      .asciz "iomem-q"
n_iomem_end:    .asciz "iomem-end"
n_insb_mmio:    .asciz "insb-mmio"
n_flush:        .asciz "flush"
n_sig:          .asciz "fwcfg-sig"
n_id:           .asciz "fwcfg-id"
n_cpus:         .asciz "fwcfg-cpus"
n_dma_ctl:      .asciz "dma-ctl"
n_dma_count:    .asciz "dma-count"
n_dma_name:     .asciz "dma-name"
n_dma_e820:     .asciz "dma-e820"
n_pci_host:     .asciz "pci-host"
n_pci_absent:   .asciz "pci-absent"

    .section .bss, "aw", @nobits
    .balign 4096
high_pd:        .skip 4096
flush_page:     .skip 4096
dma_buf:        .skip 128
    .balign 16
dma_desc:       .skip 16
buf:            .skip 64

    .section .note.GNU-stack, "", @progbits
