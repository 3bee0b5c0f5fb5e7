//! `evsd`: the EVS switch daemon and its control client.

#![forbid(unsafe_code)]

fn main() {
    evsd::cli::main();
}
