//! Command-line overrides of the machine file, for test runners:
//! `--kernel`, `--append`, `--initrd`, `--vcpus` and `--memory`, with QEMU's
//! meanings (`-kernel`, `-append`, `-initrd`, `-smp`, `-m`).
//!
//! They are applied to the parsed file before validation, so the plan shows
//! the result and every check runs on it; an error about an overridden field
//! names the option instead of a place in the file. Paths given on the
//! command line are relative to the current directory, not to the machine
//! file, and are shown in the plan as typed. `--kernel` also sets the format
//! to `auto`: the file's `format` described the file's own image.

use super::locate::{FieldPath, Step};
use super::schema::{KernelFormat, MachineFile, MemoryRegion};
use super::size::Size;
use std::path::{Path, PathBuf};

/// The overrides given on the command line (all optional).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Overrides {
    /// `--kernel PATH`: replaces `kernel.path`.
    pub kernel: Option<PathBuf>,
    /// `--append TEXT`: replaces `kernel.cmdline`.
    pub append: Option<String>,
    /// `--initrd PATH`: replaces `kernel.initrd`.
    pub initrd: Option<PathBuf>,
    /// `--vcpus N`: replaces `machine.vcpus`.
    pub vcpus: Option<u32>,
    /// `--memory SIZE`: the machine's one RAM region gets this size.
    pub memory: Option<u64>,
}

/// An override that cannot be applied: the option and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OverrideError {
    /// The option, e.g. `--memory`.
    pub option: &'static str,
    /// What is wrong.
    pub message: String,
}

impl Overrides {
    /// Applies the overrides to the parsed machine file.
    pub(super) fn apply(&self, m: &mut MachineFile) -> Result<(), OverrideError> {
        if let Some(k) = &self.kernel {
            // The file's `format` described its own image: a new one is
            // detected, as QEMU's -kernel does.
            m.kernel.path = k.clone();
            m.kernel.format = KernelFormat::Auto;
        }
        if let Some(a) = &self.append {
            m.kernel.cmdline = a.clone();
        }
        if let Some(i) = &self.initrd {
            m.kernel.initrd = Some(i.clone());
        }
        if let Some(n) = self.vcpus {
            m.machine.vcpus = n;
        }
        if let Some(size) = self.memory {
            match m.memory.len() {
                0 => m.memory.push(MemoryRegion {
                    name: None,
                    guest_addr: 0,
                    size: Size(size),
                    readonly: false,
                    shared: false,
                    hugepages: false,
                    dirty_log: false,
                    file: None,
                }),
                1 => m.memory[0].size = Size(size),
                n => {
                    return Err(OverrideError {
                        option: "--memory",
                        message: format!(
                            "the machine file has {n} [[memory]] regions; --memory sizes a machine with one"
                        ),
                    })
                }
            }
        }
        Ok(())
    }

    /// The option that set `field` (or the value a check of `field` is
    /// about), if one did.
    pub fn option_for(&self, field: &FieldPath) -> Option<&'static str> {
        let key = |i: usize| match field.0.get(i) {
            Some(Step::Key(k)) => Some(k.as_str()),
            _ => None,
        };
        match (key(0)?, key(1)) {
            ("machine", Some("vcpus")) => self.vcpus.map(|_| "--vcpus"),
            ("kernel", Some("path" | "format")) => self.kernel.as_ref().map(|_| "--kernel"),
            ("kernel", Some("cmdline")) => self.append.as_ref().map(|_| "--append"),
            ("kernel", Some("initrd")) => self.initrd.as_ref().map(|_| "--initrd"),
            ("memory", _) => self.memory.map(|_| "--memory"),
            _ => None,
        }
    }

    /// Whether `p` is a path given on the command line (and so relative to
    /// the current directory rather than to the machine file).
    pub fn from_command_line(&self, p: &Path) -> bool {
        self.kernel.as_deref() == Some(p) || self.initrd.as_deref() == Some(p)
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{kernel, parse_with};
    use super::*;

    const TWO: &str = "[machine]\nvcpus = 2\n[[memory]]\nguest_addr = 0\nsize = \"64MiB\"\n[kernel]\npath = \"@KERNEL@\"\ncmdline = \"a\"\n";

    #[test]
    fn each_override_replaces_its_field() {
        let o = Overrides {
            append: Some("b c".into()),
            vcpus: Some(4),
            memory: Some(128 << 20),
            ..Overrides::default()
        };
        let c = parse_with(Path::new("x.toml"), TWO, &o).unwrap();
        assert_eq!(c.machine.machine.vcpus, 4);
        assert_eq!(c.machine.kernel.cmdline, "b c");
        assert_eq!(c.machine.memory[0].size.bytes(), 128 << 20);
        let p = crate::plan::plan(&c);
        assert_eq!(p.machine.vcpus, 4);
        assert_eq!(p.memslots[0].size.0, 128 << 20);
    }

    #[test]
    fn errors_name_the_option() {
        let o = Overrides {
            vcpus: Some(300),
            ..Overrides::default()
        };
        let e = parse_with(Path::new("x.toml"), TWO, &o).unwrap_err();
        assert_eq!(e.to_string(), "--vcpus: must be between 1 and 254, got 300");
        assert_eq!(e.kind, super::super::ConfigErrorKind::Invalid);
        let o = Overrides {
            memory: Some(4095),
            ..Overrides::default()
        };
        let e = parse_with(Path::new("x.toml"), TWO, &o).unwrap_err();
        assert!(e.to_string().starts_with("--memory: "), "{e}");
        let o = Overrides {
            kernel: Some("/nonexistent/kernel".into()),
            ..Overrides::default()
        };
        let e = parse_with(Path::new("x.toml"), TWO, &o).unwrap_err();
        assert!(e.to_string().starts_with("--kernel: "), "{e}");
        assert_eq!(e.kind, super::super::ConfigErrorKind::KernelImage);
    }

    #[test]
    fn memory_refuses_several_regions() {
        let two_regions = TWO.replace(
            "[kernel]",
            "[[memory]]\nguest_addr = 0x10000000\nsize = \"64MiB\"\n[kernel]",
        );
        let o = Overrides {
            memory: Some(1 << 30),
            ..Overrides::default()
        };
        let e = parse_with(Path::new("x.toml"), &two_regions, &o).unwrap_err();
        assert_eq!(
            e.to_string(),
            "--memory: the machine file has 2 [[memory]] regions; --memory sizes a machine with one"
        );
    }

    #[test]
    fn command_line_paths_are_relative_to_the_current_directory() {
        // The machine file lives elsewhere; the kernel is named as typed.
        let o = Overrides {
            kernel: Some(PathBuf::from(kernel())),
            ..Overrides::default()
        };
        let c = parse_with(Path::new("/elsewhere/x.toml"), TWO, &o).unwrap();
        assert_eq!(c.resolve(Path::new(kernel())), PathBuf::from(kernel()));
        assert_eq!(
            c.resolve(Path::new("rel.img")),
            PathBuf::from("/elsewhere/rel.img")
        );
        let o = Overrides {
            initrd: Some("rel.img".into()),
            ..Overrides::default()
        };
        let c = Overrides::from_command_line(&o, Path::new("rel.img"));
        assert!(c);
    }
}
