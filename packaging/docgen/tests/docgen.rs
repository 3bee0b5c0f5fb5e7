//! What the package ships as documentation: `evs-docgen` writes a man page for every command and
//! subcommand of the three binaries and their bash, zsh and fish completions. (This test also makes
//! `cargo test --workspace` build the `evs-docgen` binary, so `scripts/build-deb.sh --prebuilt`
//! can package the test build without a second cargo build.)

use std::path::Path;
use std::process::Command;

fn docgen(out: &Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_evs-docgen"))
        .arg(out)
        .output()
        .expect("run evs-docgen")
}

#[test]
fn writes_man_pages_and_completions_of_the_three_binaries() {
    let d = tempfile::tempdir().unwrap();
    let out = docgen(d.path());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let man = d.path().join("man/man1");
    for page in [
        "evsd.1",
        "evsd-run.1",
        "evsd-ctl.1",
        "dvs-controller.1",
        "dvsctl.1",
        "dvsctl-port.1",
        "dvsctl-port-add.1",
    ] {
        let text = std::fs::read_to_string(man.join(page))
            .unwrap_or_else(|e| panic!("man page {page}: {e}"));
        assert!(text.contains(".TH"), "{page} is not a man page:\n{text}");
    }
    // A flag documented in the page is one the binary parses.
    let create = std::fs::read_to_string(man.join("dvsctl-port-add.1")).unwrap();
    assert!(
        create.contains("\\-\\-mac"),
        "dvsctl port add documents --mac:\n{create}"
    );
    for (shell, file) in [
        ("bash", "dvsctl"),
        ("zsh", "_dvsctl"),
        ("fish", "dvsctl.fish"),
    ] {
        let p = d.path().join("completions").join(shell).join(file);
        let text = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        assert!(
            text.contains("port"),
            "{} completes subcommands:\n{text}",
            p.display()
        );
    }
}

#[test]
fn without_an_output_directory_it_says_how_to_call_it() {
    let out = Command::new(env!("CARGO_BIN_EXE_evs-docgen"))
        .output()
        .expect("run evs-docgen");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("usage: evs-docgen OUT_DIR"));
}
