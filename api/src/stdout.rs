//! Standard output that may be a closed pipe (`evsd ctl metrics | head -1`): Rust ignores
//! SIGPIPE, so a write to a closed pipe is an error, and `println!` panics on it. Here it ends
//! the program quietly with the status a shell shows for a process killed by SIGPIPE, as a C
//! tool would end.

use std::io::{self, Write};

/// 128 + SIGPIPE (13): what `yes | head -1` reports for `yes`.
pub const BROKEN_PIPE_STATUS: i32 = 141;

/// A writer whose closed pipe ends the process (see the module); other errors are returned.
pub struct PipeSafe<W: Write>(pub W);

fn quiet_on_broken_pipe<T>(r: io::Result<T>) -> io::Result<T> {
    match r {
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => std::process::exit(BROKEN_PIPE_STATUS),
        r => r,
    }
}

impl<W: Write> Write for PipeSafe<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        quiet_on_broken_pipe(self.0.write(buf))
    }
    fn flush(&mut self) -> io::Result<()> {
        quiet_on_broken_pipe(self.0.flush())
    }
}

/// The process's stdout through [`PipeSafe`].
pub struct Stdout(PipeSafe<io::Stdout>);

impl Stdout {
    pub fn new() -> Stdout {
        Stdout(PipeSafe(io::stdout()))
    }

    /// Writes `text` and a newline, and flushes; a write that fails other than by a closed
    /// pipe (a full disk behind a redirection) ends the process with status 1 and says so.
    pub fn line(&mut self, text: &str) {
        let r = self
            .0
            .write_all(text.as_bytes())
            .and_then(|_| self.0.write_all(b"\n"))
            .and_then(|_| self.0.flush());
        if let Err(e) = r {
            eprintln!("error: cannot write to standard output: {e}");
            std::process::exit(1);
        }
    }
}

impl Default for Stdout {
    fn default() -> Self {
        Stdout::new()
    }
}

impl Write for Stdout {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}
