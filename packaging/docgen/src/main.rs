//! `evs-docgen DIR`: writes the man pages (`DIR/man/man1/*.1`, one per command and subcommand,
//! as `git` ships them; the same writer as `dvsctl man`) and the bash, zsh and fish completions of the three
//! binaries. Generated from the same clap definitions the binaries parse, so a flag cannot be
//! documented differently from how it behaves.
#![forbid(unsafe_code)]

use clap::CommandFactory;
use clap_complete::Shell;
use std::path::Path;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, out] = args.as_slice() else {
        eprintln!("usage: evs-docgen OUT_DIR   (writes OUT_DIR/man/man1 and OUT_DIR/completions)");
        std::process::exit(2);
    };
    if let Err(e) = generate(Path::new(out)) {
        eprintln!("evs-docgen: {e}");
        std::process::exit(1);
    }
}

fn commands() -> Vec<clap::Command> {
    vec![
        evsd::cli::Cli::command(),
        dvs_controller::cli::Args::command().name("dvs-controller"),
        dvsctl::cli::Cli::command(),
    ]
}

fn generate(out: &Path) -> Result<(), String> {
    let man = out.join("man/man1");
    let comp = out.join("completions");
    for dir in [&man, &comp] {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    for cmd in commands() {
        dvsctl::man_pages_of(cmd.clone(), &man).map_err(|e| format!("{}: {e}", man.display()))?;
        let name = cmd.get_name().to_string();
        for (shell, file) in [
            (Shell::Bash, name.clone()),
            (Shell::Zsh, format!("_{name}")),
            (Shell::Fish, format!("{name}.fish")),
        ] {
            let dir = comp.join(shell.to_string());
            std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
            let mut f = create(&dir.join(file))?;
            clap_complete::generate(shell, &mut cmd.clone(), &name, &mut f);
        }
    }
    Ok(())
}

fn create(path: &Path) -> Result<std::fs::File, String> {
    std::fs::File::create(path).map_err(|e| format!("{}: {e}", path.display()))
}
