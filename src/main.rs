//! The berth binary: all logic lives in the library.

fn main() {
    berth::clock::mark_start();
    // One malloc arena for all threads: berth's threads allocate little, and
    // each further glibc arena is 16-24 KiB more resident memory (issue 15).
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only sets an allocator parameter; no other thread runs yet.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
    env_logger::Builder::from_env(env_logger::Env::new().filter_or("BERTH_LOG", "warn")).init();
    berth::outcome::install_panic_hook();
    if let Err(e) = berth::seccomp::install_sigsys_handler() {
        eprintln!("berth: {e}");
        std::process::exit(berth::outcome::exit_code::HOST);
    }
    std::process::exit(berth::cli::main());
}
