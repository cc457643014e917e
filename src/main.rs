//! The berth binary: all logic lives in the library.

fn main() {
    env_logger::Builder::from_env(env_logger::Env::new().filter_or("BERTH_LOG", "warn")).init();
    berth::outcome::install_panic_hook();
    std::process::exit(berth::cli::main());
}
