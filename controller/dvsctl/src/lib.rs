//! `dvsctl`: the operator's command line of the distributed virtual switch, a client of
//! `dvs-controller` (see `api::dvs` for the protocol).
//!
//! [`cli`] is the clap definition; [`ops`] turns a parsed command into a plan (a transaction,
//! a change of an object as read, or a read), pure and unit-tested; [`run`] carries the plan out
//! against a [`run::Controller`]; [`render`] prints the tables; [`exit`] has the exit codes.

#![forbid(unsafe_code)]

pub mod cli;
pub mod exit;
pub mod ops;
pub mod render;
pub mod run;

use clap::CommandFactory;
use exit::{Exit, Failure};
use ops::Plan;
use std::path::{Path, PathBuf};

/// The operator's token: `--token-file` / `$DVS_TOKEN_FILE`, else `$DVS_TOKEN`.
pub fn token(g: &cli::Global, env_token: Option<String>) -> Result<Option<String>, Failure> {
    let Some(path) = &g.token_file else {
        return Ok(env_token
            .filter(|t| !t.trim().is_empty())
            .map(|t| t.trim().to_owned()));
    };
    let text = std::fs::read_to_string(path).map_err(|e| {
        Failure::new(
            Exit::Auth,
            format!("--token-file: cannot read {}: {e}", path.display()),
        )
    })?;
    let t = text.trim();
    if t.is_empty() {
        return Err(Failure::new(
            Exit::Auth,
            format!("--token-file: {} is empty", path.display()),
        ));
    }
    Ok(Some(t.to_owned()))
}

fn check_url(url: &str) -> Result<(), Failure> {
    if url.starts_with("http://") || url.starts_with("https://") {
        Ok(())
    } else {
        Err(Failure::new(
            Exit::Usage,
            format!("--controller: {url:?} is not an http:// or https:// URL"),
        ))
    }
}

/// Writes a man page for `dvsctl` and one for every subcommand (`dvsctl-pg-add.1`) into `dir`.
pub fn man_pages(dir: &Path) -> Result<Vec<PathBuf>, Failure> {
    let fail = |e: std::io::Error| Failure::usage("man", "DIR", format!("{}: {e}", dir.display()));
    man_pages_of(cli::Cli::command(), dir).map_err(fail)
}

/// One man page for `cmd` and one for each of its subcommands, named by their full path
/// (`evsd-ctl-show.1`); also what `evs-docgen` writes for the package's other binaries.
pub fn man_pages_of(cmd: clap::Command, dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    fn walk(cmd: clap::Command, dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
        for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()).cloned() {
            walk(sub, dir, out)?;
        }
        out.push(clap_mangen::Man::new(cmd).generate_to(dir)?);
        Ok(())
    }
    std::fs::create_dir_all(dir)?;
    let mut cmd = cmd.disable_help_subcommand(true);
    cmd.build();
    let mut out = vec![];
    walk(cmd, dir, &mut out)?;
    out.sort();
    Ok(out)
}

/// The whole program after parsing.
/// The binary's `main`: parse the command line, run it, exit with the documented code.
pub fn main() {
    use clap::Parser;
    let cli = cli::Cli::parse();
    if let Err(f) = main_with(cli) {
        eprintln!("dvsctl: {f}");
        std::process::exit(f.exit.code());
    }
}

pub fn main_with(c: cli::Cli) -> Result<(), Failure> {
    let plan = ops::plan(&c.cmd)?;
    let stdout = std::io::stdout();
    let mut out = api::stdout::PipeSafe(stdout.lock());
    match plan {
        Plan::Completions(shell) => {
            clap_complete::generate(shell, &mut cli::Cli::command(), "dvsctl", &mut out);
            Ok(())
        }
        Plan::Man(dir) => {
            let pages = man_pages(&dir)?;
            if !c.global.json {
                use std::io::Write;
                let _ = writeln!(out, "wrote {} man pages to {}", pages.len(), dir.display());
            }
            Ok(())
        }
        plan => {
            check_url(&c.global.controller)?;
            let token = token(&c.global, std::env::var("DVS_TOKEN").ok())?;
            let client = match &c.global.ca_file {
                None => api::dvs::ControllerClient::new(&c.global.controller, token),
                Some(ca) => api::dvs::ControllerClient::with_ca(&c.global.controller, token, ca)
                    .map_err(|e| Failure::new(exit::Exit::Usage, format!("--ca-file: {e}")))?,
            };
            run::execute(&c.global, plan, &client, &mut out)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn global(args: &[&str]) -> cli::Global {
        let mut v = vec!["dvsctl"];
        v.extend_from_slice(args);
        v.push("status");
        cli::Cli::try_parse_from(v).unwrap().global
    }

    #[test]
    fn token_from_file_or_environment() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("t");
        std::fs::write(&f, "abc\n").unwrap();
        let g = global(&["--token-file", f.to_str().unwrap()]);
        // The file wins over $DVS_TOKEN.
        assert_eq!(token(&g, Some("env".into())).unwrap(), Some("abc".into()));
        std::fs::write(&f, "\n").unwrap();
        assert_eq!(token(&g, None).unwrap_err().exit, Exit::Auth);
        let missing = global(&["--token-file", "/nonexistent/t"]);
        assert_eq!(token(&missing, None).unwrap_err().exit, Exit::Auth);
        let none = global(&[]);
        assert_eq!(
            token(&none, Some(" env ".into())).unwrap(),
            Some("env".into())
        );
        assert_eq!(token(&none, Some("".into())).unwrap(), None);
    }

    #[test]
    fn controller_url_must_be_http() {
        assert!(check_url("https://ctl:9660").is_ok());
        assert_eq!(check_url("ctl:9660").unwrap_err().exit, Exit::Usage);
    }

    #[test]
    fn man_pages_one_per_subcommand() {
        let dir = tempfile::tempdir().unwrap();
        let pages = man_pages(dir.path()).unwrap();
        let names: Vec<String> = pages
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        for want in [
            "dvsctl.1",
            "dvsctl-pg.1",
            "dvsctl-pg-add.1",
            "dvsctl-sg-rule-del.1",
        ] {
            assert!(names.iter().any(|n| n == want), "{want} not in {names:?}");
        }
        assert!(!names.iter().any(|n| n.contains("help")), "{names:?}");
        let page = std::fs::read_to_string(dir.path().join("dvsctl-port-add.1")).unwrap();
        assert!(page.contains("mac"), "{page}");
        let top = std::fs::read_to_string(dir.path().join("dvsctl.1")).unwrap();
        assert!(
            top.contains("Exit codes"),
            "the exit codes are in the main page"
        );
    }

    #[test]
    fn completions_cover_nested_subcommands() {
        let mut out = vec![];
        clap_complete::generate(
            clap_complete::Shell::Bash,
            &mut cli::Cli::command(),
            "dvsctl",
            &mut out,
        );
        let s = String::from_utf8(out).unwrap();
        assert!(s.contains("rule-add") && s.contains("--may-exist"));
    }
}
