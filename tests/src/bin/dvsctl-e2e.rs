//! dvsctl, built inside the test crate so the tests can find it (see Cargo.toml).

#![forbid(unsafe_code)]

fn main() {
    dvsctl::main();
}
