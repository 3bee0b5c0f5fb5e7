//! dvsctl, built inside the test crate so the tests can find it (see Cargo.toml).

#![forbid(unsafe_code)]

use clap::Parser;

fn main() {
    let cli = dvsctl::cli::Cli::parse();
    if let Err(f) = dvsctl::main_with(cli) {
        eprintln!("dvsctl: {f}");
        std::process::exit(f.exit.code());
    }
}
