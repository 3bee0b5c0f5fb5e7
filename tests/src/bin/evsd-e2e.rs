//! evsd, built inside the test crate so the tests can find it (see Cargo.toml).

fn main() {
    dataplane::cli::main();
}
