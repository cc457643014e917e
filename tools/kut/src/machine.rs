//! One test → one berth machine file and its env module.
//!
//! The test's QEMU command line (`-smp N -append ARGS extra_params`, split
//! by bash exactly as KUT's `eval` does) is read option by option into a
//! [`Machine`]; [`Machine::toml`] writes the machine file. The devices every
//! test gets are [`DEVICES`]: adding a berth device kind to the KUT machines
//! is one line there.

use std::fmt::Write as _;
use std::path::Path;

/// The `[[device]]` tables of every generated machine, standing in for what
/// KUT's `x86/run` gives QEMU (`-device pc-testdev -device
/// isa-debug-exit,iobase=0xf4,iosize=0x4 -device pci-testdev`) and what
/// QEMU's pc machine has built in (fw_cfg, the PCI host bridge). One line
/// per device, its keys separated by `, `.
pub const DEVICES: &[&str] = &[
    r#"kind = "debug-exit", port = 0xf4, size = 4"#,
    r#"kind = "pc-testdev""#,
    r#"kind = "fw-cfg""#,
    r#"kind = "pci", testdev = true"#,
];

/// QEMU `-device` drivers the machine above already stands in for.
const PROVIDED_QEMU_DEVICES: &[&str] = &["pc-testdev", "isa-debug-exit", "pci-testdev"];

/// Whether the generator puts the kernel path first in `[kernel] cmdline`
/// itself (KUT's argv[0]). berth's multiboot loader already hands the guest
/// QEMU's `<kernel path> <cmdline>`, so it does not.
const ARGV0_IN_CMDLINE: bool = false;

/// Guest RAM when the test gives no `-m` (QEMU's pc default, which KUT's
/// x86/run does not change).
pub const DEFAULT_MEM_MIB: u64 = 128;

/// Above this much RAM QEMU's pc machine keeps 3 GiB below 4 GiB and puts
/// the rest at 4 GiB; berth must keep the IOAPIC/LAPIC window free too.
const LOWMEM_LIMIT: u64 = 0xe000_0000;
const LOWMEM_SPLIT: u64 = 0xc000_0000;

/// What one test's QEMU options ask for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Machine {
    /// `-smp`.
    pub vcpus: u32,
    /// `-m`, in MiB.
    pub mem_mib: u64,
    /// `-append`.
    pub append: Option<String>,
    /// `-machine pit=off`.
    pub pit: bool,
    /// `-machine kernel-irqchip=split`.
    pub split_irqchip: bool,
    /// QEMU options berth has no counterpart for and which do not stop the
    /// test from running (`-cpu`, `-machine vmport=on`, …): written into the
    /// machine file as comments.
    pub ignored: Vec<String>,
    /// `-device` drivers berth lacks: the test is skipped.
    pub missing_devices: Vec<String>,
}

/// Splits `words` the way KUT's `eval "$cmdline"` does (quotes removed,
/// backticks run), but without pathname expansion, running bash in `cwd`.
/// Line breaks (a multi-line `"""` value, with or without a trailing
/// backslash) separate words.
pub fn shell_words(words: &str, cwd: &Path) -> Result<Vec<String>, String> {
    let words = words.replace("\\\n", " ").replace('\n', " ");
    if words.trim().is_empty() {
        return Ok(Vec::new());
    }
    let out = std::process::Command::new("bash")
        .arg("-c")
        .arg(format!("set -f; printf '%s\\0' {words}"))
        .current_dir(cwd)
        .output()
        .map_err(|e| format!("bash: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "bash could not expand `{words}`: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(text.split_terminator('\0').map(String::from).collect())
}

/// QEMU's `-m` value: MiB by default, or with a k/M/G/T suffix.
fn parse_mem(v: &str) -> Option<u64> {
    let v = v.strip_prefix("size=").unwrap_or(v);
    let v = v.split(',').next()?;
    let (num, shift) = match v.chars().last()? {
        'k' | 'K' => (&v[..v.len() - 1], -10i32),
        'm' | 'M' => (&v[..v.len() - 1], 0),
        'g' | 'G' => (&v[..v.len() - 1], 10),
        't' | 'T' => (&v[..v.len() - 1], 20),
        _ => (v, 0),
    };
    let n: u64 = num.parse().ok()?;
    Some(if shift >= 0 { n << shift } else { n >> (-shift) })
}

impl Machine {
    /// Reads a QEMU argument vector (after shell splitting).
    pub fn from_qemu_args(args: &[String]) -> Result<Machine, String> {
        let mut m = Machine {
            vcpus: 1,
            mem_mib: DEFAULT_MEM_MIB,
            append: None,
            pit: true,
            split_irqchip: false,
            ignored: Vec::new(),
            missing_devices: Vec::new(),
        };
        let mut it = args.iter();
        while let Some(opt) = it.next() {
            let mut value = |name: &str| it.next().cloned().ok_or_else(|| format!("{name} needs a value"));
            match opt.trim_start_matches('-') {
                "smp" => {
                    let v = value(opt)?;
                    let n = v.split(',').next().unwrap_or("").trim_start_matches("cpus=");
                    m.vcpus = n.parse().map_err(|_| format!("-smp {v}: not a CPU count"))?;
                }
                "m" => {
                    let v = value(opt)?;
                    m.mem_mib = parse_mem(&v).ok_or_else(|| format!("-m {v}: not a size"))?;
                }
                "append" => m.append = Some(value(opt)?),
                "machine" | "M" => {
                    let v = value(opt)?;
                    for part in v.split(',') {
                        match part {
                            "pit=off" => m.pit = false,
                            "kernel-irqchip=split" => {
                                m.split_irqchip = true;
                                m.pit = false;
                            }
                            "pc" | "accel=kvm" | "kernel-irqchip=on" => {}
                            other => m.ignored.push(format!("-machine {other}")),
                        }
                    }
                }
                "device" => {
                    let v = value(opt)?;
                    let driver = v.split(',').next().unwrap_or("").to_string();
                    if !PROVIDED_QEMU_DEVICES.contains(&driver.as_str()) {
                        m.missing_devices.push(driver);
                    }
                }
                "cpu" => {
                    let v = value(opt)?;
                    m.ignored
                        .push(format!("-cpu {v} (berth gives the host's supported CPUID)"));
                }
                "enable-kvm" => {}
                "overcommit" | "global" => {
                    let v = value(opt)?;
                    m.ignored.push(format!("{opt} {v}"));
                }
                _ => m.ignored.push(opt.clone()),
            }
        }
        Ok(m)
    }

    /// The RAM regions: (guest address, MiB).
    pub fn memory(&self) -> Vec<(u64, u64)> {
        let bytes = self.mem_mib << 20;
        if bytes < LOWMEM_LIMIT {
            vec![(0, self.mem_mib)]
        } else {
            vec![(0, LOWMEM_SPLIT >> 20), (1 << 32, (bytes - LOWMEM_SPLIT) >> 20)]
        }
    }

    /// The env module (KUT's `KEY=VALUE` lines, read by lib/argv.c): what
    /// fw_cfg tells the test under QEMU.
    pub fn env(&self) -> String {
        format!("NR_CPUS={}\nMEMSIZE={}\n", self.vcpus, self.mem_mib)
    }

    /// The machine file. `kernel` and `env` are written as given (relative
    /// to the machine file, or absolute).
    pub fn toml(&self, test: &str, kernel: &str, env: &str) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "# kvm-unit-tests `{test}`, generated by tools/kut (make kut); rerun by hand:"
        );
        let _ = writeln!(s, "#   berth run target/kut/machines/{test}.toml");
        for i in &self.ignored {
            let _ = writeln!(s, "# QEMU option without a berth counterpart: {i}");
        }
        let _ = writeln!(s, "\n[machine]\nname = \"kut-{test}\"\nvcpus = {}", self.vcpus);
        for (addr, mib) in self.memory() {
            let _ = writeln!(s, "\n[[memory]]\nguest_addr = {addr:#x}\nsize = \"{mib}MiB\"");
        }
        if self.split_irqchip {
            let _ = writeln!(s, "\n[irqchip]\nmode = \"split\"");
        } else if !self.pit {
            let _ = writeln!(s, "\n[irqchip]\nmode = \"kernel\"\npit = false");
        }
        let mut cmdline = String::new();
        if ARGV0_IN_CMDLINE {
            cmdline.push_str(kernel);
        }
        if let Some(a) = &self.append {
            if !cmdline.is_empty() {
                cmdline.push(' ');
            }
            cmdline.push_str(a);
        }
        let _ = writeln!(
            s,
            "\n[kernel]\npath = {}\nformat = \"multiboot\"\ncmdline = {}\ninitrd = {}",
            quote(kernel),
            quote(&cmdline),
            quote(env)
        );
        let _ = writeln!(s, "\n[serial]\noutput = \"stdout\"");
        for d in DEVICES {
            let _ = writeln!(s, "\n[[device]]");
            for kv in d.split(", ") {
                let _ = writeln!(s, "{kv}");
            }
        }
        s
    }
}

/// A TOML basic string.
pub fn quote(s: &str) -> String {
    let mut q = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => q.push_str("\\\""),
            '\\' => q.push_str("\\\\"),
            c if c.is_control() => {
                let _ = write!(q, "\\u{:04x}", c as u32);
            }
            c => q.push(c),
        }
    }
    q.push('"');
    q
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(s: &str) -> Vec<String> {
        shell_words(s, Path::new("/")).unwrap()
    }

    #[test]
    fn shell_words_match_eval() {
        assert_eq!(words("-smp 1 -append 'cpuid'"), ["-smp", "1", "-append", "cpuid"]);
        assert_eq!(
            words("-append \"a b*\" -cpu max\n-m 4g"),
            ["-append", "a b*", "-cpu", "max", "-m", "4g"]
        );
        assert_eq!(words("-append ept_access*"), ["-append", "ept_access*"]);
        let w = words("-append \"1 `echo 2`\"");
        assert_eq!(w, ["-append", "1 2"]);
        assert!(words("  ").is_empty());
    }

    #[test]
    fn qemu_options_become_a_machine() {
        let m = Machine::from_qemu_args(&words(
            "-smp 2 -append 'x y' -cpu max,+svm -m 4g -machine pit=off",
        ))
        .unwrap();
        assert_eq!(m.vcpus, 2);
        assert_eq!(m.mem_mib, 4096);
        assert_eq!(m.append.as_deref(), Some("x y"));
        assert!(!m.pit);
        assert_eq!(m.memory(), [(0, 3072), (1 << 32, 1024)]);
        assert_eq!(m.env(), "NR_CPUS=2\nMEMSIZE=4096\n");
        let m = Machine::from_qemu_args(&words(
            "-smp 4 -M q35,kernel-irqchip=split -device intel-iommu,intremap=on -device edu",
        ))
        .unwrap();
        assert!(m.split_irqchip);
        assert_eq!(m.missing_devices, ["intel-iommu", "edu"]);
        assert_eq!(m.ignored, ["-machine q35"]);
        let m = Machine::from_qemu_args(&words("-smp 1 -m 2560")).unwrap();
        assert_eq!(m.memory(), [(0, 2560)]);
        assert!(Machine::from_qemu_args(&words("-smp x")).is_err());
    }

    #[test]
    fn machine_file_is_valid_toml_with_every_device() {
        let m = Machine::from_qemu_args(&words("-smp 2 -append \"a \\\"q\\\"\" -machine pit=off")).unwrap();
        let text = m.toml("t", "../build/x86/t.flat", "t.env");
        let v: toml::Table = text.parse().unwrap();
        assert_eq!(v["machine"]["vcpus"].as_integer(), Some(2));
        assert_eq!(v["irqchip"]["pit"].as_bool(), Some(false));
        let cmdline = v["kernel"]["cmdline"].as_str().unwrap();
        assert!(cmdline.ends_with("a \"q\""), "{cmdline}");
        assert_eq!(v["device"].as_array().unwrap().len(), DEVICES.len());
        assert!(text.contains("# QEMU option") || m.ignored.is_empty());
    }
}
