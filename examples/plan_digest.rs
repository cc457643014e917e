//! Using berth as a library: parse a machine file, compute its plan and
//! print the memslots and the plan digest, without touching /dev/kvm.
//!
//! `cargo run --example plan_digest -- configs/default.toml`

fn main() {
    let Some(file) = std::env::args().nth(1) else {
        eprintln!("usage: plan_digest MACHINE.toml");
        std::process::exit(2);
    };
    let config = match berth::config::load(std::path::Path::new(&file)) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    let plan = berth::plan::plan(&config);
    for s in &plan.memslots {
        println!("slot {} {} at {} size {}", s.slot, s.name, s.guest_addr, s.size);
    }
    match berth::plan::dump::digest(&plan) {
        Ok(d) => println!("plan-sha256:{d}"),
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(3);
        }
    }
}
