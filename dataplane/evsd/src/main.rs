//! `evsd`: the EVS switch daemon and its control client.

fn main() {
    evsd::cli::main();
}
