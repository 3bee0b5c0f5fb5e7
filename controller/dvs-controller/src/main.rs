//! `dvs-controller`: the DVS controller daemon (see the crate docs of `dvs_controller`).

#![forbid(unsafe_code)]

fn main() {
    dvs_controller::cli::main();
}
