//! `dvsctl`: see the crate's README and `dvsctl --help`.

#![forbid(unsafe_code)]

fn main() {
    dvsctl::main();
}
