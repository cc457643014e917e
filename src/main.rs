//! The berth binary: all logic lives in the library.

fn main() {
    berth::clock::mark_start();
    env_logger::Builder::from_env(env_logger::Env::new().filter_or("BERTH_LOG", "warn")).init();
    berth::outcome::install_panic_hook();
    if let Err(e) = berth::seccomp::install_sigsys_handler() {
        eprintln!("berth: {e}");
        std::process::exit(berth::outcome::exit_code::HOST);
    }
    std::process::exit(berth::cli::main());
}
