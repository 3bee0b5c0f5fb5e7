//! evsd, built inside the test crate so the tests can find it (see Cargo.toml).

fn main() {
    evsd::cli::main();
}
