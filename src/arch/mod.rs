//! Architecture-specific code. berth runs x86-64 guests only.

pub mod x86_64;
