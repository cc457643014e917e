//! berth: a small, fast, deterministic micro-VMM on Linux KVM.
//!
//! The pipeline is parse ([`config`]) → plan ([`plan`], pure) → build and run.
#![deny(missing_docs)]

pub mod arch;
pub mod boot;
pub mod build;
pub mod bus;
pub mod cli;
pub mod clock;
pub mod config;
pub mod control;
pub mod devices;
pub mod error;
pub mod gdb;
pub mod kvm;
pub mod memory;
pub mod migrate;
pub mod outcome;
pub mod pause;
pub mod plan;
pub mod ram_loss;
pub mod runctl;
pub mod seccomp;
pub mod snapshot_cli;
pub mod state;
pub mod teardown;
pub mod vcpu;
pub mod vmm;
