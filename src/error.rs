//! berth's top-level error, and the one place errors become exit codes.

use crate::build::BuildError;
use crate::config::{ConfigError, ConfigErrorKind};
use crate::control::ControlError;
use crate::kvm::HostError;
use crate::migrate::MigrateError;
use crate::outcome::exit_code;
use crate::plan::dump::DumpError;
use crate::state::dir::DirError;
use crate::state::restore::RestoreError;

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
    /// The control socket or `berth ctl`.
    #[error(transparent)]
    Control(#[from] crate::control::ControlError),
    /// `--gdb`: a bad address, or the socket could not be created.
    #[error(transparent)]
    Gdb(#[from] crate::gdb::GdbError),
    /// A snapshot to restore is unusable (found before any VM exists).
    #[error(transparent)]
    Restore(#[from] crate::state::restore::RestoreError),
    /// Restoring the saved state into the new VM failed.
    #[error("{dir}: cannot restore the saved state: {source}")]
    RestoreState {
        /// Snapshot.
        dir: String,
        /// Why.
        source: crate::state::StateError,
    },
    /// A live migration (`--incoming`).
    #[error("migration: {0}")]
    Migrate(#[from] crate::migrate::MigrateError),
    /// `--snapshot-to` names a directory that exists.
    #[error("--snapshot-to {0}: the directory exists already; refusing to overwrite a snapshot")]
    SnapshotToExists(String),
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
            Error::Control(c) => match c {
                ControlError::Bind { .. } | ControlError::Usage(_) => exit_code::USAGE,
                ControlError::Connect { .. } => exit_code::HOST,
                ControlError::Replied(_) => exit_code::CONTROL_REPLY,
            },
            Error::Restore(r) => match r {
                RestoreError::Dir(DirError::OtherMachine { .. }) => exit_code::SNAPSHOT_OTHER_MACHINE,
                RestoreError::Dir(DirError::Exists(_) | DirError::Write { .. }) => exit_code::SNAPSHOT_WRITE,
                RestoreError::Dir(_) => exit_code::SNAPSHOT_BAD,
                RestoreError::Config(c) => match c.kind {
                    ConfigErrorKind::KernelImage => exit_code::KERNEL,
                    _ => exit_code::USAGE,
                },
                RestoreError::Dump(_) | RestoreError::Memory(_) => exit_code::HOST,
            },
            Error::RestoreState { .. } => exit_code::SNAPSHOT_BAD,
            Error::SnapshotToExists(_) => exit_code::SNAPSHOT_WRITE,
            Error::Gdb(_) => exit_code::USAGE,
            Error::Migrate(m) => match m {
                MigrateError::Address(_) | MigrateError::Bind(_) => exit_code::USAGE,
                MigrateError::OtherMachine { .. } => exit_code::MIGRATE_OTHER_MACHINE,
                MigrateError::Stream(_)
                | MigrateError::Refused(_)
                | MigrateError::State(_)
                | MigrateError::Aborted(_) => exit_code::MIGRATE_FAILED,
            },
        }
    }
}
