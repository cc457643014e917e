//! Parse the machine file: TOML → [`MachineFile`] (serde, unknown keys
//! refused) → validated [`Config`]. Every error names the file, the line and
//! column, and the field path. Nothing here touches /dev/kvm.

pub mod locate;
pub mod overrides;
pub mod schema;
pub mod size;
mod validate;
mod validate_irq;

pub use validate_irq::{standard_routes, MAX_GSI, PC_GSIS};

pub use locate::FieldPath;
pub use overrides::Overrides;
pub use schema::*;
pub use size::{parse_duration, Millis, Size};

use std::fmt;
use std::path::{Path, PathBuf};
use toml::de::DeTable;

/// What kind of mistake a [`ConfigError`] reports; decides the exit code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConfigErrorKind {
    /// The file can't be read.
    Unreadable,
    /// TOML syntax, unknown key or wrong type.
    Syntax,
    /// A value is out of range or contradicts another.
    Invalid,
    /// The kernel image named by `kernel.path` can't be read.
    KernelImage,
}

/// A machine-file error with its location.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    /// The machine file, as given on the command line.
    pub file: PathBuf,
    /// 1-based line, when known.
    pub line: Option<u32>,
    /// 1-based column, when known.
    pub col: Option<u32>,
    /// The field, e.g. `memory[1].size`.
    pub field: FieldPath,
    /// What is wrong.
    pub message: String,
    /// Which class of error.
    pub kind: ConfigErrorKind,
    /// The command-line option (`--vcpus`…) that set the field, when one
    /// did: the message then names it instead of a place in the file.
    pub option: Option<&'static str>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(option) = self.option {
            return write!(f, "{option}: {}", self.message);
        }
        write!(f, "{}", self.file.display())?;
        if let (Some(l), Some(c)) = (self.line, self.col) {
            write!(f, ":{l}:{c}")?;
        }
        write!(f, ": {}: {}", self.field, self.message)
    }
}

/// A parsed and validated machine file.
#[derive(Clone, Debug)]
pub struct Config {
    /// The machine file path as given.
    pub file: PathBuf,
    /// Directory relative paths in the file are resolved against.
    pub dir: PathBuf,
    /// The file's contents.
    pub machine: MachineFile,
    /// The kernel format, resolved from the image when the file says "auto".
    pub kernel_format: KernelFormat,
    /// Where the image's loadable segments land, `[start, end)` in image
    /// order, read from the image with its format (empty when its headers
    /// are unreadable: the loader then says why). The plan places the boot
    /// structures around them.
    pub kernel_segments: Vec<(u64, u64)>,
    /// The file's text (to locate fields in later messages).
    pub text: String,
    /// Command-line overrides applied to the file.
    pub overrides: Overrides,
}

impl Config {
    /// `FILE:LINE:COL` of a dotted field path such as `kernel.path`, for
    /// messages about the file that arise after parsing.
    pub fn locate_field(&self, dotted: &str) -> String {
        let mut path = FieldPath::root();
        for k in dotted.split('.') {
            path = path.key(k);
        }
        if let Some(option) = self.overrides.option_for(&path) {
            return option.to_string();
        }
        let pos = DeTable::parse(&self.text)
            .ok()
            .and_then(|doc| locate::span_of(&doc, &path))
            .map(|s| locate::line_col(&self.text, s.start));
        match pos {
            Some((l, c)) => format!("{}:{l}:{c}", self.file.display()),
            None => self.file.display().to_string(),
        }
    }

    /// Resolves a path written in the machine file against its directory
    /// (a path given on the command line stays relative to the current one).
    pub fn resolve(&self, p: &Path) -> PathBuf {
        if p.is_absolute() || self.overrides.from_command_line(p) {
            p.to_path_buf()
        } else {
            self.dir.join(p)
        }
    }
}

/// Reads, parses and validates a machine file.
pub fn load(file: &Path) -> Result<Config, ConfigError> {
    load_with(file, &Overrides::default())
}

/// [`load`], with command-line overrides applied before validation.
pub fn load_with(file: &Path, overrides: &Overrides) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(file).map_err(|e| ConfigError {
        file: file.to_path_buf(),
        line: None,
        col: None,
        field: FieldPath::root(),
        message: format!("cannot read machine file: {e}"),
        kind: ConfigErrorKind::Unreadable,
        option: None,
    })?;
    parse_with(file, &text, overrides)
}

/// Parses and validates machine-file text; `file` is used for messages and
/// to resolve relative paths.
pub fn parse(file: &Path, text: &str) -> Result<Config, ConfigError> {
    parse_with(file, text, &Overrides::default())
}

/// [`parse`], with command-line overrides applied before validation.
pub fn parse_with(file: &Path, text: &str, overrides: &Overrides) -> Result<Config, ConfigError> {
    let located = |span: Option<std::ops::Range<usize>>, field: FieldPath, message: String, kind| {
        let (line, col) = match span {
            Some(s) => {
                let (l, c) = locate::line_col(text, s.start);
                (Some(l as u32), Some(c as u32))
            }
            None => (None, None),
        };
        ConfigError {
            file: file.to_path_buf(),
            line,
            col,
            option: None,
            field,
            message,
            kind,
        }
    };
    // The spanned document only serves error messages: it is parsed again
    // only on the way to one (a large file's parse costs milliseconds).
    let doc = || DeTable::parse(text).ok();
    let de = toml::Deserializer::parse(text).map_err(|e| {
        located(
            e.span(),
            FieldPath::root(),
            first_line(e.message()),
            ConfigErrorKind::Syntax,
        )
    })?;
    let mut machine: MachineFile = serde::Deserialize::deserialize(de).map_err(|e: toml::de::Error| {
        let message = first_line(e.message());
        // An unknown key is named in the message; point at the key itself.
        let unknown = message
            .strip_prefix("unknown field `")
            .and_then(|m| m.split('`').next());
        let doc = doc();
        // toml's span names the innermost value it was deserializing.
        let mut field = match (&doc, e.span()) {
            (Some(doc), Some(s)) => locate::path_at(doc, &s),
            _ => FieldPath::root(),
        };
        // Inside an internally tagged [[device]] table the span is the whole
        // array's: find the entry that fails with this message.
        if field.0.first() == Some(&locate::Step::Key("device".into())) && field.0.len() <= 2 {
            if let Some(i) = doc.as_ref().and_then(|d| failing_device(d, &message)) {
                field = FieldPath::root().key("device").index(i);
            }
        }
        if let Some(key) = unknown {
            if field.0.last() != Some(&locate::Step::Key(key.to_string())) {
                field = field.key(key);
            }
        }
        let span = doc.and_then(|doc| {
            if unknown.is_some() {
                locate::key_span_of(&doc, &field)
            } else {
                locate::span_of(&doc, &field)
            }
        });
        located(span.or(e.span()), field, message, ConfigErrorKind::Syntax)
    })?;
    overrides.apply(&mut machine).map_err(|e| ConfigError {
        file: file.to_path_buf(),
        line: None,
        col: None,
        field: FieldPath::root(),
        message: e.message,
        kind: ConfigErrorKind::Invalid,
        option: Some(e.option),
    })?;
    let dir = file
        .parent()
        .map(Path::to_path_buf)
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or_else(|| PathBuf::from("."));
    let mut config = Config {
        file: file.to_path_buf(),
        dir,
        kernel_format: machine.kernel.format,
        kernel_segments: Vec::new(),
        machine,
        text: text.to_string(),
        overrides: overrides.clone(),
    };
    let locate_invalid = |v: validate::Invalid| {
        // A field set on the command line is named by its option.
        let option = overrides.option_for(&v.field);
        let span = match option {
            Some(_) => None,
            None => doc().and_then(|doc| locate::span_of(&doc, &v.field)),
        };
        ConfigError {
            option,
            ..located(span, v.field, v.message, v.kind)
        }
    };
    (config.kernel_format, config.kernel_segments) = validate::validate(&config).map_err(locate_invalid)?;
    // The image must leave the tables that cannot move alone, and room for
    // the structures it displaces (crate::boot::placement).
    crate::plan::boot::layout_of(&config).map_err(|o| {
        locate_invalid(validate::Invalid {
            field: FieldPath::of("kernel", None, Some("path")),
            message: format!(
                "kernel image {}: {o}",
                config.resolve(&config.machine.kernel.path).display()
            ),
            kind: ConfigErrorKind::KernelImage,
        })
    })?;
    Ok(config)
}

/// The first `[[device]]` entry of `doc` that, deserialized on its own, fails
/// with `message` (only on the way to an error message; the same deserializer
/// as the whole file's, so no code of its own).
fn failing_device(doc: &toml::Spanned<DeTable<'_>>, message: &str) -> Option<usize> {
    let (_, devices) = doc
        .get_ref()
        .iter()
        .find(|(k, _)| k.get_ref().as_ref() == "device")?;
    devices.get_ref().as_array()?.iter().position(|d| {
        <DeviceConfig as serde::Deserialize>::deserialize(toml::de::ValueDeserializer::from(d.clone()))
            .is_err_and(|e| first_line(e.message()) == message)
    })
}

fn first_line(m: &str) -> String {
    m.trim().lines().next().unwrap_or("").to_string()
}

/// Unit-test support: a minimal ELF64 header on disk to name as a kernel
/// (detected as format "elf"; never loaded by unit tests).
#[cfg(test)]
pub(crate) mod test_support {
    use std::path::PathBuf;
    use std::sync::OnceLock;

    /// Path of the fake kernel, as a TOML string literal body.
    pub fn kernel() -> &'static str {
        static PATH: OnceLock<String> = OnceLock::new();
        PATH.get_or_init(|| {
            let p: PathBuf =
                std::env::temp_dir().join(format!("berth-unit-kernel-{}.elf", std::process::id()));
            let mut b = vec![0u8; 64];
            b[..5].copy_from_slice(&[0x7f, b'E', b'L', b'F', 2]);
            std::fs::write(&p, b).expect("write fake kernel");
            p.display().to_string()
        })
    }

    /// `config::parse` with `@KERNEL@` replaced by the fake kernel's path.
    pub fn parse(file: &std::path::Path, text: &str) -> Result<super::Config, super::ConfigError> {
        super::parse(file, &text.replace("@KERNEL@", kernel()))
    }

    /// [`parse`] with command-line overrides.
    pub fn parse_with(
        file: &std::path::Path,
        text: &str,
        o: &super::Overrides,
    ) -> Result<super::Config, super::ConfigError> {
        super::parse_with(file, &text.replace("@KERNEL@", kernel()), o)
    }
}

#[cfg(test)]
mod tests {
    use super::test_support::parse;
    use super::*;

    pub(crate) fn minimal(extra: &str) -> String {
        format!(
            "[machine]\nvcpus = 1\n\n[[memory]]\nguest_addr = 0\nsize = \"64MiB\"\n\n[kernel]\npath = \"@KERNEL@\"\n{extra}"
        )
    }

    fn err(text: &str) -> ConfigError {
        parse(Path::new("x.toml"), text).unwrap_err()
    }

    #[test]
    fn minimal_file_parses() {
        let c = parse(Path::new("x.toml"), &minimal("")).unwrap();
        assert_eq!(c.machine.machine.vcpus, 1);
        assert_eq!(c.machine.memory[0].size.bytes(), 64 << 20);
        assert_eq!(c.dir, PathBuf::from("."));
    }

    #[test]
    fn unknown_key_is_refused_with_location() {
        let e = err(&minimal("colour = \"red\"\n"));
        assert_eq!(e.kind, ConfigErrorKind::Syntax);
        assert_eq!(e.line, Some(10));
        assert_eq!(e.col, Some(1));
        assert!(e.message.contains("unknown field `colour`"), "{e}");
        assert_eq!(e.field.to_string(), "kernel.colour");
    }

    #[test]
    fn syntax_error_has_location() {
        let e = err("[machine\nvcpus = 1\n");
        assert_eq!(e.kind, ConfigErrorKind::Syntax);
        assert_eq!(e.line, Some(1));
        assert!(e.to_string().starts_with("x.toml:1:"), "{e}");
    }

    #[test]
    fn wrong_type_names_field() {
        let e = err(&minimal("").replace("vcpus = 1", "vcpus = \"two\""));
        assert_eq!(e.field.to_string(), "machine.vcpus");
        assert_eq!((e.line, e.col), (Some(2), Some(9)));
    }

    #[test]
    fn bad_size_names_field() {
        let e = err(&minimal("").replace("\"64MiB\"", "\"64 MB\""));
        assert_eq!(e.field.to_string(), "memory[0].size");
        assert!(e.message.contains("unknown unit"), "{e}");
    }

    #[test]
    fn display_format() {
        let e = err(&minimal("").replace("\"64MiB\"", "4095"));
        assert_eq!(
            e.to_string(),
            "x.toml:6:8: memory[0].size: must be a non-zero multiple of 4 KiB, got 0xfff"
        );
    }

    #[test]
    fn serial_output_forms() {
        for (v, want) in [
            ("\"null\"", SerialOutputConfig::Named(SerialSink::Null)),
            ("\"stdout\"", SerialOutputConfig::Named(SerialSink::Stdout)),
            (
                "{ file = \"out.txt\" }",
                SerialOutputConfig::File {
                    file: "out.txt".into(),
                },
            ),
        ] {
            let c = parse(
                Path::new("x.toml"),
                &minimal(&format!("[serial]\noutput = {v}\n")),
            )
            .unwrap();
            assert_eq!(c.machine.serial.output, want);
        }
        let e = err(&minimal("[serial]\noutput = \"tty\"\n"));
        assert_eq!(e.field.to_string(), "serial.output");
    }
}
