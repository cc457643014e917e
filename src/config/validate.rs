//! Semantic checks of a parsed machine file, before any host access other
//! than reading the files it names. Each check reports the field it is about.

use super::{
    Config, ConfigErrorKind, DeviceConfig, FieldPath, KernelFormat, SerialOutputConfig, WindowSpace,
};
use crate::arch::x86_64::layout::{self, PLATFORM_WINDOWS};
use crate::boot::format::{probe, ImageFormat};

/// Largest vCPU count the machine model supports (xAPIC IDs 0..=254).
pub const MAX_VCPUS: u32 = 254;

/// A validation failure, located by field path.
#[derive(Debug)]
pub(super) struct Invalid {
    pub field: FieldPath,
    pub message: String,
    pub kind: ConfigErrorKind,
}

pub(super) fn invalid(field: FieldPath, message: String) -> Invalid {
    Invalid {
        field,
        message,
        kind: ConfigErrorKind::Invalid,
    }
}

const PAGE: u64 = 4096;

/// Runs every check; the first failure wins. Returns the resolved kernel
/// format and where the image's segments land.
pub(super) fn validate(c: &Config) -> Result<(KernelFormat, Vec<(u64, u64)>), Invalid> {
    let m = &c.machine;
    let vcpus = m.machine.vcpus;
    if !(1..=MAX_VCPUS).contains(&vcpus) {
        return Err(invalid(
            FieldPath::of("machine", None, Some("vcpus")),
            format!("must be between 1 and {MAX_VCPUS}, got {vcpus}"),
        ));
    }
    check_memory(c)?;
    let format = check_kernel(c)?;
    check_devices(c)?;
    super::validate_irq::check_irqchip(c)?;
    super::validate_irq::check_routes(c)?;
    super::validate_irq::check_zones(c)?;
    if let SerialOutputConfig::File { file } = &m.serial.output {
        if file.as_os_str().is_empty() {
            return Err(invalid(
                FieldPath::of("serial", None, Some("output")),
                "file path is empty".into(),
            ));
        }
    }
    Ok(format)
}

fn check_memory(c: &Config) -> Result<(), Invalid> {
    let regions = &c.machine.memory;
    if regions.is_empty() {
        return Err(invalid(
            FieldPath::of("memory", None, None),
            "at least one [[memory]] region is required".into(),
        ));
    }
    let max = 1u64 << layout::MAX_PHYS_ADDR_BITS;
    for (i, r) in regions.iter().enumerate() {
        let at = |f: &str| FieldPath::of("memory", Some(i), Some(f));
        let size = r.size.bytes();
        if size == 0 || size % PAGE != 0 {
            return Err(invalid(
                at("size"),
                format!("must be a non-zero multiple of 4 KiB, got {size:#x}"),
            ));
        }
        if r.guest_addr % PAGE != 0 {
            return Err(invalid(
                at("guest_addr"),
                format!("must be 4 KiB aligned, got {:#x}", r.guest_addr),
            ));
        }
        if r.guest_addr >= max {
            return Err(invalid(
                at("guest_addr"),
                format!(
                    "{:#x} is beyond the {}-bit physical address space",
                    r.guest_addr,
                    layout::MAX_PHYS_ADDR_BITS
                ),
            ));
        }
        match r.guest_addr.checked_add(size) {
            Some(end) if end <= max => {}
            _ => {
                return Err(invalid(
                    at("size"),
                    format!(
                        "region {:#x} + {size:#x} ends beyond the {}-bit physical address space",
                        r.guest_addr,
                        layout::MAX_PHYS_ADDR_BITS
                    ),
                ))
            }
        }
        for w in PLATFORM_WINDOWS {
            if overlaps(r.guest_addr, size, w.base, w.len) {
                return Err(invalid(
                    at("guest_addr"),
                    format!(
                        "region {:#x}..{:#x} overlaps the {} window {:#x}..{:#x}",
                        r.guest_addr,
                        r.guest_addr + size,
                        w.name,
                        w.base,
                        w.base + w.len
                    ),
                ));
            }
        }
        if r.hugepages && r.file.is_some() {
            return Err(invalid(
                at("hugepages"),
                "hugepages applies to anonymous memory; a file-backed region takes its page size from the file".into(),
            ));
        }
        if let Some(f) = &r.file {
            let path = c.resolve(f);
            let meta = std::fs::metadata(&path)
                .map_err(|e| invalid(at("file"), format!("cannot use {}: {e}", path.display())))?;
            if !meta.is_file() || meta.len() < size {
                return Err(invalid(
                    at("file"),
                    format!(
                        "{} must be a regular file of at least {size:#x} bytes (it has {:#x})",
                        path.display(),
                        meta.len()
                    ),
                ));
            }
        }
        for (j, o) in regions.iter().enumerate().take(i) {
            if overlaps(r.guest_addr, size, o.guest_addr, o.size.bytes()) {
                return Err(invalid(
                    at("guest_addr"),
                    format!(
                        "region {:#x}..{:#x} overlaps memory[{j}] {:#x}..{:#x}",
                        r.guest_addr,
                        r.guest_addr + size,
                        o.guest_addr,
                        o.guest_addr.saturating_add(o.size.bytes())
                    ),
                ));
            }
        }
    }
    let low = regions
        .iter()
        .position(|r| r.guest_addr == 0 && r.size.bytes() >= layout::LOW_RAM_REQUIRED);
    match low {
        None => Err(invalid(
            FieldPath::of("memory", None, None),
            format!(
                "one region must start at 0x0 and span at least {:#x} bytes: the boot structures live in the first MiB",
                layout::LOW_RAM_REQUIRED
            ),
        )),
        Some(i) if regions[i].readonly => Err(invalid(
            FieldPath::of("memory", Some(i), Some("readonly")),
            "the region at 0x0 holds the boot structures and must be writable".into(),
        )),
        Some(_) => Ok(()),
    }
}

/// Checks the kernel section, resolves `format = "auto"` from the image and
/// reads where its segments land.
fn check_kernel(c: &Config) -> Result<(KernelFormat, Vec<(u64, u64)>), Invalid> {
    let k = &c.machine.kernel;
    let cmdline_room = layout::CMDLINE_MAX - 1;
    if k.cmdline.len() as u64 > cmdline_room {
        return Err(invalid(
            FieldPath::of("kernel", None, Some("cmdline")),
            format!("is {} bytes; at most {cmdline_room} fit", k.cmdline.len()),
        ));
    }
    if k.cmdline.contains('\0') {
        return Err(invalid(
            FieldPath::of("kernel", None, Some("cmdline")),
            "must not contain NUL bytes".into(),
        ));
    }
    let path = c.resolve(&k.path);
    let kernel_err = |message: String| Invalid {
        field: FieldPath::of("kernel", None, Some("path")),
        message,
        kind: ConfigErrorKind::KernelImage,
    };
    // One open and one read of the image's head serve every check below.
    let mut file = None;
    let probed = std::fs::File::open(&path).and_then(|mut f| {
        if f.metadata()?.is_file() {
            let p = probe(&mut f);
            file = Some(f);
            p
        } else {
            Err(std::io::Error::other("not a regular file"))
        }
    });
    let image =
        probed.map_err(|e| kernel_err(format!("cannot read kernel image {}: {e}", path.display())))?;
    let detected = image.format;
    let format_err = |message: String| Invalid {
        field: FieldPath::of("kernel", None, Some("format")),
        message,
        kind: ConfigErrorKind::KernelImage,
    };
    let resolved = match (k.format, detected) {
        (KernelFormat::Auto, Some(f)) => from_image(f),
        (KernelFormat::Auto, None) => {
            return Err(kernel_err(format!(
                "{}: unknown format: not a bzImage, an ELF with a PVH note, a multiboot v1 image or an ELF64",
                path.display()
            )))
        }
        (want, found) => {
            let fits = match want {
                KernelFormat::Bzimage => found == Some(ImageFormat::Bzimage),
                KernelFormat::Pvh => found == Some(ImageFormat::Pvh),
                // A multiboot header may sit in an ELF that also has a PVH note.
                KernelFormat::Multiboot => {
                    found == Some(ImageFormat::Multiboot) || image.has_multiboot_header()
                }
                KernelFormat::Elf => image.is_elf64(),
                KernelFormat::Auto => true,
            };
            if !fits {
                return Err(format_err(format!(
                    "is \"{}\" but {} {}",
                    want.name(),
                    path.display(),
                    found
                        .map(|f| format!("is detected as \"{}\"", from_image(f).name()))
                        .unwrap_or("is not a known format".into())
                )));
            }
            want
        }
    };
    if resolved == KernelFormat::Multiboot {
        // The guest receives `<path> <cmdline>` (QEMU's convention).
        let len = k.path.display().to_string().len() + 1 + k.cmdline.len();
        if len as u64 > cmdline_room {
            return Err(invalid(
                FieldPath::of("kernel", None, Some("cmdline")),
                format!(
                    "a multiboot kernel receives \"<path> <cmdline>\": {len} bytes; at most {cmdline_room} fit"
                ),
            ));
        }
    }
    let segments = file
        .as_mut()
        .map(|f| crate::boot::image_segments(f, resolved))
        .unwrap_or_default();
    if let Some(initrd) = &k.initrd {
        let p = c.resolve(initrd);
        std::fs::File::open(&p).map_err(|e| Invalid {
            field: FieldPath::of("kernel", None, Some("initrd")),
            message: format!("cannot read initrd {}: {e}", p.display()),
            kind: ConfigErrorKind::KernelImage,
        })?;
    }
    Ok((resolved, segments))
}

fn from_image(f: ImageFormat) -> KernelFormat {
    match f {
        ImageFormat::Bzimage => KernelFormat::Bzimage,
        ImageFormat::Pvh => KernelFormat::Pvh,
        ImageFormat::Multiboot => KernelFormat::Multiboot,
        ImageFormat::Elf64 => KernelFormat::Elf,
    }
}

fn check_devices(c: &Config) -> Result<(), Invalid> {
    // Windows in use: the platform's ports (COM1, i8042, CMOS, ACPI PM, the
    // in-kernel PIC/PIT) and the reset register.
    let mut used: Vec<(WindowSpace, u64, u64, String)> = layout::PLATFORM_PORTS
        .iter()
        .map(|(n, b, l)| (WindowSpace::Pio, u64::from(*b), u64::from(*l), n.to_string()))
        .collect();
    used.push((
        WindowSpace::Pio,
        layout::RESET_PORT.into(),
        1,
        RESET_REGISTER.into(),
    ));
    let mut boot_timer = None;
    for (i, d) in c.machine.device.iter().enumerate() {
        let at = |f: &str| FieldPath::of("device", Some(i), Some(f));
        match d {
            DeviceConfig::BootTimer { .. } => {
                if let Some(first) = boot_timer.replace(i) {
                    return Err(invalid(
                        FieldPath::of("device", Some(i), Some("kind")),
                        format!("a machine has at most one boot-timer; device[{first}] is one already"),
                    ));
                }
            }
            DeviceConfig::DebugExit { size, .. } if ![1, 2, 4].contains(size) => {
                return Err(invalid(at("size"), format!("must be 1, 2 or 4, got {size}")));
            }
            DeviceConfig::IrqLines { lines, .. } if !(1..=1024).contains(lines) => {
                return Err(invalid(
                    at("lines"),
                    format!("must be between 1 and 1024, got {lines}"),
                ));
            }
            DeviceConfig::IrqLines { resample: true, .. }
                if c.machine.irqchip.mode == super::IrqchipMode::Split =>
            {
                return Err(invalid(
                    at("resample"),
                    "needs [irqchip] mode = \"kernel\": KVM resamples only lines of its own IOAPIC; \
                     in split mode berth's IOAPIC sees each EOI and re-delivers a level line itself"
                        .into(),
                ));
            }
            DeviceConfig::Recorder {
                guest_addr,
                port,
                size,
            }
            | DeviceConfig::Null {
                guest_addr,
                port,
                size,
            } => {
                if guest_addr.is_some() == port.is_some() {
                    return Err(invalid(
                        FieldPath::of("device", Some(i), None),
                        format!(
                            "a {} device needs exactly one of guest_addr (MMIO) or port (PIO)",
                            d.kind()
                        ),
                    ));
                }
                if size.bytes() == 0 {
                    return Err(invalid(at("size"), "must not be zero".into()));
                }
            }
            DeviceConfig::Doorbell {
                guest_addr,
                port,
                size,
                value,
                vector,
                dest_apic_id,
            } => {
                let (base, field, widths): (u64, _, &[u8]) = match (guest_addr, port) {
                    (Some(a), None) => (*a, "guest_addr", &[1, 2, 4, 8]),
                    (None, Some(p)) => (u64::from(*p), "port", &[1, 2, 4]),
                    _ => {
                        return Err(invalid(
                            FieldPath::of("device", Some(i), None),
                            "a doorbell device needs exactly one of guest_addr (MMIO) or port (PIO)".into(),
                        ))
                    }
                };
                if !widths.contains(size) {
                    return Err(invalid(
                        at("size"),
                        format!("must be one of {widths:?} for a {field} doorbell, got {size}"),
                    ));
                }
                if base % u64::from(*size) != 0 {
                    return Err(invalid(
                        at(field),
                        format!("must be {size}-byte aligned, got {base:#x}"),
                    ));
                }
                if let Some(v) = value {
                    if *size < 8 && *v >> (8 * u32::from(*size)) != 0 {
                        return Err(invalid(
                            at("value"),
                            format!("{v:#x} does not fit the doorbell's {size} bytes"),
                        ));
                    }
                }
                check_vector(*vector, at("vector"))?;
                check_dest(c, *dest_apic_id, at("dest_apic_id"))?;
            }
            _ => {}
        }
        for (part, space, base, len, field) in d.windows() {
            check_window(c, &mut used, i, d, part, (space, base, len), field)?;
        }
    }
    Ok(())
}

/// A reserved window: (space, base, length, who).
type Used = (WindowSpace, u64, u64, String);

/// One device window: inside its address space, off RAM and the platform
/// windows, and clear of every window already placed.
fn check_window(
    c: &Config,
    used: &mut Vec<Used>,
    i: usize,
    d: &DeviceConfig,
    part: &str,
    (space, base, len): (WindowSpace, u64, u64),
    field: &str,
) -> Result<(), Invalid> {
    let at = |f: &str| FieldPath::of("device", Some(i), Some(f));
    // Which window, for devices with several.
    let mine = if part.is_empty() {
        String::new()
    } else {
        format!(" ({} {part})", d.kind())
    };
    let end = base.checked_add(len);
    match (space, end) {
        (WindowSpace::Pio, Some(e)) if e <= 0x1_0000 => {}
        (WindowSpace::Pio, _) => {
            return Err(invalid(
                at(field),
                format!("{base:#x} + {len:#x} runs past the last I/O port 0xffff"),
            ))
        }
        (WindowSpace::Mmio, Some(e)) if e <= 1u64 << layout::MAX_PHYS_ADDR_BITS => {
            if let Some(r) = c
                .machine
                .memory
                .iter()
                .find(|r| overlaps(base, len, r.guest_addr, r.size.bytes()))
            {
                return Err(invalid(
                    at(field),
                    format!(
                        "window {base:#x}..{e:#x}{mine} overlaps RAM at {:#x}",
                        r.guest_addr
                    ),
                ));
            }
            if let Some(w) = layout::PLATFORM_WINDOWS
                .iter()
                .find(|w| overlaps(base, len, w.base, w.len))
            {
                return Err(invalid(
                    at(field),
                    format!("window {base:#x}..{e:#x}{mine} overlaps the {} window", w.name),
                ));
            }
        }
        (WindowSpace::Mmio, _) => {
            return Err(invalid(
                at(field),
                format!("window {base:#x} + {len:#x} is beyond the physical address space"),
            ))
        }
    }
    // The PCI address register (0xcf8, 4 ports) holds the reset register
    // (0xcf9) as on a PC; the device forwards byte accesses there to it.
    let shares_reset = |who: &str| matches!(d, DeviceConfig::Pci { .. }) && who == RESET_REGISTER;
    if let Some((_, b, l, who)) = used
        .iter()
        .find(|(s, b, l, who)| *s == space && overlaps(base, len, *b, *l) && !shares_reset(who))
    {
        let what = if space == WindowSpace::Pio {
            "ports"
        } else {
            "addresses"
        };
        return Err(invalid(
            at(field),
            format!(
                "{what} {base:#x}..{:#x}{mine} collide with {who} at {b:#x}..{:#x}",
                base + len,
                b + l
            ),
        ));
    }
    let who = if part.is_empty() {
        format!("device[{i}] ({})", d.kind())
    } else {
        format!("device[{i}] ({} {part})", d.kind())
    };
    used.push((space, base, len, who));
    Ok(())
}

const RESET_REGISTER: &str = "reset register";

/// An MSI vector a guest can receive.
pub(super) fn check_vector(vector: u32, field: FieldPath) -> Result<(), Invalid> {
    if (0x10..=0xfe).contains(&vector) {
        Ok(())
    } else {
        Err(invalid(
            field,
            format!("must be between 0x10 and 0xfe, got {vector:#x}"),
        ))
    }
}

/// A destination APIC ID the plan has (vCPU i has APIC ID i).
pub(super) fn check_dest(c: &Config, apic: u32, field: FieldPath) -> Result<(), Invalid> {
    let vcpus = c.machine.machine.vcpus;
    if apic < vcpus {
        Ok(())
    } else {
        Err(invalid(
            field,
            format!(
                "no vCPU has APIC ID {apic}: this machine's APIC IDs are 0..={}",
                vcpus - 1
            ),
        ))
    }
}

fn overlaps(a: u64, alen: u64, b: u64, blen: u64) -> bool {
    a < b.saturating_add(blen) && b < a.saturating_add(alen)
}

#[cfg(test)]
mod tests {
    use super::super::test_support::parse;
    use super::super::{ConfigError, ConfigErrorKind};
    use std::path::Path;

    fn file(vcpus: &str, memory: &str, extra: &str) -> String {
        format!("[machine]\nvcpus = {vcpus}\n{memory}\n[kernel]\npath = \"@KERNEL@\"\n{extra}")
    }

    const LOW: &str = "[[memory]]\nguest_addr = 0\nsize = \"64MiB\"\n";

    fn err(text: &str) -> ConfigError {
        parse(Path::new("x.toml"), text).unwrap_err()
    }

    #[test]
    fn null_and_boot_timer_devices() {
        let null = "[[device]]\nkind = \"null\"\nport = 0x80\nsize = 1\n";
        let null_mmio = "[[device]]\nkind = \"null\"\nguest_addr = 0xd0001000\nsize = \"4KiB\"\n";
        let timer = "[[device]]\nkind = \"boot-timer\"\n";
        let c = parse(
            Path::new("x.toml"),
            &file("1", LOW, &format!("{null}{null_mmio}{timer}")),
        )
        .unwrap();
        let windows: Vec<_> = c.machine.device.iter().map(|d| d.window().unwrap()).collect();
        assert_eq!(windows[2].1, 0xd000_0000, "the boot timer's default address");
        assert_eq!(windows[2].2, 0x1000);
        let e = err(&file("1", LOW, "[[device]]\nkind = \"null\"\nsize = 1\n"));
        assert!(e.message.contains("a null device needs exactly one of"), "{e}");
        let e = err(&file("1", LOW, &format!("{timer}{timer}")));
        assert_eq!(e.field.to_string(), "device[1].kind");
        assert!(e.message.contains("at most one boot-timer"), "{e}");
        // The timer's page collides with a device on 0xd0000000.
        let e = err(&file(
            "1",
            LOW,
            &format!("{timer}[[device]]\nkind = \"null\"\nguest_addr = 0xd0000800\nsize = 4\n"),
        ));
        assert!(e.message.contains("boot-timer"), "{e}");
    }

    #[test]
    fn vcpu_range() {
        for bad in ["0", "255", "100000"] {
            let e = err(&file(bad, LOW, ""));
            assert_eq!(e.field.to_string(), "machine.vcpus");
            assert_eq!(e.kind, ConfigErrorKind::Invalid);
        }
        assert!(parse(Path::new("x.toml"), &file("254", LOW, "")).is_ok());
    }

    #[test]
    fn memory_required_and_low_region() {
        let e = err(&file("1", "", ""));
        assert!(e.message.contains("at least one"), "{e}");
        let e = err(&file(
            "1",
            "[[memory]]\nguest_addr = 0x100000\nsize = \"64MiB\"\n",
            "",
        ));
        assert!(e.message.contains("start at 0x0"), "{e}");
        let e = err(&file("1", "[[memory]]\nguest_addr = 0\nsize = \"512KiB\"\n", ""));
        assert!(e.message.contains("start at 0x0"), "{e}");
        let e = err(&file(
            "1",
            "[[memory]]\nguest_addr = 0\nsize = \"64MiB\"\nreadonly = true\n",
            "",
        ));
        assert_eq!(e.field.to_string(), "memory[0].readonly");
    }

    #[test]
    fn zero_and_unaligned() {
        let e = err(&file("1", "[[memory]]\nguest_addr = 0\nsize = 0\n", ""));
        assert_eq!(e.field.to_string(), "memory[0].size");
        let e = err(&file(
            "1",
            &format!("{LOW}[[memory]]\nguest_addr = 0x10000800\nsize = \"4KiB\"\n"),
            "",
        ));
        assert_eq!(e.field.to_string(), "memory[1].guest_addr");
        assert!(e.message.contains("aligned"));
    }

    #[test]
    fn overflow_near_2_pow_64() {
        let e = err(&file(
            "1",
            &format!("{LOW}[[memory]]\nguest_addr = 0x7fff_ffff_ffff_f000\nsize = \"16TiB\"\n"),
            "",
        ));
        assert_eq!(e.field.to_string(), "memory[1].guest_addr");
        assert!(e.message.contains("physical address space"), "{e}");
        let e = err(&file(
            "1",
            &format!("{LOW}[[memory]]\nguest_addr = 0xf_ffff_ffff_f000\nsize = \"16KiB\"\n"),
            "",
        ));
        assert_eq!(e.field.to_string(), "memory[1].size");
    }

    #[test]
    fn overlapping_regions() {
        let e = err(&file(
            "1",
            &format!("{LOW}[[memory]]\nguest_addr = 0x3000000\nsize = \"64MiB\"\n"),
            "",
        ));
        assert_eq!(e.field.to_string(), "memory[1].guest_addr");
        assert!(e.message.contains("overlaps memory[0]"), "{e}");
    }

    #[test]
    fn platform_windows() {
        for (addr, what) in [
            ("0xfee00000", "LAPIC"),
            ("0xfec00000", "IOAPIC"),
            ("0xfffbc000", "KVM TSS"),
        ] {
            let e = err(&file(
                "1",
                &format!("{LOW}[[memory]]\nguest_addr = {addr}\nsize = \"4KiB\"\n"),
                "",
            ));
            assert!(e.message.contains(what), "{e}");
            assert_eq!((e.line, e.col), (Some(7), Some(14)), "{e}");
        }
    }

    #[test]
    fn kernel_format_is_resolved_and_checked() {
        let c = parse(Path::new("x.toml"), &file("1", LOW, "")).unwrap();
        assert_eq!(c.kernel_format, super::KernelFormat::Elf);
        let e = err(&file("1", LOW, "format = \"bzimage\"\n"));
        assert_eq!(e.kind, ConfigErrorKind::KernelImage);
        assert_eq!(e.field.to_string(), "kernel.format");
        assert!(e.message.contains("is \"bzimage\" but"), "{e}");
        let junk = std::env::temp_dir().join(format!("berth-junk-{}", std::process::id()));
        std::fs::write(&junk, b"not a kernel").unwrap();
        let e = err(&file("1", LOW, "").replace("@KERNEL@", &junk.display().to_string()));
        assert!(e.message.contains("unknown format"), "{e}");
        let e = err(&file("1", LOW, "initrd = \"no-such-initrd\"\n"));
        assert_eq!(e.field.to_string(), "kernel.initrd");
    }

    #[test]
    fn missing_kernel_is_a_kernel_error() {
        let t = file("1", LOW, "").replace("@KERNEL@", "no-such-kernel.elf");
        let e = err(&t);
        assert_eq!(e.kind, ConfigErrorKind::KernelImage);
        assert_eq!(e.field.to_string(), "kernel.path");
    }

    #[test]
    fn cmdline_limits() {
        let long = "a".repeat(4096);
        let e = err(&file("1", LOW, &format!("cmdline = \"{long}\"\n")));
        assert_eq!(e.field.to_string(), "kernel.cmdline");
    }

    #[test]
    fn device_ports() {
        let e = err(&file(
            "1",
            LOW,
            "[[device]]\nkind = \"debug-exit\"\nport = 0x3fa\n",
        ));
        assert!(e.message.contains("COM1"), "{e}");
        assert_eq!(e.field.to_string(), "device[0].port");
        let e = err(&file("1", LOW, "[[device]]\nkind = \"debug-exit\"\nsize = 3\n"));
        assert_eq!(e.field.to_string(), "device[0].size");
        let two = "[[device]]\nkind = \"debug-exit\"\n[[device]]\nkind = \"debug-exit\"\nport = 0xf6\n";
        let e = err(&file("1", LOW, two));
        assert_eq!(e.field.to_string(), "device[1].port");
        let e = err(&file(
            "1",
            LOW,
            "[[device]]\nkind = \"debug-exit\"\nport = 0xfffe\n",
        ));
        assert!(e.message.contains("0xffff"), "{e}");
        let e = err(&file("1", LOW, "[[device]]\nkind = \"toaster\"\n"));
        assert_eq!(e.kind, ConfigErrorKind::Syntax);
    }

    #[test]
    fn hugepages_and_file_conflict() {
        let t = file("1", &format!("{LOW}[[memory]]\nguest_addr = 0x10000000\nsize = \"4KiB\"\nhugepages = true\nfile = \"Cargo.toml\"\n"), "");
        let e = err(&t);
        assert_eq!(e.field.to_string(), "memory[1].hugepages");
    }
}
