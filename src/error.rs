//! berth's top-level error, and the one place errors become exit codes.

use crate::build::BuildError;
use crate::config::{ConfigError, ConfigErrorKind};
use crate::kvm::HostError;
use crate::outcome::exit_code;
use crate::plan::dump::DumpError;

/// Anything that stops berth before or around a run.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Machine file.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Rendering the plan.
    #[error(transparent)]
    Dump(#[from] DumpError),
    /// `--expect-plan` did not match.
    #[error("{file}: plan digest is {got}, but --expect-plan wants {want}; refusing to boot")]
    PlanMismatch {
        /// Machine file.
        file: String,
        /// Expected.
        want: String,
        /// Actual.
        got: String,
    },
    /// Host KVM.
    #[error(transparent)]
    Host(#[from] HostError),
    /// Building the VM.
    #[error(transparent)]
    Build(#[from] BuildError),
    /// Loading the kernel failed at build time (before any VM exists).
    #[error("{file}: kernel.path: {source}")]
    Kernel {
        /// Machine file (with line:col of kernel.path when known).
        file: String,
        /// What went wrong.
        source: crate::boot::KernelError,
    },
    /// Running the VM (threads, signals).
    #[error("{0}")]
    Run(String),
}

impl Error {
    /// The process exit code (README "Exit codes").
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Config(c) => match c.kind {
                ConfigErrorKind::KernelImage => exit_code::KERNEL,
                _ => exit_code::USAGE,
            },
            Error::PlanMismatch { .. } => exit_code::USAGE,
            Error::Build(BuildError::Kernel(_)) | Error::Kernel { .. } => exit_code::KERNEL,
            Error::Build(BuildError::Usage(_)) => exit_code::USAGE,
            Error::Dump(_) | Error::Host(_) | Error::Build(_) | Error::Run(_) => exit_code::HOST,
        }
    }
}
